// TtrpcServer and TtrpcClient talking over real Unix sockets, with Kata
// AgentService messages.

import { createHash } from 'node:crypto';
import type net from 'node:net';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AGENT_SERVICE_NAME,
  agentMethods,
  WaitProcessRequestSchema,
  WaitProcessResponseSchema,
} from '../../src/protocol/agent-api.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import { TtrpcClient } from '../../src/ttrpc/client.js';
import { TtrpcClosedError, TtrpcError } from '../../src/ttrpc/errors.js';
import { type TtrpcCallContext, TtrpcServer } from '../../src/ttrpc/server.js';
import {
  captureLogger,
  connectUnix,
  deferred,
  type Listening,
  listenTtrpc,
  type TempDir,
  tempDir,
  until,
} from './helpers.js';

let dir: TempDir;
let path: string;
let server: TtrpcServer;
let listening: Listening;
let logLines: string[];
const clients: TtrpcClient[] = [];

beforeEach(async () => {
  dir = tempDir();
  path = join(dir.path, 'agent.sock');
  const { logger, lines } = captureLogger();
  logLines = lines;
  server = new TtrpcServer({ logger });
  listening = await listenTtrpc(server, path);
});

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  await server.close();
  await listening.close();
  dir.remove();
});

async function client(): Promise<TtrpcClient> {
  const c = new TtrpcClient(await connectUnix(path), { logger: captureLogger().logger });
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<TtrpcError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TtrpcError);
    return err as TtrpcError;
  }
  throw new Error('expected the call to reject');
}

