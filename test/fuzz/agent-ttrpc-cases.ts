/**
 * Cases for the agent fuzzer: ttrpc connections to the agent (CONNECT 1024
 * on the hybrid-vsock socket) carrying requests of every AgentService method
 * (and unknown services and methods), built from valid messages and then
 * mutated, with odd, even, repeated, zero and maximal stream ids, frame types
 * and flags, deadlines and metadata; plus raw garbage, oversized and
 * truncated frames, large payloads, pauses, half-closes and closes mid-frame.
 * A case may first open passfd-style streams to the agent (CONNECT 1027) and
 * name them as a process's stdio, feed them, or close them.
 *
 * Requests only ever name /bin/true, /bin/false, /bin/cat, /bin/echo and
 * /bin/sleep (the agent runs as root here); the runner checks the whole
 * byte stream of a connection before sending it (see agent.fuzz.test.ts).
 */
import { type DescMessage, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { type AgentMethodName, agentMethods } from '../../src/protocol/agent-api.js';
import { messageArb } from '../support/proto-arbitrary.js';
import { type Mutation, mutationArb } from './support/mutate.js';

/** A stream id rule, resolved against the connection's counter when the case runs. */
export type StreamIdRule = 'next' | 'even' | 'repeat' | 'zero' | 'max' | { value: number };
/** A stdio port: 0 or a fixed (bogus) value, or the host port of the case's k-th stream. */
export type PortRef = { fixed: number } | { stream: number };

export type Payload =
  /** A message of `method`'s input type from hand-picked useful values (ports resolved at run time). */
  | {
      kind: 'typed';
      method: AgentMethodName;
      init: Record<string, unknown>;
      ports: [PortRef, PortRef, PortRef];
    }
  /** Any message of that type, every field arbitrary (requests that would run something else are not sent). */
  | { kind: 'generic'; method: AgentMethodName; bytes: Uint8Array }
  | { kind: 'junk'; bytes: Buffer };

export type AgentStep =
  | {
      op: 'request';
      stream: StreamIdRule;
      /** Frame type (1 = request; others are protocol noise) and flags. */
      type: number;
      flags: number;
      service: string;
      method: string;
      payload: Payload;
      payloadEdits: Mutation[];
      /** Edits of the 10-byte frame header (length, stream id, type, flags). */
      headerEdits: Mutation[];
      timeoutNano: bigint;
      metadata: { key: string; value: string }[];
      settle: boolean;
      /** Wait (bounded) for the reply before the next step, as a runtime does between Create and Start. */
      awaitReply: boolean;
    }
  | { op: 'garbage'; data: Buffer }
  /** A header declaring more than 4 MiB (the agent answers RESOURCE_EXHAUSTED and closes). */
  | { op: 'oversized'; stream: StreamIdRule; length: number }
  /** A frame of `bytes` (up to 4 MiB) of junk: a Request that does not parse. */
  | { op: 'big'; stream: StreamIdRule; bytes: number }
  /** A header declaring `declared` bytes followed by only `sent` of them. */
  | { op: 'partial'; stream: StreamIdRule; declared: number; sent: number }
  | { op: 'stream-data'; stream: number; data: Buffer }
  | { op: 'stream-close'; stream: number }
  | { op: 'pause'; ms: number }
  | { op: 'shutdown-write' }
  | { op: 'close' };

export interface AgentCase {
  /** Passfd-style streams (CONNECT 1027) opened before the requests. */
  streams: number;
  conns: AgentStep[][];
}

export const SAFE_COMMANDS = new Set(['/bin/true', '/bin/false', '/bin/cat', '/bin/echo', '/bin/sleep']);
export const CONTAINER_IDS = ['fz0', 'fz1', 'fz2'];
const METHODS = Object.keys(agentMethods) as AgentMethodName[];

const junk = (max: number) => fc.uint8Array({ maxLength: max }).map((u) => Buffer.from(u));
const u32 = fc.nat({ max: 0xffff_ffff });
const containerId = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...CONTAINER_IDS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);
const execId = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('', 'x1', 'x2') },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
);
const portRef: fc.Arbitrary<PortRef> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ fixed: 0 }) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3 }).map((stream) => ({ stream })) },
  {
    weight: 1,
    arbitrary: fc
      .oneof(u32, fc.constantFrom(1, 2 ** 30, 2 ** 31 - 1, 0xffff_ffff))
      .map((fixed) => ({ fixed })),
  },
);
const safeArgs = fc.oneof(
  fc.constant(['/bin/true']),
  fc.constant(['/bin/false']),
  fc.constant(['/bin/cat']),
  fc.string({ maxLength: 20 }).map((s) => ['/bin/echo', s]),
  fc.constantFrom('0', '0.05', '0.3', '5', 'x').map((t) => ['/bin/sleep', t]),
);
const processInit = fc.record(
  {
    Args: safeArgs,
    Env: fc.array(fc.constantFrom('A=1', 'PATH=/usr/bin:/bin', 'TERM=dumb', 'NOEQUALS', '=x', ''), {
      maxLength: 3,
    }),
    Cwd: fc.constantFrom('', '/', '/tmp', '/nonexistent', 'relative'),
    Terminal: fc.oneof(
      { weight: 4, arbitrary: fc.constant(false) },
      { weight: 1, arbitrary: fc.constant(true) },
    ),
    ConsoleSize: fc.record({ Height: fc.nat({ max: 300 }), Width: fc.nat({ max: 300 }) }),
  },
  { requiredKeys: ['Args'] },
);

