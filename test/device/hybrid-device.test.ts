/**
 * The hybrid-vsock device end to end, through real OS objects: a real `vmm`
 * process (loopback guest), real FIFOs, real fd passing, guest processes'
 * sockets from the AF_VSOCK stand-in, and the device's /proc/<pid>/fd.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closeQuietly,
  connectUnix,
  makePipe,
  recvWithFds,
  sendWithFds,
  socketPair,
} from '../../native-bindings/index.js';
import { hybridConnect, passFd, passFdTracked } from '../../src/broker/hvsock-client.js';
import { StandinVsock } from '../../src/guest-vsock/standin.js';
import type { AcceptedStream } from '../../src/guest-vsock/types.js';
import { fdCount, fdsSettle, startVmm, stopAll, type Vmm } from '../support/cli.js';

let vmm: Vmm;
let guest: StandinVsock;
let nextPort = 2000;

beforeAll(async () => {
  vmm = await startVmm();
  guest = new StandinVsock(vmm.guestDir);
});

afterAll(async () => {
  await stopAll();
});

/** Listens on a fresh guest port; resolves accepted streams one by one. */
async function guestListen(): Promise<{
  port: number;
  next: () => Promise<AcceptedStream>;
  close: () => void;
}> {
  const port = nextPort++;
  const queue: AcceptedStream[] = [];
  const waiting: ((s: AcceptedStream) => void)[] = [];
  const listener = await guest.listen(port, (s) => {
    const w = waiting.shift();
    if (w) w(s);
    else queue.push(s);
  });
  return {
    port,
    next: () => {
      const s = queue.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => listener.close(),
  };
}

function sha256OfSocket(sock: net.Socket): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    sock.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    sock.on('end', () => resolve({ hash: h.digest('hex'), bytes }));
    sock.on('error', reject);
  });
}

/** Writes `bytes` random bytes into `fifo` from a shell pipeline, resolving their SHA-256. */
function writeRandomToFifo(fifo: string, bytes: number, hashFile: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sh = spawn('bash', [
      '-c',
      `head -c ${bytes} /dev/urandom | tee >(sha256sum > '${hashFile}') > '${fifo}'`,
    ]);
    sh.on('exit', async (code) => {
      if (code !== 0) return reject(new Error(`writer exited ${code}`));
      // tee's process substitution may finish just after bash.
      for (let i = 0; i < 200 && !(fs.existsSync(hashFile) && fs.statSync(hashFile).size >= 64); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      resolve(fs.readFileSync(hashFile, 'utf8').slice(0, 64));
    });
  });
}

async function makeFifo(name: string): Promise<string> {
  const p = path.join(vmm.dir, name);
  await new Promise<void>((resolve, reject) => {
    spawn('mkfifo', [p]).on('exit', (c) => (c === 0 ? resolve() : reject(new Error('mkfifo failed'))));
  });
  return p;
}

/** Reads until the peer closes; resolves everything read. */
function readAll(sock: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    sock.on('data', (d: Buffer) => parts.push(d));
    sock.on('end', () => resolve(Buffer.concat(parts)));
    sock.on('error', reject);
  });
}

/**
 * A round trip through the device's event loop, as an event instead of a
 * sleep: a CONNECT to a guest port nobody listens on is refused (the device
 * closes the socket) only after the device has read it and heard the
 * guest's RST, so readiness the device already had (a FIFO hang-up) has
 * been acted on by then.
 */
async function deviceRoundTrip(): Promise<void> {
  await expect(hybridConnect(vmm.hvsock, 64998)).rejects.toThrow(/refused/);
}

/** Resolves once `sock` has received `text`. */
function receive(sock: net.Socket, text: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(got)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.includes(text)) {
        clearTimeout(t);
        sock.off('data', onData);
        resolve(got);
      }
    };
    sock.on('data', onData);
  });
}

