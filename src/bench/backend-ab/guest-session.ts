/**
 * The host side of the backend A/B's guest program (guest-program.ts): one
 * booted guest, reached through whichever backend serves it with the
 * hybrid-vsock protocol every vhost-user-vsock backend of this kind speaks
 * (`CONNECT <port>` on the Unix socket for host → guest, `<uds>_<port>` for
 * guest → host). Commands go over the control connection one at a time;
 * the transfers' other ends are here: a sink for guest → host on
 * `<uds>_<G2H_PORT>` (reads to EOF, answers "<bytes> <ms>" from the first
 * byte), the writer for host → guest, the round-trip client.
 */
import fs from 'node:fs';
import net from 'node:net';
import { hybridConnect } from '../../broker/hvsock-client.js';
import { CONTROL_PORT, ECHO_PORT, G2H_PORT, SINK_PORT } from './ports.js';

export interface GuestStat {
  interrupts: Record<string, number>;
  /** Packets and payload bytes by op (vsock op number as key), each way, from the guest's tracepoints. */
  trace: {
    toHost: Record<string, { packets: number; bytes: number }>;
    fromHost: Record<string, { packets: number; bytes: number }>;
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no progress within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Lines from a socket, one promise at a time. */
class Lines {
  private buf = '';
  private waiting: ((line: string | null) => void) | null = null;
  private ended = false;

  constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.flush();
    });
    socket.on('end', () => {
      this.ended = true;
      this.flush();
    });
    socket.on('error', () => {
      this.ended = true;
      this.flush();
    });
    socket.resume();
  }

  private flush(): void {
    if (!this.waiting) return;
    const nl = this.buf.indexOf('\n');
    if (nl >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      const w = this.waiting;
      this.waiting = null;
      w(line);
    } else if (this.ended) {
      const w = this.waiting;
      this.waiting = null;
      w(null);
    }
  }

  next(): Promise<string | null> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.flush();
    });
  }
}

export class GuestBench {
  private readonly sinkServer: net.Server;

  private constructor(
    private readonly uds: string,
    private readonly control: Lines,
    sinkServer: net.Server,
  ) {
    this.sinkServer = sinkServer;
  }

  /** Connects to the guest program (retrying while the guest boots), and starts the guest → host sink. */
  static async connect(uds: string, timeoutMs: number, alive: () => boolean): Promise<GuestBench> {
    const until = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (!alive())
        throw new Error(`the guest or its backend exited before the guest program answered (${last})`);
      try {
        const { socket } = await hybridConnect(uds, CONTROL_PORT, 2000);
        const sinkPath = `${uds}_${G2H_PORT}`;
        fs.rmSync(sinkPath, { force: true });
        const server = net.createServer(sinkConnection);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(sinkPath, resolve);
        });
        return new GuestBench(uds, new Lines(socket), server);
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > until) throw new Error(`guest program not reachable within ${timeoutMs} ms: ${last}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Sends one command line and resolves with the answer line (an `ERR` answer rejects). */
  async command(line: string, timeoutMs: number): Promise<string> {
    this.control.socket.write(`${line}\n`);
    const answer = await withTimeout(this.control.next(), timeoutMs, `guest command ${line}`);
    if (answer === null) throw new Error(`the guest closed the control connection during ${line}`);
    if (answer.startsWith('ERR')) throw new Error(`guest: ${answer}`);
    return answer;
  }

  /** `bytes` from the guest to the host sink; the host's time from the first byte to EOF. */
  async g2h(bytes: number, timeoutMs: number): Promise<{ hostMs: number; guestMs: number }> {
    const answer = await this.command(`G2H ${bytes} ${G2H_PORT}`, timeoutMs);
    const [, guestMs, got, hostMs] = answer.split(/\s+/);
    if (Number(got) !== bytes) throw new Error(`the host sink got ${got} of ${bytes} bytes`);
    return { hostMs: Number(hostMs), guestMs: Number(guestMs) };
  }

  /** `bytes` from the host into the guest's sink; the guest's time from the first byte to EOF. */
  async h2g(bytes: number, timeoutMs: number): Promise<{ guestMs: number; hostMs: number }> {
    const answer = this.command('H2G', timeoutMs);
    const t0 = performance.now();
    const { socket } = await hybridConnect(this.uds, SINK_PORT, timeoutMs);
    const block = Buffer.alloc(1 << 20, 0xcd);
    await withTimeout(
      (async () => {
        for (let sent = 0; sent < bytes; sent += block.length) {
          const part = bytes - sent < block.length ? block.subarray(0, bytes - sent) : block;
          if (!socket.write(part)) await new Promise((r) => socket.once('drain', r));
        }
        socket.end();
        const reply = await new Lines(socket).next();
        socket.destroy();
        return reply;
      })(),
      timeoutMs,
      'host → guest transfer',
    );
    const hostMs = performance.now() - t0;
    const [, got, guestMs] = (await answer).split(/\s+/);
    if (Number(got) !== bytes) throw new Error(`the guest sink got ${got} of ${bytes} bytes`);
    return { guestMs: Number(guestMs), hostMs };
  }

  /** `trips` 64-byte round trips through the guest's echo; each trip's time in µs. */
  async roundTrips(trips: number, timeoutMs: number): Promise<number[]> {
    const answer = this.command('ECHO', timeoutMs);
    const { socket } = await hybridConnect(this.uds, ECHO_PORT, timeoutMs);
    socket.resume();
    const msg = Buffer.alloc(64, 0x61);
    const out: number[] = [];
    await withTimeout(
      (async () => {
        for (let i = 0; i < trips; i++) {
          const t0 = performance.now();
          let got = 0;
          const back = new Promise<void>((resolve) => {
            const onData = (d: Buffer) => {
              got += d.length;
              if (got >= msg.length) {
                socket.off('data', onData);
                resolve();
              }
            };
            socket.on('data', onData);
          });
          socket.write(msg);
          await back;
          out.push((performance.now() - t0) * 1000);
        }
        socket.end();
      })(),
      timeoutMs,
      '64 B round trips',
    );
    await answer;
    socket.destroy();
    return out;
  }

  async stat(timeoutMs: number): Promise<GuestStat> {
    const answer = await this.command('STAT', timeoutMs);
    return JSON.parse(answer.slice('STAT '.length)) as GuestStat;
  }

  async close(): Promise<void> {
    try {
      await this.command('QUIT', 5000);
    } catch {
      // the guest is going away anyway
    }
    this.control.socket.destroy();
    await new Promise<void>((r) => this.sinkServer.close(() => r()));
  }
}

/** The guest → host sink: reads to EOF, answers "<bytes> <ms from the first byte>". */
function sinkConnection(s: net.Socket): void {
  let bytes = 0;
  let t0 = 0;
  s.on('data', (d: Buffer) => {
    if (bytes === 0) t0 = performance.now();
    bytes += d.length;
  });
  s.on('end', () => {
    s.end(`${bytes} ${(bytes ? performance.now() - t0 : 0).toFixed(1)}\n`);
  });
  s.on('error', () => s.destroy());
}
