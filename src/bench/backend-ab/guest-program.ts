/**
 * The guest side of the backend A/B (backend-ab.ts), run inside the QEMU
 * guest with the host's node over the 9p root: raw AF_VSOCK transfers, the
 * same program whichever vhost-user-vsock backend serves the guest.
 *
 * It listens on three ports and serves one command at a time from the
 * control connection (port 5000, one line each, one line back):
 *   G2H <bytes> <port> [<n>]
 *                       connect to the host (CID 2) on <port>, write <bytes>
 *                       in 64 KiB writes, shut down writing, read the host
 *                       sink's line ("<bytes> <ms>"), answer
 *                       `DONE <guest ms> <host line>`; with <n> > 1, <n>
 *                       connections at once share the bytes
 *                       (shares.ts), each checked against the host's count,
 *                       and the host line is "<sum> <slowest ms>"
 *   H2G [<n>]           accept one connection on port 5001, read it to EOF
 *                       in 256 KiB reads, send back "<bytes> <ms>" (first
 *                       byte to EOF), answer `DONE <bytes> <ms>`; with
 *                       <n> > 1, accept <n> and read them all at once (each
 *                       gets its own count back; the answer has the sum and
 *                       the time from the first byte to the last EOF)
 *   ECHO                accept one connection on port 5002 and echo it until
 *                       EOF (4 KiB reads), answer `DONE <bytes>`
 *   STAT                `STAT <json>`: the guest's virtio interrupt counts,
 *                       and with tracing on, its vsock packets by op (count
 *                       and bytes, each way) from the kernel's own
 *                       tracepoints
 *   TRACE on|off        vsock tracepoint histograms on or off
 *   QUIT                answer BYE and exit (the guest then powers off)
 * Everything is blocking: one transfer runs at a time and nothing else
 * needs the event loop meanwhile, so each byte costs the guest what a plain
 * C program's would (one write per 64 KiB, one read per 256 KiB). Only the
 * several-connection transfers (the stall hunt's, test/vm) poll(2) over
 * non-blocking sockets, so the one-connection figures keep that cost.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import {
  closeQuietly,
  POLLIN,
  POLLOUT,
  pollOnce,
  readFd,
  SHUT_WR,
  setNonBlocking,
  shutdownFd,
  VMADDR_CID_HOST,
  vsockAccept,
  vsockConnectResult,
  vsockConnectStart,
  vsockListen,
  WOULD_BLOCK,
  writeFd,
} from '../../../native-bindings/index.js';
import { CONTROL_PORT, ECHO_PORT, SINK_PORT } from './ports.js';
import { connectionShares } from './shares.js';

const TRACE = '/sys/kernel/tracing';
/** The tracepoints of the guest's virtio-vsock transport: packets it builds (to the host) and receives. */
const EVENTS = { toHost: 'virtio_transport_alloc_pkt', fromHost: 'virtio_transport_recv_pkt' } as const;
const HIST = 'hist:keys=op:vals=hitcount,len';

function writeAll(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) off += writeFd(fd, buf, off, buf.length - off);
}

function acceptBlocking(listenFd: number): number {
  for (;;) {
    pollOnce([{ fd: listenFd, events: POLLIN }], -1);
    const a = vsockAccept(listenFd);
    if (a) {
      setNonBlocking(a.fd, false);
      return a.fd;
    }
  }
}

function connectBlocking(port: number): number {
  const { fd, pending } = vsockConnectStart(VMADDR_CID_HOST, port);
  if (pending) {
    pollOnce([{ fd, events: POLLOUT }], 60_000);
    vsockConnectResult(fd, `host port ${port}`);
  }
  setNonBlocking(fd, false);
  return fd;
}

/** Reads `fd` to EOF into `buf` (discarding); returns bytes and ms from the first byte. */
function sink(fd: number, buf: Buffer): { bytes: number; ms: number } {
  let bytes = 0;
  let t0 = 0;
  for (;;) {
    const n = readFd(fd, buf);
    if (n <= 0) break;
    if (bytes === 0) t0 = performance.now();
    bytes += n;
  }
  return { bytes, ms: bytes === 0 ? 0 : performance.now() - t0 };
}

/** One line from `fd` (blocking), without the newline; null at EOF. */
function lineReader(fd: number): () => string | null {
  let pending = '';
  const buf = Buffer.alloc(4096);
  return () => {
    for (;;) {
      const nl = pending.indexOf('\n');
      if (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        return line;
      }
      const n = readFd(fd, buf);
      if (n <= 0) return null;
      pending += buf.toString('latin1', 0, n);
    }
  };
}