describe('passfd', () => {
  it('carries 256 MiB from a FIFO to a guest process byte-exact (SHA-256)', async () => {
    const l = await guestListen();
    const fifo = await makeFifo('big-fifo');
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const hostPort = await passFd(vmm.hvsock, rd, l.port);
    fs.closeSync(rd);
    expect(hostPort).toBeGreaterThanOrEqual(2 ** 30);
    expect(hostPort).toBeLessThan(2 ** 31);
    const stream = await l.next();
    expect(stream.peerPort).toBe(hostPort);
    expect(stream.peerCid).toBe(2);
    const received = sha256OfSocket(new net.Socket({ fd: stream.fd }));
    const sent = await writeRandomToFifo(fifo, 256 * 1024 * 1024, path.join(vmm.dir, 'big.sha'));
    const got = await received;
    expect(got.bytes).toBe(256 * 1024 * 1024);
    expect(got.hash).toBe(sent);
    l.close();
  }, 120_000);

  it("works with a Kata runtime's exact client sequence (passfd\\n, one sendmsg of the port with the fd, OK <port>\\n)", async () => {
    const l = await guestListen();
    const [ours, theirs] = socketPair(false);
    const sock = connectUnix(vmm.hvsock, false);
    fs.writeSync(sock, 'passfd\n');
    expect(sendWithFds(sock, Buffer.from(String(l.port)), [theirs])).toBe(String(l.port).length);
    closeQuietly(theirs);
    const buf = Buffer.alloc(64);
    const reply = recvWithFds(sock, buf, 1);
    const line = buf.subarray(0, reply!.bytes).toString();
    expect(line).toMatch(/^OK \d+\n$/);
    const stream = await l.next();
    expect(stream.peerPort).toBe(Number(line.slice(3)));
    fs.writeSync(ours, 'through the device\n');
    const s = new net.Socket({ fd: stream.fd });
    await receive(s, 'through the device\n');
    s.destroy();
    closeQuietly(ours);
    closeQuietly(sock);
    l.close();
  });

  it('without keep: the FIFO writer leaving ends the stream (EOF in the guest)', async () => {
    const l = await guestListen();
    const fifo = await makeFifo('nokeep-fifo');
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    await passFd(vmm.hvsock, rd, l.port);
    fs.closeSync(rd);
    const stream = await l.next();
    const all = readAll(new net.Socket({ fd: stream.fd }));
    fs.writeFileSync(fifo, 'one\n');
    expect((await all).toString()).toBe('one\n');
    l.close();
  });

  it('with keep: the connection survives the FIFO writer leaving and a new writer arriving', async () => {
    const l = await guestListen();
    const fifo = await makeFifo('keep-fifo');
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    await passFd(vmm.hvsock, rd, l.port, { keep: true });
    fs.closeSync(rd);
    const stream = await l.next();
    const s = new net.Socket({ fd: stream.fd });
    let ended = false;
    s.on('end', () => {
      ended = true;
    });
    const first = receive(s, 'one\n');
    fs.writeFileSync(fifo, 'one\n'); // opens, writes, closes: the writer leaves
    await first;
    await deviceRoundTrip(); // the device has polled since the writer left: a hang-up would be seen
    const second = receive(s, 'two\n');
    fs.writeFileSync(fifo, 'two\n'); // a new writer attaches
    await second;
    expect(ended).toBe(false);
    s.destroy();
    l.close();
  });

  it('refuses a pass to a guest port nobody listens on, and leaks nothing', async () => {
    const baseline = fdCount(vmm.pid);
    const [r, w] = makePipe();
    await expect(passFd(vmm.hvsock, r, 65000)).rejects.toThrow(/refused/);
    closeQuietly(r);
    closeQuietly(w);
    expect(await fdsSettle(vmm.pid, baseline)).toBeLessThanOrEqual(baseline);
  });
});

