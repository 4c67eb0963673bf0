/**
 * Cases for the AF_VSOCK stand-in fuzzer: guest processes talking to
 * `<guest-dir>/vsock.sock`. Scripts start from LISTEN <port> and
 * CONNECT <port> (a free port, one in use, the host's echo listener, a host
 * port nobody serves), mutated, with fds the server must refuse, partial and
 * over-long lines, several lines at once, floods and closes, while host
 * processes connect to the ports being listened on.
 */
import fc from 'fast-check';
import { mutated } from './support/mutate.js';
import { commonSteps, fdsArb, type Step, settleArb } from './support/script.js';
import { GuestPort, HOST_ECHO_PORT } from './support/vmm-target.js';

export interface StandinCase {
  clients: Step[][];
}

const text = (s: string) => Buffer.from(s, 'latin1');
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((u) => Buffer.from(u));

/** Ports a guest process may LISTEN on: a small shared range (so clients collide), ones in use, edges. */
const listenPort = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 7100, max: 7103 }) },
  { weight: 1, arbitrary: fc.constantFrom(GuestPort.ECHO, 0, 1023, 0xffff_ffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
);
/** Host ports a guest process may CONNECT to: the echo listener, nobody, edges. */
const connectPort = fc.oneof(
  { weight: 4, arbitrary: fc.constant(HOST_ECHO_PORT) },
  { weight: 1, arbitrary: fc.constantFrom(7002, 0, 0xffff_ffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
);

const requestLine = fc.oneof(
  listenPort.map((p) => text(`LISTEN ${p}\n`)),
  connectPort.map((p) => text(`CONNECT ${p}\n`)),
);

const step: fc.Arbitrary<Step> = fc.oneof(
  ...commonSteps(
    fc.oneof(bytes(48), mutated(requestLine)),
    fc.oneof(bytes(256), fc.constant(text('LISTEN 7100\n'))),
    512 * 1024,
  ),
  { weight: 3, arbitrary: fc.record({ op: fc.constant('host-connect' as const), port: listenPort }) },
);

const script = fc
  .tuple(
    // One or more request lines (a second line on the same socket must be ignored), maybe without an end.
    mutated(fc.array(requestLine, { minLength: 1, maxLength: 3 }).map((lines) => Buffer.concat(lines))),
    fdsArb,
    settleArb,
    fc.array(step, { maxLength: 5 }),
  )
  .map(([request, fds, settle, rest]): Step[] => [{ op: 'send', data: request, fds, settle }, ...rest]);

export const standinCaseArb: fc.Arbitrary<StandinCase> = fc.record({
  clients: fc.array(script, { minLength: 1, maxLength: 4 }),
});
