/**
 * Turns an agent fuzz case into bytes and reads them back as the agent will:
 * `buildConnection` resolves stream ids and stdio ports and encodes each
 * step (mutations included); `scanAsAgent` runs the agent's own framing over
 * the exact byte stream of a connection to learn which requests it will
 * dispatch, so the fuzzer can refuse to send a stream in which the agent
 * would find a command outside the safe list, remove every container the
 * case may have created, and check that each reply answers a stream id that
 * was really sent.
 */
import { create, type DescMessage, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  AGENT_SERVICE_NAME,
  agentMethods,
  CreateContainerRequestSchema,
  ExecProcessRequestSchema,
  type Process,
} from '../../../src/protocol/agent-api.js';
import {
  encodeFrame,
  encodeFrameHeader,
  GrpcCode,
  RequestSchema,
  ResponseSchema,
  TTRPC_HEADER_SIZE,
  TtrpcFrameDecoder,
  TtrpcMessageType,
  TtrpcProtocolError,
} from '../../../src/protocol/ttrpc.js';
import { type AgentStep, type PortRef, SAFE_COMMANDS, type StreamIdRule } from '../agent-ttrpc-cases.js';
import { applyMutation } from './mutate.js';

export type Action =
  /** `awaitId`: wait (bounded) for a response on this stream id before going on. */
  | { kind: 'send'; data: Buffer; settle: boolean; awaitId?: number }
  | { kind: 'stream-data'; stream: number; data: Buffer }
  | { kind: 'stream-close'; stream: number }
  | { kind: 'pause'; ms: number }
  | { kind: 'shutdown-write' }
  | { kind: 'close' };

/** Stream ids as a client numbers them ('next': the next odd id above every id used so far), or not. */
class StreamIds {
  private highest = -1;
  private last = 1;

  next(rule: StreamIdRule): number {
    let id: number;
    if (rule === 'next') id = Math.min(0xffff_ffff, this.highest + (this.highest % 2 === 0 ? 1 : 2));
    else if (rule === 'even') id = this.highest + (this.highest % 2 === 0 ? 2 : 1);
    else if (rule === 'repeat') id = this.last;
    else if (rule === 'zero') id = 0;
    else if (rule === 'max') id = 0xffff_ffff;
    else id = rule.value;
    id = Math.min(0xffff_ffff, Math.max(0, id));
    this.highest = Math.max(this.highest, id);
    this.last = id;
    return id;
  }
}

function resolvePort(ref: PortRef, streamPorts: readonly number[]): number {
  return 'fixed' in ref ? ref.fixed : (streamPorts[ref.stream] ?? 0);
}

function payloadBytes(
  step: Extract<AgentStep, { op: 'request' }>,
  streamPorts: readonly number[],
): Uint8Array {
  const p = step.payload;
  if (p.kind === 'junk') return p.bytes;
  if (p.kind === 'generic') return p.bytes;
  const [stdinPort, stdoutPort, stderrPort] = p.ports.map((r) => resolvePort(r, streamPorts));
  const schema = agentMethods[p.method].input as DescMessage;
  return toBinary(schema, create(schema, { ...p.init, stdinPort, stdoutPort, stderrPort }));
}

/** The actions of one connection, with every frame encoded. */
export function buildConnection(steps: readonly AgentStep[], streamPorts: readonly number[]): Action[] {
  const ids = new StreamIds();
  const out: Action[] = [];
  for (const step of steps) {
    switch (step.op) {
      case 'request': {
        const payload = step.payloadEdits.reduce(applyMutation, Buffer.from(payloadBytes(step, streamPorts)));
        const method = step.method || (step.payload.kind === 'junk' ? 'WaitProcess' : step.payload.method);
        const request = toBinary(
          RequestSchema,
          create(RequestSchema, {
            service: step.service,
            method,
            payload,
            timeoutNano: step.timeoutNano,
            metadata: step.metadata,
          }),
        );
        const id = ids.next(step.stream);
        const frame = encodeFrame(id, step.type, request, step.flags);
        const header = step.headerEdits.reduce(applyMutation, frame.subarray(0, TTRPC_HEADER_SIZE));
        out.push({
          kind: 'send',
          data: Buffer.concat([header, frame.subarray(TTRPC_HEADER_SIZE)]),
          settle: step.settle,
          ...(step.awaitReply ? { awaitId: id } : {}),
        });
        break;
      }
      case 'garbage':
        out.push({ kind: 'send', data: step.data, settle: true });
        break;
      case 'oversized': {
        const h = Buffer.alloc(TTRPC_HEADER_SIZE);
        h.writeUInt32BE(step.length, 0);
        h.writeUInt32BE(ids.next(step.stream), 4);
        h[8] = TtrpcMessageType.REQUEST;
        out.push({ kind: 'send', data: h, settle: true });
        break;
      }
      case 'big':
        out.push({
          kind: 'send',
          data: encodeFrame(ids.next(step.stream), TtrpcMessageType.REQUEST, Buffer.alloc(step.bytes, 0xee)),
          settle: true,
        });
        break;
      case 'partial':
        out.push({
          kind: 'send',
          data: Buffer.concat([
            encodeFrameHeader(step.declared, ids.next(step.stream), TtrpcMessageType.REQUEST),
            Buffer.alloc(step.sent, 0x0a),
          ]),
          settle: true,
        });
        break;
      case 'stream-data':
        out.push({ kind: 'stream-data', stream: step.stream, data: step.data });
        break;
      case 'stream-close':
        out.push({ kind: 'stream-close', stream: step.stream });
        break;
      case 'pause':
        out.push({ kind: 'pause', ms: step.ms });
        break;
      case 'shutdown-write':
        out.push({ kind: 'shutdown-write' });
        break;
      case 'close':
        out.push({ kind: 'close' });
        return out;
    }
  }
  return out;
}

