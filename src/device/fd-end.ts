/**
 * A connection's local end over a non-blocking fd (csm/local-end.ts): a
 * socket (a CONNECT client, `<hvsock>_<P>`, a loopback guest process's
 * socketpair end) or a pipe passed with passfd. Reads and writes are read(2)
 * and write(2); readiness comes from an FdWatcher on Node's loop, created
 * when the endpoint starts watching the end (`watch`), which is also where a
 * file epoll cannot watch (a regular file) is refused, before anything is
 * registered.
 *
 * Socket specifics: the peer's end of stream becomes SHUT_WR, so the local
 * reader sees EOF while it can still write; at read EOF, POLLHUP tells a
 * socket closed outright (both directions) from a half-close. A pipe has
 * neither: its reader sees EOF when the end closes, and its read EOF is
 * always a half-close.
 *
 * `preRead`: stream bytes already read from the fd before the connection
 * existed (what followed a `CONNECT <port>\n` line); reads return them first.
 *
 * Ownership: the end owns the fd from construction on (if the constructor
 * throws, the caller still does) and closes it in `close()`, after its
 * watcher, as libuv requires.
 */
import {
  accessMode,
  closeQuietly,
  FdWatcher,
  fdKind,
  WOULD_BLOCK as NATIVE_WOULD_BLOCK,
  POLLHUP,
  pollOnce,
  readFd,
  SHUT_WR,
  shutdownFd,
  writeFd,
} from '../../native-bindings/index.js';
import type { LocalEnd, WOULD_BLOCK } from './csm/local-end.js';

// The connection compares with its own constant: they must be the same value (checked at compile time).
const sameWouldBlock: typeof WOULD_BLOCK = NATIVE_WOULD_BLOCK;
void sameWouldBlock;

export interface FdEndOptions {
  /** Stream bytes read from the fd before the connection existed; read first. */
  preRead?: Buffer | undefined;
}

export class FdEnd implements LocalEnd {
  readonly canRead: boolean;
  readonly canWrite: boolean;
  readonly slowReaderIsBackpressure: boolean = false;
  protected readonly isSocket: boolean;
  #fd: number;
  #watcher: FdWatcher | null = null;
  #preRead: Buffer | null;

  constructor(fd: number, opts: FdEndOptions = {}) {
    const mode = accessMode(fd);
    this.canRead = mode !== 'w';
    this.canWrite = mode !== 'r';
    this.isSocket = fdKind(fd) === 'socket';
    this.#preRead = opts.preRead && opts.preRead.length > 0 ? opts.preRead : null;
    this.#fd = fd;
  }

  /** The fd (-1 once closed). */
  get fd(): number {
    return this.#fd;
  }

  get readableNow(): boolean {
    return this.#preRead !== null;
  }

  read(buf: Buffer, off: number, len: number): number {
    const pre = this.#preRead;
    if (pre) {
      const n = Math.min(len, pre.length);
      pre.copy(buf, off, 0, n);
      this.#preRead = n < pre.length ? pre.subarray(n) : null;
      return n;
    }
    return readFd(this.#fd, buf, off, len);
  }

  write(buf: Buffer, off?: number, len?: number): number {
    return writeFd(this.#fd, buf, off, len);
  }

  shutdownWrite(): void {
    if (!this.isSocket) return;
    try {
      shutdownFd(this.#fd, SHUT_WR);
    } catch {
      // The local peer is gone already: nothing to tell it.
    }
  }

  closedOutright(): boolean {
    return this.isSocket && (pollOnce([{ fd: this.#fd, events: 0 }])[0]! & POLLHUP) !== 0;
  }

  watch(onReady: (readable: boolean, writable: boolean) => void): void {
    if (this.#watcher) throw new Error(`fd ${this.#fd} is watched already`);
    this.#watcher = new FdWatcher(this.#fd, (ev) => onReady(ev.readable || ev.hangup, ev.writable));
  }

  want(readable: boolean, writable: boolean): void {
    this.#watcher?.want(readable, writable);
  }

  close(): void {
    this.#watcher?.close();
    this.#watcher = null;
    closeQuietly(this.#fd);
    this.#fd = -1;
  }

  describe(): string {
    const w = this.#watcher;
    return `fd=${this.#fd} watch=${w?.wantsRead ? 'r' : ''}${w?.wantsWrite ? 'w' : ''}`;
  }
}
