// Shared fixtures for the ttrpc tests: real Unix sockets in a temp dir, a
// logger that records its lines, and a raw peer that writes hand-built bytes
// and reads back exactly what the server sent.

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TtrpcServer } from '../../src/ttrpc/server.js';
import { createLogger, type Logger } from '../../src/util/log.js';

export interface TempDir {
  path: string;
  remove(): void;
}

export function tempDir(): TempDir {
  const path = mkdtempSync(join(tmpdir(), 'ttrpc-test-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A logger whose lines are kept for assertions (and not printed). */
export function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger('ttrpc-test', (l) => lines.push(l)), lines };
}

export interface Listening {
  netServer: net.Server;
  /** Sockets accepted so far (destroyed by close()). */
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

/** Listen on `path` and hand each accepted socket to `server.serve`. */
export async function listenTtrpc(server: TtrpcServer, path: string): Promise<Listening> {
  const sockets = new Set<net.Socket>();
  const netServer = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    void server.serve(sock);
  });
  await new Promise<void>((resolve, reject) => {
    netServer.once('error', reject);
    netServer.listen(path, () => resolve());
  });
  return {
    netServer,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => netServer.close(() => resolve()));
    },
  };
}

export function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

/**
 * A peer that speaks raw bytes: everything the server sends is collected;
 * `read(n)` waits for the next n bytes, `readFrame()` for one whole frame.
 */
export class RawPeer {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: (() => void) | undefined;
  ended = false;
  closed = false;

  constructor(
    readonly sock: net.Socket,
    { flowing = true } = {},
  ) {
    sock.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.have += c.length;
      this.wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
    if (!flowing) sock.pause();
  }

  static async connect(path: string, opts?: { flowing?: boolean }): Promise<RawPeer> {
    return new RawPeer(await connectUnix(path), opts);
  }

  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => this.sock.write(bytes, (err) => (err ? reject(err) : resolve())));
  }

  get buffered(): number {
    return this.have;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private async waitFor(pred: () => boolean, what: string): Promise<void> {
    while (!pred()) {
      if (this.ended || this.closed) throw new Error(`connection ended while waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  async read(n: number): Promise<Buffer> {
    await this.waitFor(() => this.have >= n, `${n} bytes (have ${this.have})`);
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(n)];
    this.have -= n;
    return all.subarray(0, n);
  }

  /** Reads one frame: the 10-byte header and its payload, as one buffer. */
  async readFrame(): Promise<Buffer> {
    const header = await this.read(10);
    const payload = await this.read(header.readUInt32BE(0));
    return Buffer.concat([header, payload]);
  }

  /** Resolves when the server has ended the stream (after everything it sent was read). */
  async waitEnd(): Promise<void> {
    while (!this.ended && !this.closed) {
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }
}

/** A promise with its resolve/reject exposed. */
export function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `cond` (for state with no event to wait on) until true or timeout. */
export async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