/** Useful values for each method's request (port fields come from `ports`). */
const typedInit: Record<AgentMethodName, fc.Arbitrary<Record<string, unknown>>> = {
  CreateContainer: fc.record({ containerId, OCI: fc.record({ Process: processInit }) }),
  StartContainer: fc.record({ containerId }),
  RemoveContainer: fc.record({ containerId }),
  ExecProcess: fc.record({ containerId, execId, process: processInit }),
  SignalProcess: fc.record({ containerId, execId, signal: fc.oneof(fc.integer({ min: 0, max: 70 }), u32) }),
  WaitProcess: fc.record({ containerId, execId }),
  StatsContainer: fc.record({ containerId }),
  WriteStdin: fc.record({
    containerId,
    execId,
    data: fc.oneof(
      junk(64),
      fc.integer({ min: 0, max: 256 * 1024 }).map((n) => Buffer.alloc(n, 0x61)),
    ),
  }),
  ReadStdout: fc.record({ containerId, execId, len: fc.oneof(fc.nat({ max: 4096 }), u32) }),
  ReadStderr: fc.record({ containerId, execId, len: fc.oneof(fc.nat({ max: 4096 }), u32) }),
  CloseStdin: fc.record({ containerId, execId }),
  TtyWinResize: fc.record({ containerId, execId, row: fc.oneof(fc.nat({ max: 500 }), u32), column: u32 }),
};

// One arbitrary per method joined with oneof (not chain), so fast-check can shrink inside a failing request.
const typedPayload: fc.Arbitrary<Payload> = fc.oneof(
  ...METHODS.map((method) =>
    fc
      .tuple(typedInit[method], portRef, portRef, portRef)
      .map(([init, a, b, c]): Payload => ({ kind: 'typed', method, init, ports: [a, b, c] })),
  ),
);
const genericPayload: fc.Arbitrary<Payload> = fc.oneof(
  ...METHODS.map((method) => {
    const schema = agentMethods[method].input as DescMessage;
    return messageArb(schema, { maxDepth: 3, maxItems: 2 }).map(
      (msg): Payload => ({ kind: 'generic', method, bytes: toBinary(schema, msg) }),
    );
  }),
);