describe('CONNECT', () => {
  it('connects a plain net client to a guest listener; OK <hostport> then a two-way stream', async () => {
    const l = await guestListen();
    const client = net.createConnection(vmm.hvsock);
    await new Promise((r) => client.once('connect', r));
    // The command and the first stream bytes in one write: those bytes belong to the stream.
    client.write(`CONNECT ${l.port}\nearly bytes|`);
    const ok = await receive(client, '\n');
    expect(ok).toMatch(/^OK \d+\n$/);
    const stream = await l.next();
    expect(stream.peerPort).toBe(Number(ok.slice(3)));
    const g = new net.Socket({ fd: stream.fd, allowHalfOpen: true });
    await receive(g, 'early bytes|');
    client.write('ping');
    await receive(g, 'ping');
    g.write('pong');
    await receive(client, 'pong');
    // Half-close from the host: the guest sees EOF, can still answer.
    const rest = readAll(g);
    client.end();
    expect((await rest).toString()).toBe('');
    const tail = readAll(client);
    g.end('bye');
    expect((await tail).toString()).toBe('bye');
    l.close();
  });

  it('CONNECT to a guest port nobody listens on: the device closes the socket', async () => {
    await expect(hybridConnect(vmm.hvsock, 64999)).rejects.toThrow(/refused/);
  });
});

