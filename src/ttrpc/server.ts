// ttrpc server: unary RPCs over any byte stream, wire-compatible with
// containerd/ttrpc (Go) and ttrpc-rust (what the Kata runtime and agent use).
//
// What: handlers are registered per (service, method). `serve(stream)` runs
// one connection: it decodes frames (src/protocol/ttrpc.ts), and for each
// request frame (type 1) decodes the ttrpc.Request envelope, calls the
// handler, and answers with one response frame (type 2) on the same stream id
// carrying ttrpc.Response{status: google.rpc.Status, payload}. The agent
// serves Kata's AgentService with it on guest vsock port 1024; tests serve it
// on Unix sockets and socketpairs. Any Node Duplex works (net.Socket from a
// path or from a raw fd).
//
// Why not one request at a time: a Kata runtime keeps calls such as
// WaitProcess outstanding for the life of a process while it issues others
// on the same connection, so requests run concurrently and each reply is
// written as soon as its handler settles, in whatever order they settle.
//
// The per-request and connection-level rules (stream ids, unknown methods,
// deadlines, oversized frames, backpressure, EOF and cancellation) are
// server-connection.ts's, which serves each connection.

import type { Duplex } from 'node:stream';
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import { GrpcCode } from '../protocol/ttrpc.js';
import { createLogger, type Logger } from '../util/log.js';
import type { TtrpcMethod } from './common.js';
import { TtrpcError } from './errors.js';
import {
  ServerConnection,
  type Status,
  type TtrpcCallContext,
  type TtrpcHandler,
} from './server-connection.js';

export type { TtrpcCallContext, TtrpcHandler } from './server-connection.js';

/** A typed handler: decoded request in, response message (or its init shape) out. */
export type TtrpcTypedHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: TtrpcCallContext,
) => Promise<MessageInitShape<O>> | MessageInitShape<O>;

export interface TtrpcServerOptions {
  /** Where connection problems are reported (default: component "ttrpc-server"). */
  logger?: Logger;
  /**
   * Requests one connection may have running at once; further requests wait
   * (unread) until one finishes. Default 1024.
   */
  maxConcurrentRequests?: number;
}

const DEFAULT_MAX_CONCURRENT_REQUESTS = 1024;

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, TtrpcHandler>>();
  private readonly connections = new Set<ServerConnection>();
  private readonly log: Logger;
  private readonly maxConcurrent: number;
  private nextConnectionId = 1;
  private closed = false;

  constructor(options: TtrpcServerOptions = {}) {
    this.log = options.logger ?? createLogger('ttrpc-server');
    this.maxConcurrent = options.maxConcurrentRequests ?? DEFAULT_MAX_CONCURRENT_REQUESTS;
    if (!Number.isInteger(this.maxConcurrent) || this.maxConcurrent < 1) {
      throw new RangeError(`maxConcurrentRequests must be a positive integer, got ${this.maxConcurrent}`);
    }
  }

  /**
   * Serve `method` of `service` with `handler`. Registering the same pair
   * twice is a programming error and throws (Go panics on a duplicate service).
   */
  register(service: string, method: string, handler: TtrpcHandler): this {
    let methods = this.services.get(service);
    if (!methods) {
      methods = new Map();
      this.services.set(service, methods);
    }
    if (methods.has(method)) throw new Error(`ttrpc: duplicate method /${service}/${method} registered`);
    methods.set(method, handler);
    return this;
  }

  /**
   * Register a handler typed by the method's protobuf schemas (e.g.
   * `agentMethods.WaitProcess`): the request payload is decoded with
   * `method.input` (INVALID_ARGUMENT when it does not parse) and the result
   * is built with `create(method.output, ...)` and encoded.
   */
  registerTyped<I extends DescMessage, O extends DescMessage>(
    method: TtrpcMethod<I, O>,
    handler: TtrpcTypedHandler<I, O>,
  ): this {
    return this.register(method.service, method.name, async (payload, ctx) => {
      let request: MessageShape<I>;
      try {
        request = fromBinary(method.input, payload);
      } catch (err) {
        throw new TtrpcError(
          GrpcCode.INVALID_ARGUMENT,
          `ttrpc: error unmarshalling payload: ${(err as Error).message}`,
          { cause: err },
        );
      }
      const result = await handler(request, ctx);
      return toBinary(method.output, create(method.output, result));
    });
  }

  /** Fully qualified "/service/method" names of everything registered. */
  methods(): string[] {
    return [...this.services].flatMap(([svc, methods]) => [...methods.keys()].map((m) => `/${svc}/${m}`));
  }

  /** Connections currently being served. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Serve one connection until it closes. Resolves (never rejects) once the
   * stream has closed and every in-flight handler's signal has aborted.
   * After `close()`, the stream is destroyed at once.
   */
  serve(stream: Duplex): Promise<void> {
    const conn = new ServerConnection(
      stream,
      (service, method) => this.lookup(service, method),
      this.log,
      this.maxConcurrent,
      this.nextConnectionId++,
      (c) => this.connections.delete(c),
    );
    if (this.closed) {
      stream.destroy();
    } else {
      this.connections.add(conn);
      conn.start();
    }
    return conn.closed;
  }

  /**
   * Stop serving: destroy every connection (in-flight handlers are
   * cancelled, their replies dropped) and refuse later `serve()` calls.
   * Resolves when every connection has closed.
   */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.connections];
    for (const c of all) c.destroy();
    await Promise.all(all.map((c) => c.closed));
  }

  private lookup(service: string, method: string): TtrpcHandler | Status {
    const methods = this.services.get(service);
    if (!methods) return { code: GrpcCode.UNIMPLEMENTED, message: `service ${service}` };
    return methods.get(method) ?? { code: GrpcCode.UNIMPLEMENTED, message: `method ${method}` };
  }
}