/** `usual`, except once in `oneIn` draws something from `odd`. */
function rarely<T>(usual: T, odd: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T> {
  return fc.oneof({ weight: oneIn - 1, arbitrary: fc.constant(usual) }, { weight: 1, arbitrary: odd });
}

const nextId: fc.Arbitrary<StreamIdRule> = rarely<StreamIdRule>('next', fc.constant('max'), 4);

/** An odd stream id rule: each ends the orderly sequence the agent requires (ids must increase). */
const oddStreamRule: fc.Arbitrary<StreamIdRule> = fc.oneof(
  fc.constantFrom('even' as const, 'repeat' as const, 'zero' as const, 'max' as const),
  u32.map((value) => ({ value })),
);

/**
 * A request step carrying `payload`; its envelope and frame are valid except,
 * each once in `oneIn`, a bad stream id, frame type or flags, service or
 * method name, payload bytes, header bytes, deadline or metadata.
 */
function requestStep(
  payload: fc.Arbitrary<Payload>,
  awaitReply: fc.Arbitrary<boolean>,
  oneIn: number,
): fc.Arbitrary<AgentStep> {
  return fc.record({
    awaitReply,
    op: fc.constant('request' as const),
    stream: rarely<StreamIdRule>('next', oddStreamRule, oneIn),
    type: rarely(1, fc.integer({ min: 0, max: 255 }), oneIn),
    flags: rarely(0, fc.integer({ min: 0, max: 255 }), oneIn),
    service: rarely(
      'grpc.AgentService',
      fc.constantFrom('', 'grpc.AgentServic', 'containerd.task.v2.Task', 'grpc.AgentService\0'),
      oneIn,
    ),
    // Empty: the payload's method (see the runner).
    method: rarely('', fc.constantFrom('ExecProces', 'execprocess', 'ListProcesses', 'Check'), oneIn),
    payload,
    payloadEdits: rarely(
      [] as Mutation[],
      fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
      Math.ceil(oneIn / 3),
    ),
    // A bad length in a header ends the connection: rarer still, so that most cases get deep.
    headerEdits: rarely([] as Mutation[], fc.array(mutationArb, { minLength: 1, maxLength: 2 }), oneIn * 3),
    timeoutNano: rarely(
      0n,
      fc.oneof(
        fc.bigInt({ min: 1n, max: 200_000_000n }),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      ),
      Math.ceil(oneIn / 3),
    ),
    metadata: fc.array(fc.record({ key: fc.string({ maxLength: 8 }), value: fc.string({ maxLength: 8 }) }), {
      maxLength: 2,
    }),
    settle: rarely(true, fc.constant(false), 4),
  });
}

/** Requests a runtime waits on before its next one; WaitProcess and the reads may block for long. */
const AWAITED = new Set<AgentMethodName>([
  'CreateContainer',
  'StartContainer',
  'ExecProcess',
  'RemoveContainer',
]);

/** Only requests that answer promptly are awaited: WaitProcess and the reads may block for long. */
function awaitOnlyPrompt(step: AgentStep): AgentStep {
  if (step.op !== 'request' || !step.awaitReply || step.payload.kind === 'junk') return step;
  return AWAITED.has(step.payload.method) ? step : { ...step, awaitReply: false };
}

const anyRequest = requestStep(
  fc.oneof(
    { weight: 8, arbitrary: typedPayload },
    { weight: 2, arbitrary: genericPayload },
    { weight: 1, arbitrary: junk(64).map((bytes): Payload => ({ kind: 'junk', bytes })) },
  ),
  rarely(false, fc.constant(true), 3),
  12,
).map(awaitOnlyPrompt);

/** A typed request of `method` for container `id` (ports from the case's streams, 0, or bogus). */
function requestOn(method: AgentMethodName, id: string): fc.Arbitrary<AgentStep> {
  return requestStep(
    fc.tuple(typedInit[method], portRef, portRef, portRef).map(
      ([init, a, b, c]): Payload => ({
        kind: 'typed',
        method,
        init: { ...init, containerId: id },
        ports: [a, b, c],
      }),
    ),
    // Most of the time in order, as a runtime waits for each reply; sometimes all at once.
    AWAITED.has(method) ? rarely(true, fc.constant(false), 5) : fc.constant(false),
    40,
  );
}

const MIDDLE: AgentMethodName[] = [
  'WriteStdin',
  'ReadStdout',
  'ReadStderr',
  'CloseStdin',
  'SignalProcess',
  'TtyWinResize',
  'ExecProcess',
  'WaitProcess',
  'StartContainer',
];

/**
 * A container's life as a runtime drives it (CreateContainer, StartContainer,
 * then IO, signals, resizes, execs and waits on it, sometimes RemoveContainer),
 * each request open to the same mutations as any other, with other steps mixed in.
 */
const lifecycle: fc.Arbitrary<AgentStep[]> = fc
  .constantFrom(...CONTAINER_IDS)
  .chain((id) =>
    fc
      .tuple(
        requestOn('CreateContainer', id),
        requestOn('StartContainer', id),
        fc.array(fc.oneof(...MIDDLE.map((m) => requestOn(m, id))), { maxLength: 6 }),
        requestOn('WaitProcess', id),
        fc.option(requestOn('RemoveContainer', id), { nil: undefined }),
      )
      .map(([create, start, middle, wait, remove]) => [
        create,
        start,
        ...middle,
        wait,
        ...(remove ? [remove] : []),
      ]),
  );

/** Steps that usually end the connection (the agent closes it, or cannot find the next frame). */
const frameBreaker: fc.Arbitrary<AgentStep> = fc.oneof(
  fc.record({ op: fc.constant('garbage' as const), data: junk(64) }),
  fc.record({
    op: fc.constant('oversized' as const),
    stream: nextId,
    length: fc.integer({ min: (4 << 20) + 1, max: 0xffff_ffff }),
  }),
  fc.record({
    op: fc.constant('big' as const),
    stream: nextId,
    bytes: fc.integer({ min: 1, max: 4 << 20 }),
  }),
  fc.record({
    op: fc.constant('partial' as const),
    stream: nextId,
    declared: fc.integer({ min: 1, max: 4096 }),
    sent: fc.nat({ max: 4096 }),
  }),
);

const step: fc.Arbitrary<AgentStep> = fc.oneof(
  { weight: 30, arbitrary: anyRequest },
  { weight: 3, arbitrary: frameBreaker },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('stream-data' as const),
      stream: fc.integer({ min: 0, max: 3 }),
      data: junk(128),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('stream-close' as const),
      stream: fc.integer({ min: 0, max: 3 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('pause' as const), ms: fc.integer({ min: 0, max: 40 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'shutdown-write' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'close' as const }) },
);

/** A connection: random steps, or a container's lifecycle with random steps around it. */
const connection: fc.Arbitrary<AgentStep[]> = fc.oneof(
  fc.array(step, { minLength: 1, maxLength: 8 }),
  fc
    .tuple(fc.array(step, { maxLength: 2 }), lifecycle, fc.array(step, { maxLength: 3 }))
    .map(([before, life, after]) => [...before, ...life, ...after]),
);

export const agentCaseArb: fc.Arbitrary<AgentCase> = fc.record({
  streams: fc.integer({ min: 0, max: 3 }),
  conns: fc.array(connection, { minLength: 1, maxLength: 2 }),
});
