import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { WebSocketServer } from 'ws';
import { exitCodeOf, RemoteCommandStream, runRemoteCommand } from '../../src/cri/remote-command.js';

/** A stand-in streaming server on loopback: `onConnection` plays the server's side. */
let server: WebSocketServer | undefined;
function serve(onConnection: (ws: WebSocket, got: Buffer[]) => void): Promise<string> {
  const s = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (protocols) => [...protocols][0] ?? false,
  });
  server = s;
  s.on('connection', (ws) => {
    const got: Buffer[] = [];
    ws.on('message', (m: Buffer) => got.push(m));
    onConnection(ws, got);
  });
  return new Promise((resolve) =>
    s.on('listening', () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}/exec/x`)),
  );
}

afterEach(async () => {
  const s = server;
  server = undefined;
  if (!s) return;
  for (const c of s.clients) c.terminate();
  await new Promise<void>((r) => s.close(() => r()));
});

const frame = (channel: number, data: string | Buffer = '') =>
  Buffer.concat([Buffer.from([channel]), Buffer.from(data)]);
const failure = (code: string) =>
  JSON.stringify({
    status: 'Failure',
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: code }] },
  });

describe('runRemoteCommand', () => {
  it('sends resize then stdin, collects stdout and stderr, and returns the exit code of the v4 status', async () => {
    let received: Buffer[] = [];
    const url = await serve((ws, got) => {
      received = got;
      ws.send(frame(1));
      ws.on('message', (m: Buffer) => {
        if (m[0] !== 0) return;
        ws.send(frame(1, `got ${m.subarray(1).toString()}`));
        ws.send(frame(2, 'err'));
        ws.send(frame(3, failure('7')));
        ws.close();
      });
    });
    const r = await runRemoteCommand(url, {
      stdin: 'hi',
      resize: { width: 80, height: 24 },
      timeoutMs: 5000,
    });
    expect(r.stdout.toString()).toBe('got hi');
    expect(r.stderr.toString()).toBe('err');
    expect(r.exitCode).toBe(7);
    expect(r.protocol).toBe('v4.channel.k8s.io');
    expect(received.map((m) => [m[0], m.subarray(1).toString()])).toEqual([
      [4, '{"Width":80,"Height":24}'],
      [0, 'hi'],
    ]);
  });

  it('a Success status is exit code 0, even when the command ended before stdin could be sent', async () => {
    const url = await serve((ws) => {
      ws.send(frame(1));
      ws.send(frame(3, '{"metadata":{},"status":"Success"}'));
      ws.close();
    });
    const r = await runRemoteCommand(url, { stdin: 'late', timeoutMs: 5000 });
    expect(r.exitCode).toBe(0);
  });

  it('rejects a failure without an exit code, and a stream closed without a status', async () => {
    let n = 0;
    const url = await serve((ws) => {
      ws.send(frame(1));
      if (n++ === 0) ws.send(frame(3, '{"status":"Failure","message":"executable not found"}'));
      ws.close();
    });
    await expect(runRemoteCommand(url, { timeoutMs: 5000 })).rejects.toThrow(/executable not found/);
    await expect(runRemoteCommand(url, { timeoutMs: 5000 })).rejects.toThrow(/without a status/);
  });

  it('speaks the older channel.k8s.io: an error text is a failure without a code', async () => {
    const url = await serve((ws) => {
      ws.send(frame(1, 'out'));
      ws.send(frame(3, 'command terminated with exit code 2'));
      ws.close();
    });
    const r = await runRemoteCommand(url, { protocol: 'channel.k8s.io', timeoutMs: 5000 });
    expect(r).toMatchObject({ exitCode: null, protocol: 'channel.k8s.io' });
    expect(r.status.message).toMatch(/exit code 2/);
    expect(r.stdout.toString()).toBe('out');
  });

  it('gives up at its timeout and closes the socket', async () => {
    let closed: Promise<void> | undefined;
    const url = await serve((ws) => {
      closed = new Promise((r) => ws.on('close', () => r()));
    });
    const started = Date.now();
    await expect(RemoteCommandStream.open(url, { timeoutMs: 300 })).rejects.toThrow(/no end within 300 ms/);
    expect(Date.now() - started).toBeLessThan(3000);
    await closed;
    expect(server!.clients.size).toBe(0);
  });

  it('close() ends an open stream', async () => {
    const url = await serve((ws) => ws.send(frame(1)));
    const stream = await RemoteCommandStream.open(url, { timeoutMs: 5000 });
    stream.close();
    await expect(stream.result).rejects.toThrow(/closed by the client/);
    expect(() => stream.write('x')).toThrow(/not open/);
  });
});

describe('exitCodeOf', () => {
  it('reads Success and ExitCode causes only', () => {
    expect(exitCodeOf({ status: 'Success' })).toBe(0);
    expect(exitCodeOf(JSON.parse(failure('130')))).toBe(130);
    expect(
      exitCodeOf({ status: 'Failure', details: { causes: [{ reason: 'ExitCode', message: 'x' }] } }),
    ).toBe(null);
    expect(exitCodeOf({ status: 'Failure' })).toBe(null);
  });
});
