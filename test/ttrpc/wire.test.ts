// The server's wire format pinned byte for byte: the test writes hand-built
// frames (no client, no protobuf library on the sending side) over a real
// Unix socket and compares the exact bytes that come back. Also the
// connection-level rules: oversize frames, framing errors, backpressure.

import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { agentMethods } from '../../src/protocol/agent-api.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import { TtrpcClient } from '../../src/ttrpc/client.js';
import { type TtrpcCallContext, TtrpcServer } from '../../src/ttrpc/server.js';
import {
  captureLogger,
  connectUnix,
  deferred,
  type Listening,
  listenTtrpc,
  RawPeer,
  sleep,
  type TempDir,
  tempDir,
  until,
} from './helpers.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');

/** Status{code, message} → Response{status} bytes, built by hand. */
function statusResponse(code: number, message: string): Buffer {
  const msg = Buffer.from(message);
  const status = Buffer.concat([Buffer.of(0x08, code, 0x12, msg.length), msg]);
  return Buffer.concat([Buffer.of(0x0a, status.length), status]);
}

function frame(streamId: number, type: number, payload: Buffer, flags = 0): Buffer {
  const h = Buffer.alloc(10);
  h.writeUInt32BE(payload.length, 0);
  h.writeUInt32BE(streamId, 4);
  h[8] = type;
  h[9] = flags;
  return Buffer.concat([h, payload]);
}

let dir: TempDir;
let path: string;
let server: TtrpcServer;
let listening: Listening;
let logLines: string[];
const peers: RawPeer[] = [];

function setup(opts: { maxConcurrentRequests?: number } = {}) {
  return async () => {
    dir = tempDir();
    path = join(dir.path, 'ttrpc.sock');
    const { logger, lines } = captureLogger();
    logLines = lines;
    server = new TtrpcServer({ logger, ...opts });
    listening = await listenTtrpc(server, path);
  };
}

async function teardown() {
  for (const p of peers.splice(0)) p.sock.destroy();
  await server.close();
  await listening.close();
  dir.remove();
}

async function peer(opts?: { flowing?: boolean }): Promise<RawPeer> {
  const p = await RawPeer.connect(path, opts);
  peers.push(p);
  return p;
}

