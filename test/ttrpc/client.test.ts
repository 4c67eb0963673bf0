// TtrpcClient against a hand-driven peer on a real socketpair: the request
// bytes it writes are pinned, and the peer answers with hand-built frames
// (out of order, late, malformed, oversize).

import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { socketPair } from '../../native-bindings/index.js';
import { agentMethods } from '../../src/protocol/agent-api.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import { TtrpcClient } from '../../src/ttrpc/client.js';
import { TtrpcClosedError, TtrpcError } from '../../src/ttrpc/errors.js';
import { captureLogger, RawPeer } from './helpers.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');

function frame(streamId: number, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(10);
  h.writeUInt32BE(payload.length, 0);
  h.writeUInt32BE(streamId, 4);
  h[8] = type;
  return Buffer.concat([h, payload]);
}

const opened: { client: TtrpcClient; peer: RawPeer }[] = [];
afterEach(async () => {
  for (const { client, peer } of opened.splice(0)) {
    await client.close();
    peer.sock.destroy();
  }
});

function setup(): { client: TtrpcClient; peer: RawPeer } {
  const [a, b] = socketPair();
  const peer = new RawPeer(new net.Socket({ fd: a, readable: true, writable: true }));
  const client = new TtrpcClient(new net.Socket({ fd: b, readable: true, writable: true }), {
    logger: captureLogger().logger,
  });
  opened.push({ client, peer });
  return { client, peer };
}

describe('TtrpcClient on the wire', () => {
  it('writes the exact request bytes: odd stream ids, timeout_nano, lowercased metadata', async () => {
    const { client, peer } = setup();
    const p1 = client.call('t.S', 'E', Buffer.from('x'), { timeoutMs: 50, metadata: { K: 'v' } });
    expect((await peer.readFrame()).toString('hex')).toBe(
      hex(`
        00 00 00 18  00 00 00 01  01  00
        0a 03 ${ascii('t.S')}
        12 01 ${ascii('E')}
        1a 01 ${ascii('x')}
        20 80 e1 eb 17
        2a 06 0a 01 ${ascii('k')} 12 01 ${ascii('v')}
      `).toString('hex'),
    );
    const p2 = client.call('t.S', 'E', new Uint8Array());
    // No payload, no deadline, no metadata: only service and method.
    expect(await peer.readFrame()).toEqual(frame(3, 1, hex(`0a 03 ${ascii('t.S')} 12 01 ${ascii('E')}`)));
    const p3 = client.callTyped(agentMethods.WaitProcess, { containerId: 'c' });
    const f3 = await peer.readFrame();
    expect(f3.readUInt32BE(4)).toBe(5);

    // Answer out of order: 5, then 3, then 1. A missing status is OK (as in Go).
    await peer.write(frame(5, 2, hex('0a 00 12 02 08 07')));
    await peer.write(frame(3, 2, hex(`12 02 ${ascii('ok')}`)));
    await peer.write(frame(1, 2, hex(`0a 09 08 05 12 05 ${ascii('gone!')}`)));
    expect((await p3).status).toBe(7);
    expect(Buffer.from(await p2).toString()).toBe('ok');
    const e = (await p1.catch((err: unknown) => err)) as TtrpcError;
    expect(e).toBeInstanceOf(TtrpcError);
    expect([e.code, e.codeName, e.message]).toEqual([5, 'NOT_FOUND', 'gone!']);
  });

  it('times out locally, then ignores the late response', async () => {
    const { client, peer } = setup();
    const p = client.call('t.S', 'Slow', new Uint8Array(), { timeoutMs: 30 });
    await peer.readFrame();
    await expect(p).rejects.toMatchObject({ code: GrpcCode.DEADLINE_EXCEEDED });
    await peer.write(frame(1, 2, hex(`0a 00 12 01 ${ascii('z')}`)));
    const q = client.call('t.S', 'Fast', new Uint8Array());
    expect((await peer.readFrame()).readUInt32BE(4)).toBe(3);
    await peer.write(frame(3, 2, hex(`0a 00 12 01 ${ascii('y')}`)));
    expect(Buffer.from(await q).toString()).toBe('y');
  });

  it('rejects a call whose response does not decode, and keeps the connection', async () => {
    const { client, peer } = setup();
    const p = client.call('t.S', 'E', new Uint8Array());
    await peer.readFrame();
    await peer.write(frame(1, 2, hex('0a ff ff')));
    await expect(p).rejects.toMatchObject({ code: GrpcCode.INTERNAL });
    expect(client.closed).toBe(false);

    // A typed call whose payload does not parse as the output message.
    const t = client.callTyped(agentMethods.WaitProcess, {});
    await peer.readFrame();
    await peer.write(frame(3, 2, hex('0a 00 12 02 0a ff')));
    await expect(t).rejects.toMatchObject({ code: GrpcCode.INTERNAL });
  });

  it('closes on a response frame over 4 MiB and rejects what is pending', async () => {
    const { client, peer } = setup();
    const p = client.call('t.S', 'E', new Uint8Array());
    await peer.readFrame();
    await peer.write(hex('00 40 00 01 00 00 00 01 02 00'));
    const err = (await p.catch((e: unknown) => e)) as TtrpcClosedError;
    expect(err).toBeInstanceOf(TtrpcClosedError);
    expect(err.message).toBe('ttrpc connection closed');
    expect((err.cause as Error).message).toMatch(/declares 4194305 payload bytes/);
  });

  it('rejects pending calls when the peer closes, and later calls at once', async () => {
    const { client, peer } = setup();
    const pending = [client.call('a.B', 'C', new Uint8Array()), client.call('a.B', 'D', new Uint8Array())];
    const settled = Promise.allSettled(pending);
    await peer.readFrame();
    await peer.readFrame();
    peer.sock.end();
    for (const r of await settled) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(TtrpcClosedError);
    }
    expect(client.closed).toBe(true);
    await expect(client.call('a.B', 'C', new Uint8Array())).rejects.toThrow('ttrpc connection closed');
  });

  it('validates options and supports AbortSignal', async () => {
    const { client, peer } = setup();
    await expect(client.call('a.B', 'C', new Uint8Array(), { timeoutMs: 0 })).rejects.toThrow(RangeError);
    await expect(client.call('a.B', 'C', new Uint8Array(), { timeoutMs: Number.NaN })).rejects.toThrow(
      RangeError,
    );
    await expect(
      client.call('a.B', 'C', new Uint8Array(), { signal: AbortSignal.abort() }),
    ).rejects.toMatchObject({ code: GrpcCode.CANCELLED });
    // None of those consumed a stream id or wrote anything.
    const p = client.call('a.B', 'C', new Uint8Array());
    // Bytes from the refused calls would have come before this frame, and been read as it.
    expect((await peer.readFrame()).readUInt32BE(4)).toBe(1);
    expect(peer.buffered).toBe(0);
    await peer.write(frame(1, 2, hex('0a 00')));
    expect((await p).length).toBe(0);
  });
});
