// One served ttrpc connection (see server.ts for the server it belongs to):
// frame decoding, dispatch to handlers, reply writing, backpressure and
// teardown. The rules below follow containerd/ttrpc's Go server.
//
// Per-request rules, following Go's server.go / services.go:
// - stream id must be odd (client-initiated) and larger than every earlier
//   one on the connection, else INVALID_ARGUMENT with Go's message;
// - unknown service → UNIMPLEMENTED "service <name>"; unknown method of a
//   known service → UNIMPLEMENTED "method <name>" (the ttrpc-rust vendored
//   by older Kata agents said INVALID_ARGUMENT "<path> does not exist";
//   Go's code is the one gRPC callers expect);
// - an undecodable Request envelope → INVALID_ARGUMENT "unmarshal request
//   error: ..." (Go and ttrpc-rust agree); an undecodable method payload
//   (typed handlers) → INVALID_ARGUMENT too: Go says INTERNAL there, but
//   the bytes are the caller's fault, not the server's;
// - `timeout_nano` > 0 is a deadline: when it passes the handler's `signal`
//   aborts and DEADLINE_EXCEEDED is answered at once (Go only cancels the
//   context and waits for the handler; answering at the deadline keeps a
//   handler that ignores its signal from holding the caller). Whatever the
//   handler returns later is dropped;
// - a handler throwing TtrpcError(code, msg) → that status; anything else →
//   UNKNOWN with its message;
// - a reply over 4 MiB → RESOURCE_EXHAUSTED with Go's text instead of the
//   payload (Go would drop the connection);
// - data frames (type 3, streaming RPCs) for a stream that is not in flight
//   → INVALID_ARGUMENT "StreamID is no longer active" (no streaming methods
//   are served); frames of unknown type are ignored, as Go does.
//
// Connection-level rules:
// - a frame header declaring more than 4 MiB poisons the stream (its payload
//   cannot be skipped safely without reading it): the server logs, answers
//   that stream id RESOURCE_EXHAUSTED as Go does, and closes the connection.
//   Other connections are unaffected.
// - backpressure: when `write()` returns false the connection stops starting
//   requests and stops reading until 'drain'. Replies of handlers already
//   running are still written, so what is buffered is bounded by the number
//   of requests in flight, which `maxConcurrentRequests` caps (one read chunk
//   can hold a thousand small requests, so pausing the socket alone would
//   not bound it). Frames decoded but not yet started wait in a backlog, in
//   order. A client that does not read its replies thus cannot make the
//   server buffer without limit, and a slow one only slows itself.
// - the peer's EOF ends the connection, as in Go's server: in-flight
//   handlers are cancelled and their replies dropped, replies already
//   written are flushed, then the socket closes. (A stream socket cannot tell
//   a half-close from a vanished client, and a hung handler such as
//   WaitProcess must not outlive the runtime that asked; neither ttrpc client
//   half-closes.)
// - when a connection closes, every in-flight handler's signal aborts with
//   CANCELLED "context canceled" (Go cancels the connection's context).

import type { Duplex } from 'node:stream';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  encodeFrameHeader,
  GrpcCode,
  type Request,
  RequestSchema,
  ResponseSchema,
  StatusSchema,
  TTRPC_MAX_PAYLOAD,
  type TtrpcFrame,
  TtrpcFrameDecoder,
  TtrpcMessageType,
  TtrpcProtocolError,
} from '../protocol/ttrpc.js';
import type { Logger } from '../util/log.js';
import {
  CANCELLED_MESSAGE,
  DEADLINE_EXCEEDED_MESSAGE,
  deadlineDelayMs,
  metadataFromKeyValues,
  oversizedMessage,
  type TtrpcMetadata,
} from './common.js';
import { statusOfError, TtrpcError } from './errors.js';

/** What a handler learns about the call besides its payload. */
export interface TtrpcCallContext {
  readonly service: string;
  readonly method: string;
  readonly streamId: number;
  /** Request metadata, key → values (see TtrpcMetadata). */
  readonly metadata: TtrpcMetadata;
  /**
   * Aborts when the request's deadline passes (reason: TtrpcError
   * DEADLINE_EXCEEDED) or its connection closes (reason: TtrpcError
   * CANCELLED). The reply has then already been decided; stop working.
   */
  readonly signal: AbortSignal;
  /** Request.timeout_nano as sent: 0n for no deadline. */
  readonly timeoutNano: bigint;
}

/** A raw handler: serialized request message in, serialized response message out. */
export type TtrpcHandler = (request: Uint8Array, ctx: TtrpcCallContext) => Promise<Uint8Array> | Uint8Array;

/** A status to answer with: google.rpc.Status's code and message. */
export type Status = { code: number; message: string };

/** Finds the handler of `/service/method`, or the status that says why there is none. */
export type HandlerLookup = (service: string, method: string) => TtrpcHandler | Status;