describe('wire format', () => {
  beforeEach(setup());
  afterEach(teardown);

  it('answers a hand-built WaitProcess request with the exact expected bytes', async () => {
    server.registerTyped(agentMethods.WaitProcess, async (req) => ({
      status: req.containerId === 'c1' && req.execId === 'e1' ? 42 : 0,
    }));
    const p = await peer();

    // Request{service="grpc.AgentService", method="WaitProcess",
    //         payload=WaitProcessRequest{container_id="c1", exec_id="e1"}}
    const request = hex(`
      00 00 00 2a  00 00 00 01  01  00
      0a 11 ${ascii('grpc.AgentService')}
      12 0b ${ascii('WaitProcess')}
      1a 08 0a 02 ${ascii('c1')} 12 02 ${ascii('e1')}
    `);
    // Split across writes (inside the header and inside the payload) so the
    // server reassembles frames from partial reads.
    for (const [a, b] of [
      [0, 3],
      [3, 17],
      [17, request.length],
    ] as const) {
      await p.write(request.subarray(a, b));
      await sleep(10);
    }
    // Response{status=Status{} (OK), payload=WaitProcessResponse{status=42}}
    expect((await p.readFrame()).toString('hex')).toBe(
      hex(`
        00 00 00 06  00 00 00 01  02  00
        0a 00
        12 02 08 2a
      `).toString('hex'),
    );

    // Unknown method, stream 3: Response{status=Status{code=12, message="method Nope"}}, no payload.
    await p.write(frame(3, 1, hex(`0a 11 ${ascii('grpc.AgentService')} 12 04 ${ascii('Nope')}`)));
    expect((await p.readFrame()).toString('hex')).toBe(
      hex(`
        00 00 00 11  00 00 00 03  02  00
        0a 0f  08 0c  12 0b ${ascii('method Nope')}
      `).toString('hex'),
    );

    // Unknown service, stream 5.
    await p.write(frame(5, 1, hex(`0a 04 ${ascii('x.Y1')} 12 01 ${ascii('Z')}`)));
    expect(await p.readFrame()).toEqual(frame(5, 2, statusResponse(12, 'service x.Y1')));
  });

  it('decodes timeout_nano and repeated metadata from the wire', async () => {
    const ctx = deferred<TtrpcCallContext>();
    server.register('t.M', 'Get', async (req, c) => {
      ctx.resolve(c);
      expect(req.length).toBe(0);
      return Buffer.from('ok');
    });
    const p = await peer();
    await p.write(
      frame(
        1,
        1,
        hex(`
          0a 03 ${ascii('t.M')}
          12 03 ${ascii('Get')}
          20 80 e4 97 d0 12
          2a 07 0a 01 ${ascii('k')} 12 02 ${ascii('v1')}
          2a 07 0a 01 ${ascii('k')} 12 02 ${ascii('v2')}
          2a 08 0a 02 ${ascii('Up')} 12 02 ${ascii('v3')}
        `),
      ),
    );
    expect(await p.readFrame()).toEqual(frame(1, 2, hex(`0a 00 12 02 ${ascii('ok')}`)));
    const got = await ctx.promise;
    expect(got.timeoutNano).toBe(5_000_000_000n);
    expect({ ...got.metadata }).toEqual({ k: ['v1', 'v2'], Up: ['v3'] });
  });

  it('rejects even, reused and malformed streams the way Go does, and keeps the connection', async () => {
    server.register('t.S', 'E', async (r) => r);
    const p = await peer();
    const echo = (id: number) =>
      frame(id, 1, hex(`0a 03 ${ascii('t.S')} 12 01 ${ascii('E')} 1a 01 ${ascii('!')}`));
    const echoReply = (id: number) => frame(id, 2, hex(`0a 00 12 01 ${ascii('!')}`));

    await p.write(echo(2));
    expect(await p.readFrame()).toEqual(
      frame(2, 2, statusResponse(3, 'StreamID must be odd for client initiated streams')),
    );
    await p.write(echo(5));
    expect(await p.readFrame()).toEqual(echoReply(5));
    await p.write(echo(5));
    expect(await p.readFrame()).toEqual(
      frame(5, 2, statusResponse(3, 'StreamID cannot be re-used and must increment')),
    );
    await p.write(echo(3));
    expect(await p.readFrame()).toEqual(
      frame(3, 2, statusResponse(3, 'StreamID cannot be re-used and must increment')),
    );

    // Not a protobuf Request: INVALID_ARGUMENT "unmarshal request error: ...".
    await p.write(frame(7, 1, hex('ff ff ff')));
    const bad = await p.readFrame();
    expect(bad.subarray(4, 10)).toEqual(hex('00 00 00 07 02 00'));
    // 0a <len> 08 03 12 <len> "unmarshal request error: ..."
    expect([bad[10], bad[12], bad[13], bad[14]]).toEqual([0x0a, 0x08, GrpcCode.INVALID_ARGUMENT, 0x12]);
    expect(bad.subarray(16).toString()).toMatch(/^unmarshal request error: /);

    // A data frame (streaming) for a stream that is not active.
    await p.write(frame(9, 3, Buffer.alloc(0), 0x1));
    expect(await p.readFrame()).toEqual(frame(9, 2, statusResponse(3, 'StreamID is no longer active')));

    // An unknown frame type is skipped by its length; the next frame is served.
    await p.write(Buffer.concat([frame(11, 0x7f, Buffer.from('junk')), echo(13)]));
    expect(await p.readFrame()).toEqual(echoReply(13));

    // An empty frame (length 0) is an empty Request: service "" → UNIMPLEMENTED.
    await p.write(frame(15, 1, Buffer.alloc(0)));
    expect(await p.readFrame()).toEqual(frame(15, 2, statusResponse(12, 'service ')));
  });

  it('answers the deadline on the wire: DEADLINE_EXCEEDED on the request stream', async () => {
    const aborted = deferred<void>();
    server.register('t.S', 'Hang', (_r, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve());
      return new Promise(() => {});
    });
    const p = await peer();
    // timeout_nano = 50_000_000 (50 ms): varint 80 e1 eb 17
    await p.write(frame(1, 1, hex(`0a 03 ${ascii('t.S')} 12 04 ${ascii('Hang')} 20 80 e1 eb 17`)));
    const t0 = Date.now();
    expect(await p.readFrame()).toEqual(frame(1, 2, statusResponse(4, 'context deadline exceeded')));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(40);
    await aborted.promise;
  });

  it('drops the late result of a handler that returns after its deadline: no second reply on the stream', async () => {
    const release = deferred<void>();
    const returned = deferred<void>();
    server.register('t.S', 'Slow', async () => {
      await release.promise;
      returned.resolve();
      return Buffer.from('late');
    });
    server.register('t.S', 'Echo', async (r) => r);
    const p = await peer();
    // Slow with timeout_nano = 50 ms: the deadline's reply comes first.
    await p.write(frame(1, 1, hex(`0a 03 ${ascii('t.S')} 12 04 ${ascii('Slow')} 20 80 e1 eb 17`)));
    expect(await p.readFrame()).toEqual(frame(1, 2, statusResponse(4, 'context deadline exceeded')));
    // Now the handler returns its result. Had the server written it, that frame
    // would be queued on the socket before anything the next request gets.
    release.resolve();
    await returned.promise;
    await p.write(frame(3, 1, hex(`0a 03 ${ascii('t.S')} 12 04 ${ascii('Echo')} 1a 01 ${ascii('y')}`)));
    expect(await p.readFrame()).toEqual(frame(3, 2, hex(`0a 00 12 01 ${ascii('y')}`)));
    expect(p.buffered).toBe(0);
  });
});

