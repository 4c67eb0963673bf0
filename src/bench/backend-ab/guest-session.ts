/**
 * The host side of the backend A/B's guest program (guest-program.ts): one
 * booted guest, reached through whichever backend serves it with the
 * hybrid-vsock protocol every vhost-user-vsock backend of this kind speaks
 * (`CONNECT <port>` on the Unix socket for host → guest, `<uds>_<port>` for
 * guest → host). Commands go over the control connection one at a time;
 * the transfers' other ends are here: a sink for guest → host on
 * `<uds>_<G2H_PORT>` (reads to EOF, answers "<bytes> <ms>" from the first
 * byte), the writer for host → guest, the round-trip client.
 *
 * A transfer fails when no byte moves for its stall bound (bytes the sink
 * received, bytes the host → guest writer handed to the socket), and in any
 * case after its total bound: a slow transfer under a loaded machine is not
 * a stall, one that stands still is.
 */
import fs from 'node:fs';
import net from 'node:net';
import { hybridConnect } from '../../broker/hvsock-client.js';
import { CONTROL_PORT, ECHO_PORT, G2H_PORT, SINK_PORT } from './ports.js';
import { connectionShares } from './shares.js';

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

/** Bytes moved so far by this session's transfers, either way: what the stall bound watches. */
interface Progress {
  bytes: number;
}

/** `p`, failing when `progress` stands still for `stallMs` or after `totalMs` in all. */
function withProgress<T>(
  p: Promise<T>,
  progress: Progress,
  stallMs: number,
  totalMs: number,
  what: string,
): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const start = Date.now();
  let seen = progress.bytes;
  let movedAt = start;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setInterval(() => {
        const now = Date.now();
        if (progress.bytes !== seen) {
          seen = progress.bytes;
          movedAt = now;
        }
        if (now - movedAt >= stallMs)
          reject(
            new Error(`${what}: no progress for ${stallMs / 1000} s (${seen} bytes moved in the session)`),
          );
        else if (now - start >= totalMs) reject(new Error(`${what}: not done within ${totalMs / 1000} s`));
      }, 250);
    }),
  ]).finally(() => clearInterval(t));
}

/** "host → guest transfer (4 connections)": what a failed transfer was. */
function transferName(direction: string, connections: number): string {
  return `${direction} transfer (${connections} connection${connections > 1 ? 's' : ''})`;
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
    private readonly progress: Progress,
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
        const progress: Progress = { bytes: 0 };
        const server = net.createServer((s) => sinkConnection(s, progress));
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(sinkPath, resolve);
        });
        return new GuestBench(uds, new Lines(socket), server, progress);
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > until) throw new Error(`guest program not reachable within ${timeoutMs} ms: ${last}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Sends one command line and resolves with the answer line (an `ERR` answer rejects). */
  command(line: string, timeoutMs: number): Promise<string> {
    return withTimeout(this.ask(line), timeoutMs, `guest command ${line}`);
  }

  private async ask(line: string): Promise<string> {
    this.control.socket.write(`${line}\n`);
    const answer = await this.control.next();
    if (answer === null) throw new Error(`the guest closed the control connection during ${line}`);
    if (answer.startsWith('ERR')) throw new Error(`guest: ${answer}`);
    return answer;
  }

  /**
   * `bytes` from the guest to the host sink over `connections` connections
   * at once (sharing the bytes); the host's time from the first byte to EOF
   * (the slowest connection's). Fails when nothing moves for `stallMs`.
   */
  async g2h(
    bytes: number,
    timeoutMs: number,
    connections = 1,
    stallMs = timeoutMs,
  ): Promise<{ hostMs: number; guestMs: number }> {
    const line = connections > 1 ? `G2H ${bytes} ${G2H_PORT} ${connections}` : `G2H ${bytes} ${G2H_PORT}`;
    const what = transferName('guest → host', connections);
    const answer = await withProgress(this.ask(line), this.progress, stallMs, timeoutMs, what);
    const [, guestMs, got, hostMs] = answer.split(/\s+/);
    if (Number(got) !== bytes) throw new Error(`the host sink got ${got} of ${bytes} bytes`);
    return { hostMs: Number(hostMs), guestMs: Number(guestMs) };
  }

  /**
   * `bytes` from the host into the guest's sink over `connections`
   * connections at once (sharing the bytes, each checked by the guest's
   * count); the guest's time from the first byte to the last EOF. Fails
   * when nothing moves for `stallMs`.
   */
  async h2g(
    bytes: number,
    timeoutMs: number,
    connections = 1,
    stallMs = timeoutMs,
  ): Promise<{ guestMs: number; hostMs: number }> {
    const answer = this.ask(connections > 1 ? `H2G ${connections}` : 'H2G');
    answer.catch(() => undefined); // awaited below; a failing send must not leave it unhandled
    const t0 = performance.now();
    const what = transferName('host → guest', connections);
    const block = Buffer.alloc(1 << 20, 0xcd);
    const send = async (share: number, i: number) => {
      const { socket } = await hybridConnect(this.uds, SINK_PORT, timeoutMs);
      const reply = new Lines(socket); // from now on a reset socket is a failed transfer, not an uncaught error
      try {
        for (let sent = 0; sent < share && !socket.destroyed; sent += block.length) {
          const part = share - sent < block.length ? block.subarray(0, share - sent) : block;
          const flushed = socket.write(part, () => {
            this.progress.bytes += part.length;
          });
          if (!flushed)
            await new Promise((r) => {
              socket.once('drain', r);
              socket.once('close', r);
            });
        }
        socket.end();
        const line = (await reply.next()) ?? '';
        if (Number(line.split(/\s+/)[0]) !== share)
          throw new Error(`connection ${i + 1}: the guest sink got ${line || 'nothing'} of ${share} bytes`);
      } finally {
        socket.destroy();
      }
    };
    await withProgress(
      Promise.all(connectionShares(bytes, connections).map(send)).then(() => answer),
      this.progress,
      stallMs,
      timeoutMs,
      what,
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
function sinkConnection(s: net.Socket, progress: Progress): void {
  let bytes = 0;
  let t0 = 0;
  s.on('data', (d: Buffer) => {
    if (bytes === 0) t0 = performance.now();
    bytes += d.length;
    progress.bytes += d.length;
  });
  s.on('end', () => {
    s.end(`${bytes} ${(bytes ? performance.now() - t0 : 0).toFixed(1)}\n`);
  });
  s.on('error', () => s.destroy());
}
