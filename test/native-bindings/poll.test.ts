// native-bindings/poll.ts (FdWatcher on libuv's poll handle) with real pipes
// and files: readable when a pipe has bytes, writable when it has room, hangup
// when the last writer closes; a regular file is refused with a SysError EPERM
// before libuv sees it (libuv would abort the process); want(false, false) and
// close() stop callbacks, proven event-driven with a second watcher as a
// sentinel (when the sentinel fires, the loop has polled after the writes).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import {
  assertPollable,
  closeFd,
  closeQuietly,
  FdWatcher,
  makePipe,
  type Readiness,
  readFd,
  SysError,
  socketPair,
  writeFd,
} from '../../native-bindings/index.js';
import { tempDir, withTimeout } from './helpers.js';

const toClose: number[] = [];
const watchers: FdWatcher[] = [];
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
  for (const fd of toClose.splice(0)) closeQuietly(fd);
  for (const c of cleanups.splice(0)) c();
});

function pipe(): [number, number] {
  const p = makePipe(true);
  toClose.push(...p);
  return p;
}

/** A watcher whose reports are queued; `next()` resolves with the next one. */
function watch(fd: number) {
  const events: Readiness[] = [];
  let wake: (() => void) | null = null;
  const w = new FdWatcher(fd, (ev) => {
    events.push(ev);
    wake?.();
  });
  watchers.push(w);
  return {
    w,
    events,
    async next(ms = 2000): Promise<Readiness> {
      if (events.length === 0) {
        await withTimeout(
          new Promise<void>((resolve) => {
            wake = resolve;
          }),
          ms,
          `watcher on fd ${fd}`,
        );
        wake = null;
      }
      return events.shift()!;
    },
  };
}