describe('connection-level errors', () => {
  beforeEach(setup());
  afterEach(teardown);

  it('closes a connection that sends a frame over 4 MiB; other connections keep working', async () => {
    server.registerTyped(agentMethods.WaitProcess, async (req) => ({ status: req.execId.length }));
    const other = new TtrpcClient(await connectUnix(path), { logger: captureLogger().logger });
    expect((await other.callTyped(agentMethods.WaitProcess, { execId: 'abc' })).status).toBe(3);
    await until(() => server.connectionCount === 1);

    const bad = await peer();
    // Header declaring 4 MiB + 1 bytes on stream 1; the payload never comes.
    await bad.write(hex('00 40 00 01  00 00 00 01  01  00'));
    // Go answers RESOURCE_EXHAUSTED on that stream; then the connection ends.
    expect(await bad.readFrame()).toEqual(
      frame(1, 2, statusResponse(8, 'message length 4194305 exceed maximum message size of 4194304')),
    );
    await bad.waitEnd();
    await until(() => bad.closed || bad.ended);
    expect(logLines.some((l) => /declares 4194305 payload bytes.*closing the connection/.test(l))).toBe(true);

    // The existing connection and new ones are served.
    expect((await other.callTyped(agentMethods.WaitProcess, { execId: 'abcd' })).status).toBe(4);
    const fresh = new TtrpcClient(await connectUnix(path), { logger: captureLogger().logger });
    expect((await fresh.callTyped(agentMethods.WaitProcess, { execId: 'x' })).status).toBe(1);
    await until(() => server.connectionCount === 2);
    await other.close();
    await fresh.close();
  });

  it('logs a frame cut short by EOF and keeps serving', async () => {
    server.register('t.S', 'E', async (r) => r);
    const p = await peer();
    await p.write(hex('00 00 00 20 00 00 00 01 01 00 0a 03'));
    p.sock.end();
    await p.waitEnd();
    await until(() => logLines.some((l) => /ended inside a frame/.test(l)));
    const c = new TtrpcClient(await connectUnix(path), { logger: captureLogger().logger });
    expect(Buffer.from(await c.call('t.S', 'E', Buffer.from('z'))).toString()).toBe('z');
    await c.close();
  });
});

describe('backpressure', () => {
  beforeEach(setup({ maxConcurrentRequests: 4 }));
  afterEach(teardown);

  it('stops taking requests while replies are not being read, then serves them all', async () => {
    const MiB = 1 << 20;
    let calls = 0;
    const firstCall = deferred<void>();
    server.register('t.S', 'Big', async () => {
      calls++;
      firstCall.resolve();
      return Buffer.alloc(MiB, calls & 0xff);
    });
    const p = await peer({ flowing: false });
    const N = 32;
    const req = (id: number) => frame(id, 1, hex(`0a 03 ${ascii('t.S')} 12 03 ${ascii('Big')}`));
    // All requests in one write: they arrive in one read.
    await p.write(Buffer.concat(Array.from({ length: N }, (_, i) => req(2 * i + 1))));
    // The server has the whole batch once the first handler runs. A server without
    // these bounds would start the rest in that same read's processing, or in the
    // promise callbacks of the replies that follow: all done by the next macrotask.
    await firstCall.promise;
    await new Promise((r) => setImmediate(r));
    // 4 in flight at most, and once a 1 MiB reply could not be written no more
    // were started: the server holds about 4 MiB, not 32.
    expect(calls).toBeLessThanOrEqual(8);
    expect(calls).toBeGreaterThanOrEqual(1);

    p.sock.resume();
    const ids: number[] = [];
    for (let i = 0; i < N; i++) {
      const f = await p.readFrame();
      ids.push(f.readUInt32BE(4));
      // Response{status: {}, payload: 1 MiB}: 0a 00 12 80 80 40 ...
      expect(f.readUInt32BE(0)).toBe(2 + 1 + 3 + MiB);
    }
    expect(ids.sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => 2 * i + 1));
    expect(calls).toBe(N);
  });
});