/** Non-blocking sockets of one several-connection transfer, closed whatever happens. */
function withSockets<T>(fds: number[], body: () => T): T {
  try {
    return body();
  } finally {
    for (const fd of fds) closeQuietly(fd);
  }
}

/**
 * Guest → host over `shares.length` connections at once: each writes its
 * share, shuts down writing and reads the host sink's "<bytes> <ms>" line,
 * which must count exactly its share. Returns the sum and the slowest time.
 */
function g2hMany(shares: number[], port: number, chunk: Buffer): { bytes: number; hostMs: number } {
  const fds: number[] = [];
  return withSockets(fds, () => {
    for (const _ of shares) {
      fds.push(connectBlocking(port));
      setNonBlocking(fds[fds.length - 1]!, true);
    }
    const left = [...shares];
    const replies = shares.map(() => '');
    const open = new Set(fds.keys());
    for (const i of open) if (left[i] === 0) shutdownFd(fds[i]!, SHUT_WR);
    const buf = Buffer.alloc(256);
    while (open.size > 0) {
      const live = [...open];
      const ready = pollOnce(
        live.map((i) => ({ fd: fds[i]!, events: left[i]! > 0 ? POLLOUT : POLLIN })),
        -1,
      );
      live.forEach((i, k) => {
        if (ready[k] === 0) return;
        if (left[i]! > 0) {
          const n = writeFd(fds[i]!, chunk, 0, Math.min(chunk.length, left[i]!));
          if (n === WOULD_BLOCK) return;
          left[i]! -= n;
          if (left[i] === 0) shutdownFd(fds[i]!, SHUT_WR);
          return;
        }
        const n = readFd(fds[i]!, buf);
        if (n > 0) replies[i] += buf.toString('latin1', 0, n);
        else if (n === 0) open.delete(i);
      });
    }
    let hostMs = 0;
    replies.forEach((line, i) => {
      const [got, ms] = line.trim().split(/\s+/);
      if (Number(got) !== shares[i])
        throw new Error(`connection ${i + 1}: the host sink got ${got} of ${shares[i]} bytes`);
      hostMs = Math.max(hostMs, Number(ms));
    });
    return { bytes: shares.reduce((s, n) => s + n, 0), hostMs };
  });
}

/**
 * Host → guest over `n` connections at once: accepts them all, reads each
 * to EOF, sends each its own "<bytes> <ms>" line. Returns the sum and the
 * time from the first byte on any connection to the last EOF.
 */
function h2gMany(n: number, listenFd: number, buf: Buffer): { bytes: number; ms: number } {
  const fds: number[] = [];
  return withSockets(fds, () => {
    for (let i = 0; i < n; i++) {
      fds.push(acceptBlocking(listenFd));
      setNonBlocking(fds[i]!, true);
    }
    const got = fds.map(() => 0);
    const first = fds.map(() => 0);
    const open = new Set(fds.keys());
    let t0 = 0;
    while (open.size > 0) {
      const live = [...open];
      const ready = pollOnce(
        live.map((i) => ({ fd: fds[i]!, events: POLLIN })),
        -1,
      );
      live.forEach((i, k) => {
        if (ready[k] === 0) return;
        const r = readFd(fds[i]!, buf);
        if (r === WOULD_BLOCK) return;
        if (r === 0) {
          open.delete(i);
          return;
        }
        const now = performance.now();
        if (got[i] === 0) first[i] = now;
        if (t0 === 0) t0 = now;
        got[i]! += r;
      });
    }
    const ms = performance.now() - t0;
    fds.forEach((fd, i) => {
      setNonBlocking(fd, false);
      const own = got[i] ? performance.now() - first[i]! : 0;
      writeAll(fd, Buffer.from(`${got[i]} ${own.toFixed(1)}\n`));
    });
    return { bytes: got.reduce((s, b) => s + b, 0), ms };
  });
}

function interrupts(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync('/proc/interrupts', 'utf8').split('\n')) {
    const name = /(virtio\S+)\s*$/.exec(line)?.[1];
    if (!name) continue;
    const counts = line.trim().split(/\s+/).slice(1);
    out[name] = counts.filter((c) => /^\d+$/.test(c)).reduce((s, c) => s + Number(c), 0);
  }
  return out;
}

