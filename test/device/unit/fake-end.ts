// A scripted LocalEnd (src/device/csm/local-end.ts) for driving a
// VsockConnection without any fd: the test plays the local process. It
// feeds bytes the process "wrote" (`feed`, `endOfStream`), decides how much
// the process's reader takes (`room`), makes reads or writes fail
// (`readError`, `writeError`), and reports readiness the way level-triggered
// epoll would (`signal`: readable if read interest is on and there is data or
// EOF, writable if write interest is on and there is room). It records what
// the connection did: bytes written, interest, shutdownWrite and close calls.

import { type LocalEnd, WOULD_BLOCK } from '../../../src/device/csm/local-end.js';

export interface FakeEndOptions {
  canRead?: boolean;
  canWrite?: boolean;
  slowReaderIsBackpressure?: boolean;
  /** Bytes held before the connection existed (CONNECT's leftover line bytes). */
  preRead?: Buffer;
}

export class FakeEnd implements LocalEnd {
  readonly canRead: boolean;
  readonly canWrite: boolean;
  readonly slowReaderIsBackpressure: boolean;
  /** How many more bytes the local reader takes now (Infinity: everything). */
  room = Number.POSITIVE_INFINITY;
  /** The answer to closedOutright() at EOF (a socket closed outright, not half-closed). */
  outright = false;
  readError: Error | null = null;
  writeError: Error | null = null;
  /** Every chunk the connection wrote, in order. */
  readonly written: Buffer[] = [];
  interest = { read: false, write: false };
  shutdownWrites = 0;
  closeCalls = 0;
  private inbound: Buffer[] = [];
  private eof = false;
  private held: Buffer | null;
  private onReady: ((readable: boolean, writable: boolean) => void) | null = null;

  constructor(opts: FakeEndOptions = {}) {
    this.canRead = opts.canRead ?? true;
    this.canWrite = opts.canWrite ?? true;
    this.slowReaderIsBackpressure = opts.slowReaderIsBackpressure ?? false;
    this.held = opts.preRead ?? null;
  }

  // ─── the test's side ───────────────────────────────────────────────────

  /** The local process writes `bytes` (the connection reads them on its next RW turn). */
  feed(bytes: Buffer | string): this {
    this.inbound.push(Buffer.from(bytes));
    return this;
  }

  /** The local process closes its write side: reads return 0 once the fed bytes are gone. */
  endOfStream(): this {
    this.eof = true;
    return this;
  }

  /** Reports readiness as level-triggered epoll would, for the interest the connection asked for. */
  signal(): void {
    const readable = this.interest.read && (this.inbound.length > 0 || this.eof);
    const writable = this.interest.write && this.room > 0;
    if (readable || writable) this.onReady?.(readable, writable);
  }

  /** The local reader takes `n` more bytes (and the end reports itself writable if asked to). */
  drain(n = Number.POSITIVE_INFINITY): void {
    this.room = n;
    this.signal();
  }

  /** Everything the connection wrote, as one buffer. */
  get output(): Buffer {
    return Buffer.concat(this.written);
  }

  get unread(): number {
    return this.inbound.reduce((n, b) => n + b.length, 0);
  }

  get closed(): boolean {
    return this.closeCalls > 0;
  }

  // ─── LocalEnd ──────────────────────────────────────────────────────────

  get readableNow(): boolean {
    return this.held !== null;
  }

  read(buf: Buffer, off: number, len: number): number {
    this.assertOpen('read');
    if (this.held) {
      const n = Math.min(len, this.held.length);
      this.held.copy(buf, off, 0, n);
      this.held = n < this.held.length ? this.held.subarray(n) : null;
      return n;
    }
    if (this.readError) throw this.readError;
    const first = this.inbound[0];
    if (!first) return this.eof ? 0 : WOULD_BLOCK;
    const n = Math.min(len, first.length);
    first.copy(buf, off, 0, n);
    if (n === first.length) this.inbound.shift();
    else this.inbound[0] = first.subarray(n);
    return n;
  }

  write(buf: Buffer, off = 0, len = buf.length - off): number {
    this.assertOpen('write');
    if (this.writeError) throw this.writeError;
    const n = Math.min(len, this.room);
    if (n === 0) return WOULD_BLOCK;
    this.room -= n;
    this.written.push(Buffer.from(buf.subarray(off, off + n)));
    return n;
  }

  shutdownWrite(): void {
    this.shutdownWrites++;
  }

  closedOutright(): boolean {
    return this.outright;
  }

  watch(onReady: (readable: boolean, writable: boolean) => void): void {
    this.onReady = onReady;
  }

  want(readable: boolean, writable: boolean): void {
    this.interest = { read: readable, write: writable };
  }

  close(): void {
    this.closeCalls++;
    this.onReady = null;
  }

  describe(): string {
    return 'fake';
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new Error(`${what} on a closed end`);
  }
}

/** An Error with an errno name, as native-bindings' SysError carries. */
export function errnoError(code: string): Error {
  return Object.assign(new Error(code), { code });
}
