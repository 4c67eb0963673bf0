/**
 * The two byte movers on their own, with real pipes, sockets and ptys.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  bytesReadable,
  closeQuietly,
  getPipeSize,
  makePipe,
  openPty,
  readFd,
  socketPair,
  writeFd,
} from '../../native-bindings/index.js';
import { CopyPump, SplicePump } from '../../src/agent/process/index.js';
import { collect, sha256, until, writer } from './helpers.js';

const MiB = 1 << 20;
const toClose: number[] = [];
afterEach(() => {
  for (const fd of toClose.splice(0)) closeQuietly(fd);
});

/** Pipe fds open in this process. */
function openPipes(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:');
    } catch {
      return false;
    }
  }).length;
}

/** Writes `data` into `fd` through a net.Socket and ends it (closes the fd). */
function feed(fd: number, data: Buffer): void {
  writer(fd).end(data);
}

describe('SplicePump', () => {
  it('pipe → socket: 32 MiB byte-exact, EOF when the writer closes', async () => {
    const [r, w] = makePipe();
    const [a, b] = socketPair();
    toClose.push(r, a);
    const data = randomBytes(32 * MiB);
    const out = collect(b);
    const pump = new SplicePump(r, a);
    pump.start();
    feed(w, data);
    const end = await pump.done;
    expect(end).toEqual({ reason: 'eof', bytes: data.length });
    closeQuietly(a); // the owner closes; the reader then sees EOF
    toClose.splice(toClose.indexOf(a), 1);
    const got = await out.done;
    expect(got.sha256).toBe(sha256(data));
  });

  it('socket → socket through its own kernel pipe (neither end is a pipe)', async () => {
    const [inA, inB] = socketPair();
    const [outA, outB] = socketPair();
    const data = randomBytes(32 * MiB);
    const out = collect(outB);
    const before = openPipes();
    const pump = new SplicePump(inA, outA);
    expect(openPipes()).toBe(before + 2); // the intermediate pipe's two ends
    pump.start();
    feed(inB, data);
    const end = await pump.done;
    expect(end).toEqual({ reason: 'eof', bytes: data.length });
    expect(openPipes()).toBe(before); // closed with the pump
    closeQuietly(inA);
    closeQuietly(outA);
    expect((await out.done).sha256).toBe(sha256(data));
  });

  it('applies backpressure: a full output stops the reading, nothing piles up in the agent', async () => {
    const [r, w] = makePipe();
    const [a, b] = socketPair();
    toClose.push(r, w, a);
    // Nobody reads `b` yet: the pump is the only one moving bytes.
    const pump = new SplicePump(r, a);
    pump.start();
    // Fill the input pipe as far as it goes (non-blocking writes from the test).
    const chunk = Buffer.alloc(64 << 10, 7);
    const { setNonBlocking } = await import('../../native-bindings/index.js');
    setNonBlocking(w, true);
    // Write until the pipe is full and a whole turn of the event loop (readiness of
    // both fds polled, the pump's callbacks run) moved nothing: with no reader on
    // `b`, nothing can make room for the pump later, so it has stalled for good.
    let written = 0;
    let moved = -1;
    for (let i = 0; i < 2000 && moved !== pump.bytes; i++) {
      moved = pump.bytes;
      for (let n = writeFd(w, chunk); n > 0; n = writeFd(w, chunk)) written += n;
      await new Promise((r) => setImmediate(r));
      if (pump.bytes !== moved) moved = -1;
    }
    expect(moved, 'the pump stalled').toBe(pump.bytes);
    // The pump moved what the socket could hold, then stopped: the rest waits in the pipe.
    expect(written - moved).toBe(bytesReadable(r));
    expect(bytesReadable(r)).toBeGreaterThan(getPipeSize(r) / 2);
    const out = collect(b);
    closeQuietly(w);
    toClose.splice(toClose.indexOf(w), 1);
    const end = await pump.done;
    expect(end).toEqual({ reason: 'eof', bytes: written });
    closeQuietly(a);
    toClose.splice(toClose.indexOf(a), 1);
    expect((await out.done).bytes).toBe(written);
  });

  it('reports EPIPE as an error when the output has no reader', async () => {
    const [r, w] = makePipe();
    const [outR, outW] = makePipe();
    toClose.push(r, outW);
    closeQuietly(outR);
    const pump = new SplicePump(r, outW);
    pump.start();
    writeFd(w, Buffer.from('data'));
    closeQuietly(w);
    const end = await pump.done;
    expect(end.reason).toBe('error');
    expect(end.reason === 'error' && (end.error as NodeJS.ErrnoException).code).toBe('EPIPE');
  });

  it('endAt(): delivers exactly that many bytes, leaves the rest unread', async () => {
    const [a, b] = socketPair();
    const [r, w] = makePipe();
    toClose.push(a, b, r, w);
    const pump = new SplicePump(a, w);
    pump.start();
    const s = new net.Socket({ fd: b, readable: false, writable: true });
    await new Promise<void>((res) => s.write(Buffer.alloc(1000, 1), () => res()));
    await until(() => pump.bytes === 1000);
    pump.endAt(pump.bytesIn + 10); // ten more bytes, then EOF
    await new Promise<void>((res) => s.write(Buffer.alloc(50, 2), () => res()));
    const end = await pump.done;
    expect(end).toEqual({ reason: 'eof', bytes: 1010 });
    expect(bytesReadable(a)).toBe(40);
    s.destroy();
    toClose.splice(toClose.indexOf(b), 1);
  });

  it('stop(): settles as stopped and leaves the fds to their owner', async () => {
    const [r, w] = makePipe();
    const [a, b] = socketPair();
    toClose.push(r, w, a, b);
    const pump = new SplicePump(r, a);
    pump.start();
    pump.stop();
    expect(await pump.done).toEqual({ reason: 'stopped', bytes: 0 });
    writeFd(w, Buffer.from('x'));
    expect(readFd(r, Buffer.alloc(4))).toBe(1); // still open, no longer watched
  });
});

describe('CopyPump', () => {
  it('copies, then writes the trailer after the input EOF', async () => {
    const [inR, inW] = makePipe();
    const [a, b] = socketPair();
    const out = collect(b);
    const pump = new CopyPump(inR, a, {
      trailer: (last) => Buffer.from(`<trailer after ${last}>`),
    });
    pump.start();
    const data = randomBytes(4 * MiB);
    feed(inW, Buffer.concat([data, Buffer.from('!')]));
    const end = await pump.done;
    expect(end).toEqual({ reason: 'eof', bytes: data.length + 1 });
    closeQuietly(inR);
    closeQuietly(a);
    const got = await out.done;
    expect(got.bytes).toBe(data.length + 1 + '<trailer after 33>'.length);
  });

  it('treats EIO from a pty master as end-of-file once the slave is closed', async () => {
    const pty = openPty();
    const [a, b] = socketPair();
    const out = collect(b);
    const pump = new CopyPump(pty.master, a, { eioIsEof: true });
    pump.start();
    writeFd(pty.slave, Buffer.from('from the slave\n'));
    closeQuietly(pty.slave);
    expect(await pump.done).toMatchObject({ reason: 'eof' });
    closeQuietly(pty.master);
    closeQuietly(a);
    expect((await out.done).text).toBe('from the slave\r\n');
  });
});
