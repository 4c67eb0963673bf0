/**
 * Readiness of raw fds on Node's own event loop.
 *
 * `FdWatcher` wraps a libuv poll handle (koffi's `koffi.node.poll`, i.e.
 * `uv_poll_t`): callbacks run on the main loop with no thread hop, which keeps
 * a 64-byte round trip through the device in tens of microseconds. libuv
 * aborts the whole process if asked to poll an fd epoll refuses (a regular
 * file, /dev/null) or one it already watches (through koffi, a failed
 * `uv_poll_init` ends in a FATAL ERROR), so the constructor first asks epoll
 * itself and throws a SysError instead. It asks as libuv's own check does
 * (`epoll_ctl` ADD then DEL), on one probe epoll instance made at load and
 * kept for the process's life: a watcher costs no fd of its own, at creation or after
 * (libuv polls every watched fd on the loop's one epoll), so creating one
 * cannot fail with EMFILE. The watcher never closes the fd; its owner must
 * call `close()` on the watcher *before* closing the fd, or libuv would keep
 * watching whatever file next reuses that number.
 */
import koffi, { type node as KoffiNode } from 'koffi';
import { O_CLOEXEC } from './fd.js';
import { c, check, E, errno, SysError } from './libc.js';

export interface Readiness {
  readable: boolean;
  writable: boolean;
  /** The peer hung up (EPOLLHUP/EPOLLRDHUP); a read then returns what is left, then 0. */
  hangup: boolean;
}

const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLLIN = 1;

/**
 * The probe epoll instance (see the module comment), made when this module
 * loads: while the process still has fds to spare, and not in the middle of
 * somebody's fd accounting.
 */
const probe = check(c.epoll_create1(O_CLOEXEC), 'epoll_create1');
const probeEvent = Buffer.alloc(12);
probeEvent.writeUInt32LE(EPOLLIN, 0);

/** Throws a SysError (EPERM for regular files) when epoll cannot watch `fd`. */
export function assertPollable(fd: number): void {
  const ev = probeEvent;
  if (c.epoll_ctl(probe, EPOLL_CTL_ADD, fd, ev) < 0) {
    throw new SysError('epoll_ctl', errno(), `fd ${fd} cannot be polled`);
  }
  c.epoll_ctl(probe, EPOLL_CTL_DEL, fd, ev);
}

/** Fds with a live watcher: libuv aborts the process on a second poll handle for one fd. */
const watched = new Set<number>();

export class FdWatcher {
  private handle: KoffiNode.PollHandle | null;
  private readable = false;
  private writable = false;
  private readonly callback: (ev: KoffiNode.PollEvents) => void;

  constructor(
    readonly fd: number,
    onReady: (ev: Readiness) => void,
  ) {
    if (watched.has(fd)) throw new SysError('uv_poll_init', E.EEXIST, `fd ${fd} already has a watcher`);
    assertPollable(fd);
    // koffi calls back with (status, events), although its .d.ts declares (events) only.
    // A negative status is a poll error: report everything so the owner's next I/O surfaces it.
    const cb = (status: number, ev: KoffiNode.PollEvents) => {
      if (status < 0) onReady({ readable: true, writable: true, hangup: true });
      else onReady({ readable: ev.readable, writable: ev.writable, hangup: ev.disconnect });
    };
    this.callback = cb as unknown as (ev: KoffiNode.PollEvents) => void;
    // Created stopped: poll(fd, opts, cb) starts it, so stop right away and let want() drive it.
    this.handle = koffi.node.poll(fd, { readable: false, writable: false, disconnect: false }, this.callback);
    this.handle.stop();
    watched.add(fd);
  }

  /** Chooses which events wake us. Both false: the handle stops (no wake-ups, fd untouched). */
  want(readable: boolean, writable: boolean): void {
    if (!this.handle) return;
    if (readable === this.readable && writable === this.writable) return;
    this.readable = readable;
    this.writable = writable;
    if (!readable && !writable) this.handle.stop();
    else this.handle.start({ readable, writable, disconnect: readable }, this.callback);
  }

  get wantsRead(): boolean {
    return this.readable;
  }

  get wantsWrite(): boolean {
    return this.writable;
  }

  /** A watcher that is unref'd does not keep the process alive on its own. */
  unref(): void {
    this.handle?.unref();
  }

  get closed(): boolean {
    return this.handle === null;
  }

  /** Stops and releases the poll handle. Does not close the fd. */
  close(): void {
    if (!this.handle) return;
    this.handle.stop();
    this.handle.close();
    this.handle = null;
    watched.delete(this.fd);
  }
}