describe('FdWatcher', () => {
  it('fires readable when a pipe gets bytes', async () => {
    const [r, w] = pipe();
    const rw = watch(r);
    rw.w.want(true, false);
    expect(rw.w.wantsRead).toBe(true);
    expect(rw.w.wantsWrite).toBe(false);
    writeFd(w, Buffer.from('x'));
    const ev = await rw.next();
    expect(ev.readable).toBe(true);
    expect(ev.hangup).toBe(false);
  });

  it('fires writable on a pipe with room', async () => {
    const [, w] = pipe();
    const ww = watch(w);
    ww.w.want(false, true);
    const ev = await ww.next();
    expect(ev.writable).toBe(true);
  });

  it('fires hangup when the writer closes (for a pipe: once the bytes left are read)', async () => {
    const [r, w] = pipe();
    const rw = watch(r);
    rw.w.want(true, false);
    writeFd(w, Buffer.from('tail'));
    closeFd(w);
    // epoll says POLLIN|POLLHUP while bytes remain; libuv turns a hang-up into
    // `disconnect` only when POLLHUP comes alone (pipes have no EPOLLRDHUP), so
    // the reader sees `readable` until it has drained the pipe, then `hangup`.
    const buf = Buffer.alloc(8);
    const got: Buffer[] = [];
    let ev = await rw.next();
    for (let turns = 0; !ev.hangup && turns < 100; turns++) {
      expect(ev.readable).toBe(true);
      const n = readFd(r, buf);
      if (n > 0) got.push(Buffer.from(buf.subarray(0, n)));
      ev = await rw.next();
    }
    expect(ev.hangup).toBe(true);
    expect(Buffer.concat(got).toString()).toBe('tail');
    expect(readFd(r, buf)).toBe(0);
  });

  it('fires hangup when a socket peer closes', async () => {
    const [a, b] = socketPair(true);
    toClose.push(a);
    const aw = watch(a);
    aw.w.want(true, false);
    closeFd(b);
    let ev = await aw.next();
    while (!ev.hangup) ev = await aw.next();
    expect(ev.hangup).toBe(true);
  });

  it('refuses a regular file with SysError EPERM, and the process survives', () => {
    const d = tempDir('nb-poll-');
    cleanups.push(d.remove);
    const fd = fs.openSync(path.join(d.path, 'regular'), 'w+');
    toClose.push(fd);
    let err: unknown;
    try {
      watchers.push(new FdWatcher(fd, () => {}));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EPERM');
    expect((err as SysError).syscall).toBe('epoll_ctl');
    expect(() => assertPollable(fd)).toThrow(SysError);
    // Still alive, and the fd is untouched.
    expect(fs.fstatSync(fd).isFile()).toBe(true);
  });

  it("costs no fd: a hundred watchers (created, armed, closed) leave the process's fd count as it was", () => {
    const pairs = Array.from({ length: 100 }, () => pipe());
    // The probe epoll is made by the process's first check; take the count after one.
    assertPollable(pairs[0]![0]);
    const before = fs.readdirSync('/proc/self/fd').length;
    const ws = pairs.map(([r]) => watch(r).w);
    for (const w of ws) w.want(true, false);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
    for (const w of ws) w.close();
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('creates, fires and closes watchers in a process out of fds (EMFILE)', () => {
    const fixture = fileURLToPath(new URL('./fixtures/watch-at-emfile.ts', import.meta.url));
    const res = spawnSync('prlimit', ['--nofile=64:64', process.execPath, '--import', 'tsx', fixture], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(res.stderr).not.toContain('FATAL ERROR');
    expect(res.stdout).toMatch(/^emfile \d+$/m);
    expect(res.stdout).toContain('watched');
    expect(res.status).toBe(0);
  });

  it('refuses an fd number that is not open with SysError EBADF', () => {
    // Not a just-closed number: assertPollable's own epoll_create1 would reuse
    // the lowest free fd, and epoll_ctl on the epoll fd itself says EINVAL.
    const notOpen = 900_000;
    let err: unknown;
    try {
      watchers.push(new FdWatcher(notOpen, () => {}));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).code).toBe('EBADF');
  });

  it('is created stopped: no callback until want()', async () => {
    const [r, w] = pipe();
    const [sr, sw] = pipe();
    const rw = watch(r);
    const sentinel = watch(sr);
    sentinel.w.want(true, false);
    writeFd(w, Buffer.from('x'));
    writeFd(sw, Buffer.from('x'));
    await sentinel.next();
    expect(rw.events).toHaveLength(0);
    rw.w.want(true, false);
    expect((await rw.next()).readable).toBe(true);
  });

  it('want(false, false) stops callbacks on a still-readable fd', async () => {
    const [r, w] = pipe();
    const [sr, sw] = pipe();
    const rw = watch(r);
    rw.w.want(true, false);
    writeFd(w, Buffer.from('x'));
    await rw.next();
    rw.w.want(false, false);
    rw.events.length = 0;
    const sentinel = watch(sr);
    sentinel.w.want(true, false);
    writeFd(sw, Buffer.from('x'));
    await sentinel.next();
    await sentinel.next(); // level-triggered: a second loop turn has passed
    expect(rw.events).toHaveLength(0);
  });

  it('close() stops callbacks and leaves the fd open', async () => {
    const [r, w] = pipe();
    const [sr, sw] = pipe();
    const rw = watch(r);
    rw.w.want(true, false);
    rw.w.close();
    expect(rw.w.closed).toBe(true);
    rw.w.close(); // idempotent
    rw.w.want(true, true); // no-op once closed
    const sentinel = watch(sr);
    sentinel.w.want(true, false);
    writeFd(w, Buffer.from('x'));
    writeFd(sw, Buffer.from('x'));
    await sentinel.next();
    await sentinel.next();
    expect(rw.events).toHaveLength(0);
    const buf = Buffer.alloc(1);
    expect(readFd(r, buf)).toBe(1);
  });

  it('a new watcher can watch the fd after the old one closed', async () => {
    const [r, w] = pipe();
    const first = watch(r);
    first.w.want(true, false);
    first.w.close();
    const second = watch(r);
    second.w.want(true, false);
    writeFd(w, Buffer.from('x'));
    expect((await second.next()).readable).toBe(true);
  });

  it('refuses a second watcher on an fd already watched with a SysError, instead of killing the process', () => {
    // Regression (was a bug, now fixed): native-bindings/poll.ts FdWatcher's constructor only guards against
    // fds epoll refuses (assertPollable); its own module comment says libuv
    // also aborts for an fd it already watches, and that case is not guarded:
    // `new FdWatcher(fd)` on an fd with a live watcher ends the process with
    // "FATAL ERROR: Error::New napi_get_last_error_info" from koffi. Fix: keep
    // a module-level Set of watched fds; throw SysError EEXIST from the
    // constructor when `fd` is in it; delete it in close().
    const fixture = fileURLToPath(new URL('./fixtures/double-watch.ts', import.meta.url));
    const res = spawnSync(process.execPath, ['--import', 'tsx', fixture], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(res.stderr).not.toContain('FATAL ERROR');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/^threw E\w+$/m);
    expect(res.stdout).toContain('rewatched');
  });
});
