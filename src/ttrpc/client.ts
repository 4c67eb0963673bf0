// ttrpc client: unary calls over any byte stream, wire-compatible with
// containerd/ttrpc (Go) and ttrpc-rust servers, e.g. the Kata agent.
//
// What: each call takes the next client stream id (odd, starting at 1, +2 per
// call, as Go's and Rust's clients do), writes one request frame (type 1)
// carrying ttrpc.Request{service, method, payload, timeout_nano, metadata},
// and resolves with the payload of the response frame (type 2) that comes
// back on that stream id. Any number of calls may be outstanding; responses
// are matched by stream id, in whatever order they arrive.
//
// Why: the broker drives the agent (ExecProcess, WaitProcess, CloseStdin, the
// RPC-copy calls) over one connection on guest port 1024, with WaitProcess
// pending while other calls come and go.
//
// Outcomes of a call:
// - status OK (or absent, which Go's client also treats as OK) → payload;
// - another status → TtrpcError{code, codeName, message} from the server;
// - `timeoutMs` elapsed → TtrpcError DEADLINE_EXCEEDED locally. The same
//   deadline travels in timeout_nano, so the server gives up too;
// - `signal` aborted → TtrpcError CANCELLED locally (ttrpc has no cancel
//   frame for unary calls: the server still runs the request, its late
//   response is discarded);
// - connection closed, by either side or by an error, or the peer's EOF (no
//   response can arrive any more) → TtrpcClosedError "ttrpc connection
//   closed" for every pending and every later call;
// - a request over 4 MiB → TtrpcError RESOURCE_EXHAUSTED before anything is
//   sent (the server would refuse and drop the connection).
//
// Writes are not held back on backpressure: each request's bytes already
// exist when call() is invoked, so Node's write buffer holds no more than the
// caller has in memory anyway; the caller bounds its own concurrency.

import type { Duplex } from 'node:stream';
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import {
  encodeFrameHeader,
  GrpcCode,
  RequestSchema,
  type Response,
  ResponseSchema,
  TTRPC_MAX_PAYLOAD,
  type TtrpcFrame,
  TtrpcFrameDecoder,
  TtrpcMessageType,
} from '../protocol/ttrpc.js';
import { createLogger, type Logger } from '../util/log.js';
import {
  CANCELLED_MESSAGE,
  DEADLINE_EXCEEDED_MESSAGE,
  metadataToKeyValues,
  oversizedMessage,
  type TtrpcMetadataInit,
  type TtrpcMethod,
} from './common.js';
import { TtrpcClosedError, TtrpcError } from './errors.js';

export interface TtrpcCallOptions {
  /**
   * Deadline for the call in milliseconds, sent as timeout_nano and enforced
   * locally. Must be > 0; omit for no deadline.
   */
  timeoutMs?: number;
  /** Request metadata (keys are lowercased, as Go's MD does). */
  metadata?: TtrpcMetadataInit;
  /** Abandon the call (rejects with CANCELLED). */
  signal?: AbortSignal;
}

export interface TtrpcClientOptions {
  logger?: Logger;
}

interface Pending {
  resolve(payload: Uint8Array): void;
  reject(err: Error): void;
}

/** Largest stream id: u32. Go's client would wrap around; this one stops. */
const MAX_STREAM_ID = 0xffff_ffff;

export class TtrpcClient {
  private readonly decoder = new TtrpcFrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly log: Logger;
  private nextStreamId = 1;
  private closedError: TtrpcClosedError | undefined;
  /** Last socket or protocol error, reported as the closed error's cause. */
  private lastError: Error | undefined;
  private readonly streamClosed: Promise<void>;