const OK: Status = { code: GrpcCode.OK, message: '' };
const EMPTY = new Uint8Array(0);

interface InFlight {
  readonly abort: AbortController;
  timer: NodeJS.Timeout | undefined;
}

/** One served connection: frame decoding, dispatch, reply writing, teardown. */
export class ServerConnection {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly decoder = new TtrpcFrameDecoder();
  /** Highest request stream id seen: new requests must exceed it. */
  private lastStreamId = 0;
  private readonly inFlight = new Map<number, InFlight>();
  /** Frames read but not yet dispatched (waiting for drain or a free slot). */
  private backlog: (TtrpcFrame | undefined)[] = [];
  private backlogHead = 0;
  /** A write returned false; reading is paused until 'drain'. */
  private writeBlocked = false;
  /** No more requests will be read (peer EOF, or closing after a protocol error). */
  private readDone = false;
  private isClosed = false;

  constructor(
    private readonly stream: Duplex,
    private readonly lookup: HandlerLookup,
    private readonly log: Logger,
    private readonly maxConcurrent: number,
    private readonly id: number,
    private readonly onClosed: (c: ServerConnection) => void,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  start(): void {
    const s = this.stream;
    s.on('data', (chunk: Buffer | string) =>
      this.onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk),
    );
    s.on('end', () => this.onEnd());
    s.on('drain', () => this.onDrain());
    s.on('error', (err: NodeJS.ErrnoException) => {
      // A peer vanishing mid-reply is routine; anything else is worth a line.
      const routine = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      (routine ? this.log.debug : this.log.warn)(`connection ${this.id}: ${err.message}`);
    });
    s.on('close', () => this.onClose());
    if (s.destroyed) this.onClose();
  }