describe('unary calls', () => {
  it('round-trips WaitProcess with Kata messages', async () => {
    const seen: TtrpcCallContext[] = [];
    server.registerTyped(agentMethods.WaitProcess, async (req, ctx) => {
      seen.push(ctx);
      expect(req.$typeName).toBe('grpc.WaitProcessRequest');
      return { status: req.containerId === 'c1' && req.execId === 'e1' ? 137 : -1 };
    });
    const c = await client();
    const res = await c.callTyped(agentMethods.WaitProcess, { containerId: 'c1', execId: 'e1' });
    expect(res.$typeName).toBe('grpc.WaitProcessResponse');
    expect(res.status).toBe(137);

    // The raw API carries the same bytes.
    const raw = await c.call(
      AGENT_SERVICE_NAME,
      'WaitProcess',
      toBinary(
        WaitProcessRequestSchema,
        create(WaitProcessRequestSchema, { containerId: 'c1', execId: 'e1' }),
      ),
    );
    expect(Buffer.from(raw)).toEqual(
      Buffer.from(toBinary(WaitProcessResponseSchema, create(WaitProcessResponseSchema, { status: 137 }))),
    );

    // Client stream ids: odd, from 1, +2 per call.
    expect(seen.map((s) => s.streamId)).toEqual([1, 3]);
    expect(seen[0]!.service).toBe('grpc.AgentService');
    expect(seen[0]!.method).toBe('WaitProcess');
    expect(seen[0]!.timeoutNano).toBe(0n);
  });

  it('carries ExecProcess ports and WriteStdin bytes', async () => {
    server.registerTyped(agentMethods.ExecProcess, async (req) => {
      expect([req.stdinPort, req.stdoutPort, req.stderrPort]).toEqual([1 << 30, (1 << 30) + 1, 0]);
      expect(req.process?.Args).toEqual(['sh', '-c', 'true']);
      return {};
    });
    server.registerTyped(agentMethods.WriteStdin, async (req) => ({ len: req.data.length }));
    const c = await client();
    const empty = await c.callTyped(agentMethods.ExecProcess, {
      containerId: 'c1',
      execId: 'e1',
      process: { Args: ['sh', '-c', 'true'] },
      stdinPort: 1 << 30,
      stdoutPort: (1 << 30) + 1,
    });
    expect(empty.$typeName).toBe('google.protobuf.Empty');
    const w = await c.callTyped(agentMethods.WriteStdin, { containerId: 'c1', data: Buffer.from('hello') });
    expect(w.len).toBe(5);
  });

  it('answers 200 concurrent calls out of order, each to its caller', async () => {
    const N = 200;
    const waiting: { execId: string; release: () => void }[] = [];
    const answered: string[] = [];
    const allArrived = deferred<void>();
    server.registerTyped(agentMethods.WaitProcess, async (req) => {
      const gate = deferred<void>();
      waiting.push({ execId: req.execId, release: () => gate.resolve() });
      if (waiting.length === N) allArrived.resolve();
      await gate.promise;
      answered.push(req.execId);
      return { status: Number(req.execId.slice(1)) };
    });
    const c = await client();
    const calls = Array.from({ length: N }, (_, i) =>
      c.callTyped(agentMethods.WaitProcess, { containerId: 'c', execId: `e${i}` }),
    );
    await allArrived.promise;
    expect(c.pendingCalls).toBe(N);
    // Release in a scrambled order: reverse odd ones first, then the even ones.
    const order = [...waiting].sort((a, b) => {
      const ia = Number(a.execId.slice(1));
      const ib = Number(b.execId.slice(1));
      return (ia % 2) - (ib % 2) || ib - ia;
    });
    order.reverse();
    for (const w of order) w.release();
    const results = await Promise.all(calls);
    expect(results.map((r) => r.status)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(answered).toEqual(order.map((w) => w.execId));
    expect(answered[0]).not.toBe('e0');
    expect(c.pendingCalls).toBe(0);
  });

  it('passes metadata and the deadline to the handler', async () => {
    const ctx = deferred<TtrpcCallContext>();
    server.register('test.Echo', 'Echo', async (req, c) => {
      ctx.resolve(c);
      return req;
    });
    const c = await client();
    const out = await c.call('test.Echo', 'Echo', Buffer.from('abc'), {
      metadata: { 'X-Trace-Id': 'abc123', multi: ['1', '2'] },
      timeoutMs: 5000,
    });
    expect(Buffer.from(out).toString()).toBe('abc');
    const got = await ctx.promise;
    expect({ ...got.metadata }).toEqual({ 'x-trace-id': ['abc123'], multi: ['1', '2'] });
    expect(got.timeoutNano).toBe(5_000_000_000n);
    expect(got.signal.aborted).toBe(false);
  });

  it('moves a 3 MiB payload each way', async () => {
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    server.registerTyped(agentMethods.WriteStdin, async (req) => {
      expect(digest(req.data)).toBe(digest(big));
      return { len: req.data.length };
    });
    server.registerTyped(agentMethods.ReadStdout, async (req) => ({ data: big.subarray(0, req.len) }));
    const c = await client();
    const w = await c.callTyped(agentMethods.WriteStdin, { containerId: 'c', execId: 'e', data: big });
    expect(w.len).toBe(big.length);
    const r = await c.callTyped(agentMethods.ReadStdout, { containerId: 'c', execId: 'e', len: big.length });
    expect(r.data.length).toBe(big.length);
    expect(digest(r.data)).toBe(digest(big));
  });
});

describe('errors', () => {
  it('answers UNIMPLEMENTED for an unknown service or method, like Go', async () => {
    server.registerTyped(agentMethods.WaitProcess, async () => ({ status: 0 }));
    const c = await client();
    const e1 = await rejection(c.call('grpc.NoSuchService', 'WaitProcess', new Uint8Array()));
    expect([e1.code, e1.codeName, e1.message]).toEqual([12, 'UNIMPLEMENTED', 'service grpc.NoSuchService']);
    const e2 = await rejection(c.call(AGENT_SERVICE_NAME, 'NoSuchMethod', new Uint8Array()));
    expect([e2.code, e2.message]).toEqual([GrpcCode.UNIMPLEMENTED, 'method NoSuchMethod']);
    // The connection is fine afterwards.
    expect((await c.callTyped(agentMethods.WaitProcess, {})).status).toBe(0);
  });

  it('maps handler errors to statuses', async () => {
    server.register('t.S', 'NotFound', async () => {
      throw new TtrpcError(GrpcCode.NOT_FOUND, 'container c9 not found');
    });
    server.register('t.S', 'Boom', async () => {
      throw new Error('boom');
    });
    server.register('t.S', 'SyncThrow', () => {
      throw new RangeError('sync');
    });
    server.register('t.S', 'ThrowString', async () => {
      throw 'just a string';
    });
    server.register('t.S', 'NotBytes', async () => 42 as unknown as Uint8Array);
    const c = await client();
    const call = (m: string) => rejection(c.call('t.S', m, new Uint8Array()));
    const nf = await call('NotFound');
    expect([nf.code, nf.codeName, nf.message]).toEqual([5, 'NOT_FOUND', 'container c9 not found']);
    const boom = await call('Boom');
    expect([boom.code, boom.codeName, boom.message]).toEqual([2, 'UNKNOWN', 'boom']);
    expect((await call('SyncThrow')).message).toBe('sync');
    expect((await call('ThrowString')).message).toBe('just a string');
    expect((await call('NotBytes')).code).toBe(GrpcCode.INTERNAL);
  });

  it('answers INVALID_ARGUMENT for a payload the typed handler cannot decode', async () => {
    let called = false;
    server.registerTyped(agentMethods.WaitProcess, async () => {
      called = true;
      return {};
    });
    const c = await client();
    const e = await rejection(c.call(AGENT_SERVICE_NAME, 'WaitProcess', Uint8Array.of(0x0a, 0x7f, 0x01)));
    expect(e.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(e.message).toMatch(/^ttrpc: error unmarshalling payload: /);
    expect(called).toBe(false);
  });

  it('refuses a request over 4 MiB before sending it', async () => {
    server.register('t.S', 'Echo', async (r) => r);
    const c = await client();
    const e = await rejection(c.call('t.S', 'Echo', new Uint8Array((4 << 20) + 1)));
    expect(e.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(e.message).toMatch(/exceed maximum message size of 4194304$/);
    expect(Buffer.from(await c.call('t.S', 'Echo', Buffer.from('ok'))).toString()).toBe('ok');
  });

  it('answers RESOURCE_EXHAUSTED for a reply over 4 MiB and keeps the connection', async () => {
    server.register('t.S', 'Huge', async () => new Uint8Array(4 << 20));
    server.register('t.S', 'Echo', async (r) => r);
    const c = await client();
    const e = await rejection(c.call('t.S', 'Huge', new Uint8Array()));
    expect(e.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(Buffer.from(await c.call('t.S', 'Echo', Buffer.from('ok'))).toString()).toBe('ok');
    expect(logLines.join('')).toMatch(/over the limit/);
  });
});

describe('deadlines and cancellation', () => {
  it('aborts the handler and answers DEADLINE_EXCEEDED when timeout_nano passes', async () => {
    const aborted = deferred<unknown>();
    server.register('t.S', 'Hang', (_req, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
      return new Promise(() => {}); // never settles
    });
    server.register('t.S', 'Echo', async (r) => r);
    const c = await client();
    const t0 = Date.now();
    const e = await rejection(c.call('t.S', 'Hang', new Uint8Array(), { timeoutMs: 100 }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect([e.code, e.codeName, e.message]).toEqual([4, 'DEADLINE_EXCEEDED', 'context deadline exceeded']);
    const reason = await aborted.promise;
    expect(reason).toBeInstanceOf(TtrpcError);
    expect((reason as TtrpcError).code).toBe(GrpcCode.DEADLINE_EXCEEDED);
    expect(c.pendingCalls).toBe(0);
    expect(Buffer.from(await c.call('t.S', 'Echo', Buffer.from('x'))).toString()).toBe('x');
  });

  it('rejects with CANCELLED when the caller aborts', async () => {
    server.register('t.S', 'Hang', () => new Promise(() => {}));
    const c = await client();
    const ac = new AbortController();
    const p = c.call('t.S', 'Hang', new Uint8Array(), { signal: ac.signal });
    ac.abort();
    const e = await rejection(p);
    expect([e.code, e.message]).toEqual([GrpcCode.CANCELLED, 'context canceled']);
    expect(c.pendingCalls).toBe(0);
  });
});

describe('connection lifetime', () => {
  it('rejects pending calls with "ttrpc connection closed" when the server goes away', async () => {
    const started = deferred<void>();
    let n = 0;
    server.register('t.S', 'Hang', () => {
      if (++n === 3) started.resolve();
      return new Promise(() => {});
    });
    const c = await client();
    const calls = [1, 2, 3].map(() => rejection(c.call('t.S', 'Hang', new Uint8Array())));
    await started.promise;
    await server.close();
    for (const e of await Promise.all(calls)) {
      expect(e).toBeInstanceOf(TtrpcClosedError);
      expect(e.message).toBe('ttrpc connection closed');
      expect(e.code).toBe(GrpcCode.UNAVAILABLE);
    }
    await until(() => c.closed);
    const later = await rejection(c.call('t.S', 'Hang', new Uint8Array()));
    expect(later).toBeInstanceOf(TtrpcClosedError);
  });

  it('cancels in-flight handlers when the client closes', async () => {
    const reason = deferred<unknown>();
    const started = deferred<void>();
    server.register('t.S', 'Hang', (_r, ctx) => {
      ctx.signal.addEventListener('abort', () => reason.resolve(ctx.signal.reason));
      started.resolve();
      return new Promise(() => {});
    });
    const c = await client();
    const p = rejection(c.call('t.S', 'Hang', new Uint8Array()));
    await started.promise;
    expect(server.connectionCount).toBe(1);
    await c.close();
    expect(await p).toBeInstanceOf(TtrpcClosedError);
    const r = (await reason.promise) as TtrpcError;
    expect([r.code, r.message]).toEqual([GrpcCode.CANCELLED, 'context canceled']);
    await until(() => server.connectionCount === 0);
  });

  it('serves several connections at once and close() ends them all', async () => {
    server.register('t.S', 'Echo', async (r) => r);
    const cs = await Promise.all([client(), client(), client()]);
    const outs = await Promise.all(cs.map((c, i) => c.call('t.S', 'Echo', Buffer.from(`c${i}`))));
    expect(outs.map((o) => Buffer.from(o).toString())).toEqual(['c0', 'c1', 'c2']);
    expect(server.connectionCount).toBe(3);
    await server.close();
    expect(server.connectionCount).toBe(0);
    await until(() => cs.every((c) => c.closed));
    // A connection offered after close() is dropped at once.
    const late: net.Socket = await connectUnix(path);
    await new Promise((resolve) => late.once('close', resolve));
  });

  it('refuses to register the same method twice', () => {
    server.register('t.S', 'M', async (r) => r);
    expect(() => server.register('t.S', 'M', async (r) => r)).toThrow(/duplicate method \/t\.S\/M/);
    expect(server.methods()).toEqual(['/t.S/M']);
  });
});
