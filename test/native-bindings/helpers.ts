// Shared fixtures for the native-binding and device unit tests: temp dirs,
// FIFOs made with mkfifo(1), /proc/self views of this process's fds,
// event-driven waits on raw fds (an FdWatcher, never a sleep loop), and a
// per-test janitor for fds and other cleanups.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { closeQuietly, FdWatcher, type Readiness, readFd, WOULD_BLOCK } from '../../native-bindings/index.js';

export interface TempDir {
  path: string;
  remove(): void;
}

export function tempDir(prefix = 'nb-test-'): TempDir {
  const p = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { path: p, remove: () => fs.rmSync(p, { recursive: true, force: true }) };
}

export interface FdJanitor {
  /** Closes these fds (quietly) after the current test. */
  track(...fds: number[]): void;
  /** Runs `fn` after the current test, once the tracked fds are closed. */
  onCleanup(fn: () => void): void;
}

/**
 * Registers an afterEach (call it at the top level of a test file) that
 * closes every fd passed to `track` during the test, then runs every
 * `onCleanup` callback, in the order they were given.
 */
export function fdJanitor(): FdJanitor {
  const toClose: number[] = [];
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const fd of toClose.splice(0)) closeQuietly(fd);
    for (const c of cleanups.splice(0)) c();
  });
  return {
    track: (...fds) => {
      toClose.push(...fds);
    },
    onCleanup: (fn) => {
      cleanups.push(fn);
    },
  };
}

/** A real FIFO at `p` (mkfifo(1): Node has no mkfifo). */
export function mkfifo(p: string): string {
  execFileSync('mkfifo', [p]);
  return p;
}

/** The fd numbers open in this process right now. */
export function openFds(): number[] {
  return fs
    .readdirSync('/proc/self/fd')
    .map(Number)
    .sort((a, b) => a - b);
}

export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Whether fd number `fd` is open in this process. */
export function isFdOpen(fd: number): boolean {
  try {
    fs.readlinkSync(`/proc/self/fd/${fd}`);
    return true;
  } catch {
    return false;
  }
}

/** O_CLOEXEC as it shows in the flags line of /proc/self/fdinfo (x86-64 and arm64). */
export const O_CLOEXEC_FLAG = 0o2000000;

/** The open-file flags of `fd` as /proc/self/fdinfo shows them (octal in the file). */
export function fdinfoFlags(fd: number): number {
  const text = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s*([0-7]+)$/m.exec(text);
  if (!m) throw new Error(`no flags line in fdinfo of ${fd}: ${text}`);
  return Number.parseInt(m[1]!, 8);
}

/** Rejects after `ms` with `label` unless `p` settles first. */
export function withTimeout<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** Resolves with the first readiness report matching `pred` on `fd` (a watcher for the occasion). */
export function waitFd(
  fd: number,
  want: { readable?: boolean; writable?: boolean },
  ms = 2000,
  pred: (ev: Readiness) => boolean = (ev) =>
    (want.readable === true && (ev.readable || ev.hangup)) || (want.writable === true && ev.writable),
): Promise<Readiness> {
  let watcher: FdWatcher | null = null;
  const p = new Promise<Readiness>((resolve) => {
    watcher = new FdWatcher(fd, (ev) => {
      if (!pred(ev)) return;
      watcher?.close();
      resolve(ev);
    });
    watcher.want(want.readable ?? false, want.writable ?? false);
  });
  return withTimeout(p, ms, `fd ${fd} readiness`).finally(() => (watcher as FdWatcher | null)?.close());
}

/** Reads exactly `n` bytes from a non-blocking fd, waiting for readiness between reads. Rejects at EOF. */
export async function readExactly(fd: number, n: number, ms = 5000): Promise<Buffer> {
  const out = Buffer.alloc(n);
  let got = 0;
  const deadline = Date.now() + ms;
  while (got < n) {
    const r = readFd(fd, out, got, n - got);
    if (r === 0) throw new Error(`EOF after ${got} of ${n} bytes`);
    if (r === WOULD_BLOCK) {
      await waitFd(fd, { readable: true }, Math.max(1, deadline - Date.now()));
      continue;
    }
    got += r;
  }
  return out;
}

/** Reads from a non-blocking fd until EOF; returns everything read. */
export async function readToEof(fd: number, ms = 5000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  const deadline = Date.now() + ms;
  for (;;) {
    const r = readFd(fd, buf);
    if (r === 0) return Buffer.concat(chunks);
    if (r === WOULD_BLOCK) {
      await waitFd(fd, { readable: true }, Math.max(1, deadline - Date.now()));
      continue;
    }
    chunks.push(Buffer.from(buf.subarray(0, r)));
  }
}

/** Deterministic bytes (xorshift32), so a failure is reproducible. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export function patternBytes(n: number, seed: number): Buffer {
  const next = prng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}
