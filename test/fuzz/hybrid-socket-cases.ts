/**
 * Cases for the hybrid-vsock socket fuzzer: what a few clients at once (and
 * sometimes a crowd) send to the device's Unix socket. Each client follows a
 * script of steps: one sendmsg of (possibly mutated) protocol bytes with
 * 0, 1 or 2 fds of any kind, a pause, a flood, a half-close, an abrupt close.
 * Scripts start from what real clients send (CONNECT <port>, Kata's passfd
 * sequence, with or without keep) so mutations reach every state of the
 * device's command handling and the connections behind it.
 */
import fc from 'fast-check';
import { type FdKindName, POLLABLE_KINDS } from './support/fd-kinds.js';
import { mutated } from './support/mutate.js';
import { commonSteps, fdKindArb, fdsArb, type Step, settleArb } from './support/script.js';
import { GuestPort, NOBODY_PORT } from './support/vmm-target.js';

export interface HybridCase {
  clients: Step[][];
  /** Many clients at once, each sending `data` (a partial or whole line), all closed at the end. */
  crowd: { clients: number; data: Buffer } | null;
}

const portArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(GuestPort.ECHO, GuestPort.SINK, GuestPort.CLOSE, GuestPort.STALL) },
  { weight: 1, arbitrary: fc.constantFrom(NOBODY_PORT, 0, 1, 1023, 1024, 0xffff_ffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
);

const text = (s: string) => Buffer.from(s, 'latin1');
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((u) => Buffer.from(u));

/** Bytes a client might send after its command: stream data, protocol words, noise. */
const dataArb = fc.oneof(
  bytes(64),
  mutated(
    fc.constantFrom(text('CONNECT 5001\n'), text('passfd\n'), text('5001 keep'), text('OK 1073741824\n')),
  ),
);

const streamStep: fc.Arbitrary<Step> = fc.oneof(
  ...commonSteps(dataArb, fc.oneof(bytes(512), fc.constant(text('CONNECT 5001\n'))), 2 * 1024 * 1024),
);
const tail = fc.array(streamStep, { maxLength: 4 });

// Templates are built with map (never chain), so fast-check can shrink every part of a failing case.
const connectScript = fc
  .tuple(
    mutated(
      fc
        .tuple(portArb, fc.option(bytes(24), { nil: undefined }))
        .map(([port, early]) => Buffer.concat([text(`CONNECT ${port}\n`), early ?? Buffer.alloc(0)])),
    ),
    settleArb,
    tail,
  )
  .map(([line, settle, rest]): Step[] => [{ op: 'send', data: line, fds: [], settle }, ...rest]);

const passfdScript = fc
  .tuple(
    mutated(fc.constant(text('passfd\n')), 2),
    mutated(
      fc.tuple(portArb, fc.boolean()).map(([port, keep]) => text(`${port}${keep ? ' keep' : ''}`)),
      2,
    ),
    fc.boolean(),
    fdsArb,
    fdKindArb,
    settleArb,
    tail,
  )
  .map(([cmd, payload, together, fds, kind, settle, rest]): Step[] => {
    const withFd = fds.length > 0 ? fds : [kind];
    // Kata sends the command, then the payload with the fd; some clients put both in one sendmsg.
    const first: Step[] = together
      ? [{ op: 'send', data: Buffer.concat([cmd, payload]), fds: withFd, settle }]
      : [
          { op: 'send', data: cmd, fds: [], settle },
          { op: 'send', data: payload, fds: withFd, settle },
        ];
    return [...first, ...rest];
  });

const randomScript = fc.array(
  fc.oneof(
    streamStep,
    fc.record({ op: fc.constant('send' as const), data: bytes(48), fds: fdsArb, settle: settleArb }),
  ),
  { minLength: 1, maxLength: 5 },
);

const clientScript = fc.oneof(
  { weight: 3, arbitrary: connectScript },
  { weight: 3, arbitrary: passfdScript },
  { weight: 1, arbitrary: randomScript },
);

export const hybridCaseArb: fc.Arbitrary<HybridCase> = fc.record({
  clients: fc.array(clientScript, { minLength: 1, maxLength: 3 }),
  crowd: fc.option(
    fc.record({
      clients: fc.integer({ min: 2, max: 48 }),
      data: mutated(
        fc.constantFrom(text('passfd'), text('CONNECT 50'), text('CONNECT 5001\n'), text('passfd\n')),
      ),
    }),
    { freq: 6 },
  ),
});

const LISTENED = new Set<number>(Object.values(GuestPort));
const PORT = /^(?:0|[1-9][0-9]{0,9})$/;

/**
 * What the device must answer a client whose script begins with a
 * well-formed request, by the protocol's rules: OK for CONNECT or passfd
 * (one pollable fd) to a port a guest listens on; a close without OK for a
 * well-formed passfd that cannot be served (nobody listening, an fd epoll
 * cannot watch, two fds). Null when the script is not one of these shapes
 * (mutated, or closed before it could hear the answer).
 */
export function expectedAnswer(steps: Step[]): 'ok' | 'refused' | null {
  if (steps.some((s) => s.op === 'close')) return null;
  const [first, second] = steps;
  if (first?.op !== 'send') return null;
  const line = first.data.toString('latin1');
  const connect = /^CONNECT (\d+)\n/.exec(line);
  if (connect && PORT.test(connect[1]!) && first.fds.length === 0) {
    // An fd sent on the stream right after the command may be read together with it (then the device
    // refuses "an fd with CONNECT") or after it (then the kernel drops it): no expectation then.
    const laterFds = steps.some((s) => s.op === 'send' && s.fds.length > 0);
    return LISTENED.has(Number(connect[1])) && !laterFds ? 'ok' : null;
  }
  let payload: string;
  let fds: FdKindName[];
  if (line === 'passfd\n' && first.fds.length === 0 && second?.op === 'send') {
    payload = second.data.toString('latin1');
    fds = second.fds;
  } else if (line.startsWith('passfd\n')) {
    payload = line.slice(7);
    fds = first.fds;
  } else return null;
  const m = /^(\d+)( keep)?$/.exec(payload);
  if (!m || !PORT.test(m[1]!) || Number(m[1]) > 0xffff_ffff || fds.length === 0) return null;
  if (fds.length === 2) return 'refused';
  return LISTENED.has(Number(m[1])) && POLLABLE_KINDS.has(fds[0]!) ? 'ok' : 'refused';
}