describe('guest-initiated connections', () => {
  it('a guest process connecting to host port P reaches the host listener on <hvsock>_<P>', async () => {
    const hostPort = 7000;
    const server = net.createServer((c) => {
      c.once('data', (d) => c.end(`pong:${d}`));
    });
    await new Promise<void>((r) => server.listen(`${vmm.hvsock}_${hostPort}`, r));
    const conn = await guest.connect(hostPort);
    expect(conn.localPort).toBeGreaterThan(1023);
    const s = new net.Socket({ fd: conn.fd });
    const all = readAll(s);
    s.write('ping');
    expect((await all).toString()).toBe('pong:ping');
    server.close();
  });

  it('with no host listener the guest gets ECONNREFUSED', async () => {
    await expect(guest.connect(7999)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});

describe('flow control', () => {
  it('a stalled guest reader slows the writer; nothing is lost and the device memory stays bounded', async () => {
    const l = await guestListen();
    const fifo = await makeFifo('stall-fifo');
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    await passFd(vmm.hvsock, rd, l.port);
    fs.closeSync(rd);
    const stream = await l.next();
    const rss = () =>
      Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${vmm.pid}/status`, 'utf8'))![1]) * 1024;
    const rssBefore = rss();
    const total = 64 * 1024 * 1024;
    const writer = writeRandomToFifo(fifo, total, path.join(vmm.dir, 'stall.sha'));
    // The guest does not read for 2 s: the writer must block, not the device buffer.
    await new Promise((r) => setTimeout(r, 2000));
    const rssStalled = rss();
    expect(rssStalled - rssBefore).toBeLessThan(16 * 1024 * 1024);
    const got = await sha256OfSocket(new net.Socket({ fd: stream.fd }));
    expect(got.bytes).toBe(total);
    expect(got.hash).toBe(await writer);
    l.close();
  }, 60_000);
});

describe('bad input', () => {
  /** Sends raw bytes (and fds) on a fresh hvsock connection; resolves when the device closes it. */
  async function sendBad(parts: { bytes: string; fds?: number[] }[]): Promise<string> {
    const sock = connectUnix(vmm.hvsock, false);
    for (const p of parts) {
      if (p.fds) sendWithFds(sock, Buffer.from(p.bytes), p.fds);
      else fs.writeSync(sock, p.bytes);
    }
    const s = new net.Socket({ fd: sock });
    return (await readAll(s)).toString();
  }

  it('each malformed request closes that client, the device keeps serving, and no fd or port leaks', async () => {
    const l = await guestListen();
    const [pr, pw] = makePipe();
    const [pr2, pw2] = makePipe();
    // Warm up the device's lazily-created state, then take the baseline once that connection is gone.
    const warm = await passFdTracked(vmm.hvsock, pr, l.port);
    closeQuietly((await l.next()).fd);
    await warm.closed;
    await deviceRoundTrip();
    const baseline = fdCount(vmm.pid);
    const cases: { name: string; parts: { bytes: string; fds?: number[] }[]; reply?: RegExp }[] = [
      { name: 'unknown word', parts: [{ bytes: 'HELLO 1027\n' }] },
      { name: 'non-numeric port', parts: [{ bytes: 'CONNECT abc\n' }] },
      { name: 'port out of range', parts: [{ bytes: 'CONNECT 99999999999\n' }] },
      { name: 'no newline within 32 bytes', parts: [{ bytes: 'x'.repeat(40) }] },
      { name: 'passfd without an fd', parts: [{ bytes: 'passfd\n' }, { bytes: String(l.port) }] },
      {
        name: 'passfd with two fds',
        parts: [{ bytes: 'passfd\n' }, { bytes: String(l.port), fds: [pr, pr2] }],
      },
      { name: 'passfd with a non-numeric port', parts: [{ bytes: 'passfd\n' }, { bytes: 'abc', fds: [pr] }] },
      {
        name: 'passfd with a bad option',
        parts: [{ bytes: 'passfd\n' }, { bytes: `${l.port} kept`, fds: [pr] }],
      },
      { name: 'an fd with CONNECT', parts: [{ bytes: `CONNECT ${l.port}\n`, fds: [pr] }] },
      {
        name: 'a regular file passed',
        parts: [{ bytes: 'passfd\n' }, { bytes: String(l.port), fds: [fs.openSync('/etc/hostname', 'r')] }],
        // A well-formed passfd the device refuses says why before it closes (extension).
        reply: /^ERR epoll_ctl fd \d+ cannot be polled: EPERM \(operation not permitted\)\n$/,
      },
    ];
    for (const c of cases) {
      const reply = await sendBad(c.parts);
      if (c.reply) expect(reply, c.name).toMatch(c.reply);
      else expect(reply, c.name).toBe('');
    }
    // Still serving: a good pass goes through.
    const port = await passFd(vmm.hvsock, pr2, l.port);
    expect(port).toBeGreaterThan(0);
    closeQuietly((await l.next()).fd);
    expect(await fdsSettle(vmm.pid, baseline)).toBe(baseline);
    expect(vmm.log.text).toMatch(/invalid hybrid-vsock request/);
    for (const fd of [pr, pw, pr2, pw2]) closeQuietly(fd);
    l.close();
  });

  it('a flood of malformed requests writes a bounded number of log lines and is then summed up', async () => {
    const lines = () => (vmm.log.text.match(/invalid hybrid-vsock request/g) ?? []).length;
    const before = lines();
    for (let i = 0; i < 300; i++) expect(await sendBad([{ bytes: 'x'.repeat(40) }])).toBe('');
    // At most one burst (20 lines per 10 s) for 300 bad clients.
    expect(lines() - before).toBeLessThanOrEqual(20);
    // Still serving (the next line let through after the window carries the count: log-limiter tests).
    const l = await guestListen();
    const [pr, pw] = makePipe();
    expect(await passFd(vmm.hvsock, pr, l.port)).toBeGreaterThan(0);
    closeQuietly((await l.next()).fd);
    for (const fd of [pr, pw]) closeQuietly(fd);
    l.close();
  });

  it('accepts 1023 connections and refuses the 1024th cleanly', async () => {
    const l = await guestListen();
    const accepted: number[] = [];
    const pipes: number[][] = [];
    const baseline = fdCount(vmm.pid);
    const ports = new Set<number>();
    for (let i = 0; i < 1023; i++) {
      const p = makePipe();
      pipes.push(p);
      ports.add(await passFd(vmm.hvsock, p[0], l.port));
      closeQuietly(p[0]);
      accepted.push((await l.next()).fd);
    }
    expect(ports.size).toBe(1023);
    const extra = makePipe();
    await expect(passFd(vmm.hvsock, extra[0], l.port)).rejects.toThrow(/refused/);
    expect(vmm.log.text).toMatch(/connection table full/);
    // Closing the guest ends frees the table: the connections go away and the fds with them.
    for (const fd of accepted) closeQuietly(fd);
    expect(await fdsSettle(vmm.pid, baseline, 10_000)).toBe(baseline);
    const again = await passFd(vmm.hvsock, extra[0], l.port);
    expect(again).toBeGreaterThan(0);
    closeQuietly((await l.next()).fd);
    for (const p of [...pipes, extra]) for (const fd of p) closeQuietly(fd);
    l.close();
  }, 120_000);
});