  destroy(): void {
    this.stream.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.readDone) return;
    let frames: TtrpcFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // Frames that preceded the bad header in this chunk are lost with the
      // connection; their callers see it close.
      this.protocolError(err);
      return;
    }
    if (frames.length === 0) return;
    if (this.backlogHead === this.backlog.length) {
      this.backlog = frames;
      this.backlogHead = 0;
    } else {
      this.backlog.push(...frames);
    }
    this.pump();
  }

  /**
   * Dispatch backlogged frames while writes flow and request slots are free;
   * keep the socket paused while anything is held back.
   */
  private pump(): void {
    while (
      this.backlogHead < this.backlog.length &&
      !this.writeBlocked &&
      this.inFlight.size < this.maxConcurrent &&
      !this.isClosed
    ) {
      const frame = this.backlog[this.backlogHead]!;
      this.backlog[this.backlogHead++] = undefined; // let the payload be collected
      this.onFrame(frame);
    }
    if (this.backlogHead === this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
    }
    if (this.isClosed || this.readDone) return;
    if (this.writeBlocked || this.backlog.length > 0) this.stream.pause();
    else if (this.stream.isPaused()) this.stream.resume();
  }

  private onFrame(frame: TtrpcFrame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.reply(id, {
        code: GrpcCode.INVALID_ARGUMENT,
        message: 'StreamID must be odd for client initiated streams',
      });
      return;
    }
    switch (frame.type) {
      case TtrpcMessageType.REQUEST:
        this.onRequest(frame);
        return;
      case TtrpcMessageType.DATA:
        if (!this.inFlight.has(id)) {
          this.reply(id, { code: GrpcCode.INVALID_ARGUMENT, message: 'StreamID is no longer active' });
        } else {
          this.log.debug(`connection ${this.id}: ignoring data frame on unary stream ${id}`);
        }
        return;
      default:
        this.log.debug(`connection ${this.id}: ignoring frame of type ${frame.type} on stream ${id}`);
    }
  }

  private onRequest(frame: TtrpcFrame): void {
    const id = frame.streamId;
    if (id <= this.lastStreamId) {
      this.reply(id, {
        code: GrpcCode.INVALID_ARGUMENT,
        message: 'StreamID cannot be re-used and must increment',
      });
      return;
    }
    this.lastStreamId = id;

    let req: Request;
    try {
      req = fromBinary(RequestSchema, frame.payload);
    } catch (err) {
      this.reply(id, {
        code: GrpcCode.INVALID_ARGUMENT,
        message: `unmarshal request error: ${(err as Error).message}`,
      });
      return;
    }

    const handler = this.lookup(req.service, req.method);
    if (typeof handler !== 'function') {
      this.reply(id, handler);
      return;
    }

    const call: InFlight = { abort: new AbortController(), timer: undefined };
    this.inFlight.set(id, call);
    const delay = deadlineDelayMs(req.timeoutNano);
    if (delay !== undefined) call.timer = setTimeout(() => this.expire(id, call), delay);

    const ctx: TtrpcCallContext = {
      service: req.service,
      method: req.method,
      streamId: id,
      metadata: metadataFromKeyValues(req.metadata),
      signal: call.abort.signal,
      timeoutNano: req.timeoutNano,
    };
    // Promise.resolve().then: a handler that throws synchronously is
    // reported like one that rejects.
    Promise.resolve()
      .then(() => handler(req.payload, ctx))
      .then(
        (payload) => this.settle(id, call, OK, payload),
        (err: unknown) => this.settle(id, call, statusOfError(err), EMPTY),
      );
  }

  /** A handler finished: answer, unless the deadline or connection close already did. */
  private settle(id: number, call: InFlight, status: Status, payload: Uint8Array): void {
    if (this.inFlight.get(id) !== call) return;
    this.inFlight.delete(id);
    clearTimeout(call.timer);
    this.reply(id, status, payload);
    this.pump();
  }

  private expire(id: number, call: InFlight): void {
    if (this.inFlight.get(id) !== call) return;
    this.inFlight.delete(id);
    const status = { code: GrpcCode.DEADLINE_EXCEEDED, message: DEADLINE_EXCEEDED_MESSAGE };
    call.abort.abort(new TtrpcError(status.code, status.message));
    this.reply(id, status);
    this.pump();
  }

  /** Write one response frame (header and body as two corked writes: no 4 MiB copy). */
  private reply(id: number, status: Status, payload: Uint8Array = EMPTY): void {
    if (this.isClosed || !this.stream.writable) return;
    let body: Uint8Array;
    try {
      body = encodeResponse(status, payload);
    } catch (err) {
      // A raw handler returned something that is not bytes.
      body = encodeResponse({
        code: GrpcCode.INTERNAL,
        message: `ttrpc: error marshaling payload: ${(err as Error).message}`,
      });
    }
    if (body.length > TTRPC_MAX_PAYLOAD) {
      this.log.warn(`connection ${this.id}: reply on stream ${id} is ${body.length} bytes, over the limit`);
      body = encodeResponse({ code: GrpcCode.RESOURCE_EXHAUSTED, message: oversizedMessage(body.length) });
    }
    const s = this.stream;
    s.cork();
    s.write(encodeFrameHeader(body.length, id, TtrpcMessageType.RESPONSE));
    const ok = s.write(body);
    s.uncork();
    if (!ok && !this.writeBlocked) {
      this.writeBlocked = true;
      if (!this.readDone) s.pause();
    }
  }

  private onDrain(): void {
    if (!this.writeBlocked) return;
    this.writeBlocked = false;
    this.pump();
  }

  private onEnd(): void {
    try {
      this.decoder.end();
      this.log.debug(`connection ${this.id}: peer closed`);
    } catch (err) {
      this.log.warn(`connection ${this.id}: ${(err as Error).message}`);
    }
    this.shutdown();
    this.endThenDestroy();
  }

  private protocolError(err: unknown): void {
    this.log.warn(`connection ${this.id}: ${(err as Error).message}; closing the connection`);
    this.shutdown();
    if (
      err instanceof TtrpcProtocolError &&
      err.code === 'frame-too-large' &&
      err.streamId !== undefined &&
      err.streamId % 2 === 1 &&
      err.length !== undefined
    ) {
      // Tell the caller why, as Go does, before closing.
      this.reply(err.streamId, { code: GrpcCode.RESOURCE_EXHAUSTED, message: oversizedMessage(err.length) });
    }
    this.endThenDestroy();
  }

  /** Stop reading and dispatching; cancel what runs. Writing still works until endThenDestroy(). */
  private shutdown(): void {
    this.readDone = true;
    this.backlog = [];
    this.backlogHead = 0;
    this.stream.pause();
    this.cancelAll();
  }

  /**
   * Flush what was written, then close. A peer that does not read could keep
   * the flush pending forever, so the close is forced after a grace period.
   */
  private endThenDestroy(): void {
    const s = this.stream;
    if (this.isClosed || s.writableEnded) return;
    const force = setTimeout(() => s.destroy(), 1000);
    force.unref();
    s.end(() => {
      clearTimeout(force);
      s.destroy();
    });
  }

  private cancelAll(): void {
    for (const call of this.inFlight.values()) {
      clearTimeout(call.timer);
      call.abort.abort(new TtrpcError(GrpcCode.CANCELLED, CANCELLED_MESSAGE));
    }
    this.inFlight.clear();
  }

  private onClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.readDone = true;
    this.backlog = [];
    this.backlogHead = 0;
    this.cancelAll();
    this.onClosed(this);
    this.resolveClosed();
  }
}

function encodeResponse(status: Status, payload: Uint8Array = EMPTY): Uint8Array {
  // The status is always present, also for OK (Go sends status.New(OK).Proto(),
  // an empty message: bytes 0a 00). Clients of both implementations accept it.
  return toBinary(ResponseSchema, create(ResponseSchema, { status: create(StatusSchema, status), payload }));
}