export interface Scan {
  /** Stream ids of every frame the agent will read (replies may only name these). */
  streamIds: Set<number>;
  /** Container ids of every CreateContainer the agent will dispatch. */
  containerIds: Set<string>;
  /** Whether any request can start a process (CreateContainer or ExecProcess). */
  spawns: boolean;
  /** Why this stream must not be sent, if it must not. */
  unsafe: string | null;
  /** The agent answers RESOURCE_EXHAUSTED on this id before closing (an oversized header on an odd id). */
  oversizedId: number | null;
}

function unsafeProcess(p: Process | undefined): string | null {
  if (!p || p.Args.length === 0) return null;
  if (!SAFE_COMMANDS.has(p.Args[0]!)) return `would run ${JSON.stringify(p.Args[0])}`;
  const ld = p.Env.find((e) => e.includes('LD_'));
  return ld ? `would set ${JSON.stringify(ld)}` : null;
}

/** Reads the bytes a connection will carry with the agent's framing and request decoding. */
export function scanAsAgent(actions: readonly Action[]): Scan {
  const scan: Scan = {
    streamIds: new Set(),
    containerIds: new Set(),
    spawns: false,
    unsafe: null,
    oversizedId: null,
  };
  const decoder = new TtrpcFrameDecoder();
  for (const a of actions) {
    if (a.kind !== 'send') continue;
    let frames: ReturnType<TtrpcFrameDecoder['push']>;
    try {
      frames = decoder.push(a.data);
    } catch (err) {
      if (err instanceof TtrpcProtocolError && err.streamId !== undefined) scan.oversizedId = err.streamId;
      break; // the agent closes the connection here: nothing after it is read
    }
    for (const f of frames) {
      scan.streamIds.add(f.streamId);
      if (f.type !== TtrpcMessageType.REQUEST) continue;
      let req: ReturnType<typeof fromBinary<typeof RequestSchema>>;
      try {
        req = fromBinary(RequestSchema, f.payload);
      } catch {
        continue;
      }
      if (req.service !== AGENT_SERVICE_NAME) continue;
      try {
        if (req.method === 'CreateContainer') {
          const m = fromBinary(CreateContainerRequestSchema, req.payload);
          scan.containerIds.add(m.containerId);
          scan.spawns = true;
          scan.unsafe ??= unsafeProcess(m.OCI?.Process);
        } else if (req.method === 'ExecProcess') {
          const m = fromBinary(ExecProcessRequestSchema, req.payload);
          scan.spawns = true;
          scan.unsafe ??= unsafeProcess(m.process);
        }
      } catch {
        // The payload does not parse: the agent answers INVALID_ARGUMENT without running anything.
      }
    }
  }
  return scan;
}

/**
 * Checks what the agent sent on a connection (after the device's OK line):
 * whole frames are responses that decode, with a status code gRPC knows,
 * on stream ids that were sent. A cut last frame is fine (the case closed).
 */
export function assertAgentReplies(bytes: Buffer, scan: Scan): void {
  const decoder = new TtrpcFrameDecoder();
  for (const f of decoder.push(bytes)) {
    if (f.type !== TtrpcMessageType.RESPONSE) throw new Error(`agent sent a frame of type ${f.type}`);
    if (!scan.streamIds.has(f.streamId) && f.streamId !== scan.oversizedId) {
      throw new Error(`agent answered stream ${f.streamId}, which no frame named`);
    }
    const res = fromBinary(ResponseSchema, f.payload);
    const code = res.status?.code ?? GrpcCode.OK;
    if (!Number.isInteger(code) || code < 0 || code > 16)
      throw new Error(`agent answered status code ${code}`);
  }
}

/** Whether the whole frames in `bytes` include a response on stream `id`. */
export function hasReply(bytes: Buffer, id: number): boolean {
  try {
    return new TtrpcFrameDecoder().push(bytes).some((f) => f.streamId === id);
  } catch {
    return false;
  }
}
