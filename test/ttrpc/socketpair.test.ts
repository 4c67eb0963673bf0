// TtrpcServer and TtrpcClient on the two ends of a real socketpair(2), each
// end wrapped as `new net.Socket({ fd })`: how the agent serves a connection
// it received as a raw fd (an AF_VSOCK socket, or a stand-in socketpair end).

import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { socketPair } from '../../native-bindings/index.js';
import { agentMethods } from '../../src/protocol/agent-api.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import { TtrpcClient } from '../../src/ttrpc/client.js';
import { TtrpcClosedError, TtrpcError } from '../../src/ttrpc/errors.js';
import { TtrpcServer } from '../../src/ttrpc/server.js';
import { captureLogger, deferred } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function pair(server: TtrpcServer): { client: TtrpcClient; served: Promise<void>; serverSock: net.Socket } {
  const [a, b] = socketPair();
  const serverSock = new net.Socket({ fd: a, readable: true, writable: true });
  const clientSock = new net.Socket({ fd: b, readable: true, writable: true });
  const served = server.serve(serverSock);
  const client = new TtrpcClient(clientSock, { logger: captureLogger().logger });
  cleanups.push(
    () => client.close(),
    () => server.close(),
  );
  return { client, served, serverSock };
}

describe('over a socketpair', () => {
  it('round-trips WaitProcess and ReadStdout', async () => {
    const server = new TtrpcServer({ logger: captureLogger().logger });
    server.registerTyped(agentMethods.WaitProcess, async (req) => ({ status: req.containerId.length }));
    server.registerTyped(agentMethods.ReadStdout, async (req) => ({ data: Buffer.alloc(req.len, 0x61) }));
    const { client } = pair(server);
    expect((await client.callTyped(agentMethods.WaitProcess, { containerId: 'abcdef' })).status).toBe(6);
    const out = await client.callTyped(agentMethods.ReadStdout, { len: 5 });
    expect(Buffer.from(out.data).toString()).toBe('aaaaa');
  });

  it('answers 200 concurrent calls in reverse order', async () => {
    const server = new TtrpcServer({ logger: captureLogger().logger });
    const gates: (() => void)[] = [];
    const all = deferred<void>();
    server.registerTyped(agentMethods.WaitProcess, async (req) => {
      const g = deferred<void>();
      gates.push(() => g.resolve());
      if (gates.length === 200) all.resolve();
      await g.promise;
      return { status: Number(req.execId) };
    });
    const { client } = pair(server);
    const calls = Array.from({ length: 200 }, (_, i) =>
      client.callTyped(agentMethods.WaitProcess, { execId: String(i) }),
    );
    await all.promise;
    for (const release of gates.reverse()) release();
    expect((await Promise.all(calls)).map((r) => r.status)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  it('moves 3 MiB each way intact', async () => {
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >>> 11)) & 0xff;
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    const server = new TtrpcServer({ logger: captureLogger().logger });
    server.registerTyped(agentMethods.WriteStdin, async (req) => ({
      len: sha(req.data) === sha(big) ? req.data.length : 0,
    }));
    server.register('t.S', 'Echo', async (req) => req);
    const { client } = pair(server);
    expect((await client.callTyped(agentMethods.WriteStdin, { data: big })).len).toBe(big.length);
    expect(sha(await client.call('t.S', 'Echo', big))).toBe(sha(big));
  });

  it('reports UNIMPLEMENTED and handler statuses', async () => {
    const server = new TtrpcServer({ logger: captureLogger().logger });
    server.registerTyped(agentMethods.SignalProcess, async () => {
      throw new TtrpcError(GrpcCode.NOT_FOUND, 'no such process');
    });
    const { client } = pair(server);
    await expect(client.callTyped(agentMethods.SignalProcess, { signal: 9 })).rejects.toMatchObject({
      code: GrpcCode.NOT_FOUND,
      codeName: 'NOT_FOUND',
      message: 'no such process',
    });
    await expect(client.callTyped(agentMethods.TtyWinResize, {})).rejects.toMatchObject({
      code: GrpcCode.UNIMPLEMENTED,
      message: 'method TtyWinResize',
    });
  });

  it('rejects pending calls when the server end is closed', async () => {
    const server = new TtrpcServer({ logger: captureLogger().logger });
    const arrived = deferred<void>();
    server.register('t.S', 'Hang', () => {
      arrived.resolve();
      return new Promise(() => {});
    });
    const { client, served, serverSock } = pair(server);
    const p = client.call('t.S', 'Hang', new Uint8Array());
    await arrived.promise;
    serverSock.destroy(); // closes the fd
    await served;
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TtrpcClosedError);
    expect((err as Error).message).toBe('ttrpc connection closed');
    expect(client.closed).toBe(true);
  });
});
