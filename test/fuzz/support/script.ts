/**
 * A client script, as the socket fuzzers generate it, and its interpreter:
 * sendmsg of (mutated) bytes with fds of any kind, pauses, floods,
 * half-close, abrupt close, and a host process connecting to a guest port
 * through the hybrid-vsock socket meanwhile (so a guest listener gets
 * connections while its control socket is being fuzzed).
 */
import fc from 'fast-check';
import { FD_KINDS, type FdKindName, type FdZoo } from './fd-kinds.js';
import { RawClient } from './raw-client.js';

export type Step =
  /** One sendmsg; `settle`: wait until the server has read it before the next step (else sends may coalesce). */
  | { op: 'send'; data: Buffer; fds: FdKindName[]; settle: boolean }
  | { op: 'pause'; ms: number }
  | { op: 'flood'; data: Buffer; bytes: number }
  | { op: 'shutdown-write' }
  | { op: 'close' }
  /** A host process sends `CONNECT <port>\n` on the hybrid-vsock socket (kept open until the case ends). */
  | { op: 'host-connect'; port: number };

export interface ScriptContext {
  zoo: FdZoo;
  hvsock: string;
  /** Every client opened for the case (closed by the caller when the case ends). */
  clients: RawClient[];
}

export const settleArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(true) },
  { weight: 1, arbitrary: fc.constant(false) },
);

const fdKindArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<FdKindName>('pipe-read', 'pipe-write', 'socketpair', 'fifo') },
  { weight: 4, arbitrary: fc.constantFrom(...FD_KINDS) },
);

export { fdKindArb };

/** Mostly no fd, often one, sometimes two. */
export const fdsArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant([] as FdKindName[]) },
  { weight: 3, arbitrary: fdKindArb.map((k) => [k]) },
  { weight: 1, arbitrary: fc.tuple(fdKindArb, fdKindArb).map(([a, b]) => [a, b]) },
);

/**
 * The steps every client script may take besides its protocol's own: send
 * `data` (with fds), pause, flood with `floodData` up to `maxFlood` bytes,
 * half-close, close. Weighted alternatives, to add to with fc.oneof.
 */
export function commonSteps(
  data: fc.Arbitrary<Buffer>,
  floodData: fc.Arbitrary<Buffer>,
  maxFlood: number,
): fc.WeightedArbitrary<Step>[] {
  return [
    {
      weight: 4,
      arbitrary: fc.record({ op: fc.constant('send' as const), data, fds: fdsArb, settle: settleArb }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant('pause' as const), ms: fc.integer({ min: 0, max: 30 }) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('flood' as const),
        data: floodData,
        bytes: fc.integer({ min: 1, max: maxFlood }),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ op: 'shutdown-write' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'close' as const }) },
  ];
}

export function openClient(ctx: ScriptContext, socketPath: string): RawClient {
  const c = new RawClient(socketPath);
  ctx.clients.push(c);
  return c;
}

export async function runScript(steps: Step[], client: RawClient, ctx: ScriptContext): Promise<void> {
  for (const step of steps) {
    switch (step.op) {
      case 'send':
        client.send(
          step.data,
          step.fds.map((k) => ctx.zoo.make(k)),
        );
        if (step.settle) await client.settled();
        break;
      case 'pause':
        await client.waitFor(() => false, step.ms);
        break;
      case 'flood':
        client.flood(step.data, step.bytes);
        break;
      case 'shutdown-write':
        client.shutdownWrite();
        break;
      case 'close':
        client.close();
        return;
      case 'host-connect':
        openClient(ctx, ctx.hvsock).send(Buffer.from(`CONNECT ${step.port}\n`));
        break;
    }
    client.drain();
  }
}