  constructor(
    private readonly stream: Duplex,
    options: TtrpcClientOptions = {},
  ) {
    this.log = options.logger ?? createLogger('ttrpc-client');
    this.streamClosed = new Promise((resolve) => {
      stream.once('close', () => {
        this.fail();
        resolve();
      });
    });
    stream.on('data', (chunk: Buffer | string) =>
      this.onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk),
    );
    stream.on('end', () => {
      // The server will send nothing more: pending calls cannot complete.
      this.fail();
      stream.destroy();
    });
    stream.on('error', (err) => {
      this.lastError = err;
      this.log.debug(`connection error: ${err.message}`);
    });
    if (stream.destroyed) this.fail();
  }

  /** True once the connection is gone (calls reject with TtrpcClosedError). */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Calls sent and not yet answered. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /**
   * One unary call with a serialized request message; resolves with the
   * serialized response message.
   */
  call(
    service: string,
    method: string,
    payload: Uint8Array,
    opts: TtrpcCallOptions = {},
  ): Promise<Uint8Array> {
    if (this.closedError) return Promise.reject(this.closedError);
    const { timeoutMs, signal } = opts;
    if (timeoutMs !== undefined && !(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
      return Promise.reject(
        new RangeError(`ttrpc: timeoutMs must be a positive finite number, got ${timeoutMs}`),
      );
    }
    if (signal?.aborted) {
      return Promise.reject(new TtrpcError(GrpcCode.CANCELLED, CANCELLED_MESSAGE, { cause: signal.reason }));
    }

    let body: Uint8Array;
    try {
      body = toBinary(
        RequestSchema,
        create(RequestSchema, {
          service,
          method,
          payload,
          // Whole nanoseconds; Go's client sends time.Until(deadline).
          timeoutNano: timeoutMs === undefined ? 0n : BigInt(Math.ceil(timeoutMs * 1e6)),
          metadata: metadataToKeyValues(opts.metadata),
        }),
      );
    } catch (err) {
      return Promise.reject(err);
    }
    if (body.length > TTRPC_MAX_PAYLOAD) {
      return Promise.reject(new TtrpcError(GrpcCode.RESOURCE_EXHAUSTED, oversizedMessage(body.length)));
    }
    if (this.nextStreamId > MAX_STREAM_ID) {
      // A server rejects reused ids; a fresh connection starts over at 1.
      return Promise.reject(new TtrpcError(GrpcCode.RESOURCE_EXHAUSTED, 'ttrpc: stream ids exhausted'));
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;

    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () =>
        done(new TtrpcError(GrpcCode.CANCELLED, CANCELLED_MESSAGE, { cause: signal?.reason }));
      const done = (result: Uint8Array | Error) => {
        this.pending.delete(id);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      this.pending.set(id, { resolve: done, reject: done });
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => done(new TtrpcError(GrpcCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_MESSAGE)),
          timeoutMs,
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });

      // Header and body as two corked writes: no copy of a multi-MiB body.
      const s = this.stream;
      s.cork();
      s.write(encodeFrameHeader(body.length, id, TtrpcMessageType.REQUEST));
      s.write(body);
      s.uncork();
    });
  }

  /**
   * A call typed by the method's schemas, e.g.
   * `client.callTyped(agentMethods.WaitProcess, { containerId, execId })`.
   * A response payload that does not parse as `method.output` rejects with
   * INTERNAL.
   */
  async callTyped<I extends DescMessage, O extends DescMessage>(
    method: TtrpcMethod<I, O>,
    request: MessageInitShape<I>,
    opts?: TtrpcCallOptions,
  ): Promise<MessageShape<O>> {
    const payload = toBinary(method.input, create(method.input, request));
    const reply = await this.call(method.service, method.name, payload, opts);
    try {
      return fromBinary(method.output, reply);
    } catch (err) {
      throw new TtrpcError(
        GrpcCode.INTERNAL,
        `ttrpc: error unmarshalling payload: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /**
   * Close the connection now: pending calls reject with TtrpcClosedError.
   * Resolves when the stream has closed.
   */
  close(): Promise<void> {
    this.fail();
    this.stream.destroy();
    return this.streamClosed;
  }

  private onData(chunk: Buffer): void {
    if (this.closedError) return;
    let frames: TtrpcFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.log.warn(`${(err as Error).message}; closing the connection`);
      this.lastError = err as Error;
      this.fail();
      this.stream.destroy();
      return;
    }
    for (const frame of frames) this.onFrame(frame);
  }

  private onFrame(frame: TtrpcFrame): void {
    if (frame.type !== TtrpcMessageType.RESPONSE) {
      this.log.debug(`ignoring frame of type ${frame.type} on stream ${frame.streamId}`);
      return;
    }
    const call = this.pending.get(frame.streamId);
    if (!call) {
      // Normal after a local timeout or cancellation.
      this.log.debug(`response for stream ${frame.streamId}, which has no pending call`);
      return;
    }
    let response: Response;
    try {
      response = fromBinary(ResponseSchema, frame.payload);
    } catch (err) {
      call.reject(
        new TtrpcError(GrpcCode.INTERNAL, `ttrpc: malformed response: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    const status = response.status;
    if (!status || status.code === GrpcCode.OK) call.resolve(response.payload);
    else call.reject(new TtrpcError(status.code, status.message));
  }

  /** Mark the connection gone and reject everything pending. Idempotent. */
  private fail(): void {
    if (!this.closedError) {
      this.closedError = new TtrpcClosedError(this.lastError ? { cause: this.lastError } : undefined);
    }
    const err = this.closedError;
    for (const call of [...this.pending.values()]) call.reject(err);
  }
}