function setTracing(on: boolean): string {
  if (!fs.existsSync(`${TRACE}/trace`)) execFileSync('mount', ['-t', 'tracefs', 'tracefs', TRACE]);
  const done: string[] = [];
  for (const ev of Object.values(EVENTS)) {
    const trigger = `${TRACE}/events/vsock/${ev}/trigger`;
    if (!fs.existsSync(trigger)) {
      done.push(`${ev}: missing`);
      continue;
    }
    fs.writeFileSync(trigger, on ? HIST : `!${HIST}`);
    done.push(`${ev}: ${on ? 'on' : 'off'}`);
  }
  return done.join(', ');
}

/** Packets and payload bytes by op from one tracepoint's histogram ({} when tracing is off). */
function histogram(ev: string): Record<string, { packets: number; bytes: number }> {
  const out: Record<string, { packets: number; bytes: number }> = {};
  let text = '';
  try {
    text = fs.readFileSync(`${TRACE}/events/vsock/${ev}/hist`, 'utf8');
  } catch {
    return out;
  }
  for (const m of text.matchAll(/op:\s*(\d+)\s*}\s*hitcount:\s*(\d+)\s*len:\s*(\d+)/g)) {
    out[m[1]!] = { packets: Number(m[2]), bytes: Number(m[3]) };
  }
  return out;
}

function main(): void {
  const control = vsockListen(CONTROL_PORT);
  const sinkL = vsockListen(SINK_PORT);
  const echoL = vsockListen(ECHO_PORT);
  for (const fd of [control, sinkL, echoL]) setNonBlocking(fd, false);
  process.stdout.write(`GUEST-AB ready, uptime ${fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]} s\n`);
  const chunk = Buffer.alloc(64 * 1024, 0xab);
  const big = Buffer.alloc(256 * 1024);
  for (;;) {
    const c = acceptBlocking(control);
    const next = lineReader(c);
    const say = (s: string) => writeAll(c, Buffer.from(`${s}\n`));
    for (let line = next(); line !== null; line = next()) {
      const [cmd, ...args] = line.trim().split(/\s+/);
      try {
        if (cmd === 'G2H' && Number(args[2] ?? 1) > 1) {
          const t0 = performance.now();
          const r = g2hMany(connectionShares(Number(args[0]), Number(args[2])), Number(args[1]), chunk);
          say(`DONE ${(performance.now() - t0).toFixed(1)} ${r.bytes} ${r.hostMs.toFixed(1)}`);
        } else if (cmd === 'G2H') {
          const total = Number(args[0]);
          const fd = connectBlocking(Number(args[1]));
          const t0 = performance.now();
          for (let sent = 0; sent < total; ) {
            const n = Math.min(chunk.length, total - sent);
            sent += writeFd(fd, chunk, 0, n);
          }
          shutdownFd(fd, SHUT_WR);
          const reply = lineReader(fd)() ?? '';
          const ms = performance.now() - t0;
          closeQuietly(fd);
          say(`DONE ${ms.toFixed(1)} ${reply}`);
        } else if (cmd === 'H2G' && Number(args[0] ?? 1) > 1) {
          const r = h2gMany(Number(args[0]), sinkL, big);
          say(`DONE ${r.bytes} ${r.ms.toFixed(1)}`);
        } else if (cmd === 'H2G') {
          const fd = acceptBlocking(sinkL);
          const r = sink(fd, big);
          writeAll(fd, Buffer.from(`${r.bytes} ${r.ms.toFixed(1)}\n`));
          closeQuietly(fd);
          say(`DONE ${r.bytes} ${r.ms.toFixed(1)}`);
        } else if (cmd === 'ECHO') {
          const fd = acceptBlocking(echoL);
          const b = Buffer.alloc(4096);
          let bytes = 0;
          for (let n = readFd(fd, b); n > 0; n = readFd(fd, b)) {
            writeAll(fd, b.subarray(0, n));
            bytes += n;
          }
          closeQuietly(fd);
          say(`DONE ${bytes}`);
        } else if (cmd === 'STAT') {
          const trace = { toHost: histogram(EVENTS.toHost), fromHost: histogram(EVENTS.fromHost) };
          say(`STAT ${JSON.stringify({ interrupts: interrupts(), trace })}`);
        } else if (cmd === 'TRACE') {
          say(`TRACE ${setTracing(args[0] === 'on')}`);
        } else if (cmd === 'QUIT') {
          say('BYE');
          process.exit(0);
        } else {
          say(`ERR unknown command ${cmd}`);
        }
      } catch (err) {
        say(`ERR ${(err as Error).message}`);
      }
    }
    closeQuietly(c);
  }
}

main();
