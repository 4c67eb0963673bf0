/**
 * Test support: runs the built CLI (dist/) as real child processes and waits
 * for them event-driven (a socket appearing, a line on a stream), with
 * bounded timeouts. Every process started here is killed in `stopAll()`,
 * which then removes every directory `tmpDir()` made, and gets SIGTERM if
 * the test process dies first (a run interrupted by hand leaves no vmm).
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VmmMetrics } from '../../src/device/metrics.js';
import { dieWithParent } from '../../src/util/lifeline.js';

export const CLI = path.resolve(import.meta.dirname, '../../dist/cli/passfd-broker.js');

const started = new Set<ChildProcess>();

export function spawnCli(args: string[], opts: SpawnOptions = {}): ChildProcess {
  // SIGTERM, not SIGKILL: the CLI then stops the stack it started (its own children die with it too).
  const cmd = dieWithParent(process.execPath, [CLI, ...args], 'SIGTERM');
  const child = spawn(cmd.file, cmd.args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  started.add(child);
  child.on('exit', () => started.delete(child));
  return child;
}

export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((c) => stopChild(c)));
  for (const d of madeDirs) fs.rmSync(d, { recursive: true, force: true });
  madeDirs.clear();
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (or signal). */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<number | string | null> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      resolve(code ?? sig);
    });
    child.kill('SIGTERM');
  });
}

export function exited(
  child: ChildProcess,
  timeoutMs = 30_000,
): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`process ${child.pid} did not exit within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.once('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal });
    });
  });
}

/** Collects a stream's text; `waitFor(re)` resolves once it matches. */
export class Captured {
  text = '';
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  constructor(stream: NodeJS.ReadableStream | null) {
    stream?.on('data', (d: Buffer) => {
      this.text += d.toString();
      this.waiters = this.waiters.filter((w) => {
        const m = this.text.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    });
  }
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`timed out waiting for ${re} in: ${this.text.slice(-2000)}`)),
        timeoutMs,
      );
      this.waiters.push({
        re,
        resolve: (mm) => {
          clearTimeout(t);
          resolve(mm);
        },
      });
    });
  }
}

const madeDirs = new Set<string>();

/** A fresh private directory, removed by `stopAll()`. */
export function tmpDir(prefix = 'passfd-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeDirs.add(d);
  return d;
}

/** Waits until `p` exists (polling the filesystem, bounded). */
export async function waitForPath(p: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > end) throw new Error(`${p} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export interface Vmm {
  child: ChildProcess;
  hvsock: string;
  guestDir: string;
  dir: string;
  log: Captured;
  pid: number;
}

/** Starts `passfd-broker vmm` with a loopback guest in a fresh directory and waits until it is ready. */
export async function startVmm(extra: string[] = []): Promise<Vmm> {
  const dir = tmpDir();
  const hvsock = path.join(dir, 'h.sock');
  const guestDir = path.join(dir, 'guest');
  const child = spawnCli(['vmm', '--hvsock', hvsock, '--guest-dir', guestDir, ...extra], {
    env: { ...process.env, PASSFD_LOG: process.env.PASSFD_LOG ?? 'info' },
  });
  const log = new Captured(child.stderr);
  await log.waitFor(/AF_VSOCK stand-in at/);
  return { child, hvsock, guestDir, dir, log, pid: child.pid! };
}

/** Waits until the process's open fd count is back to `baseline` (bounded). */
export async function fdsSettle(pid: number, baseline: number, timeoutMs = 5000): Promise<number> {
  const end = Date.now() + timeoutMs;
  let n = fdCount(pid);
  while (n > baseline && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 25));
    n = fdCount(pid);
  }
  return n;
}

/** SIGUSR2 to a `vmm --metrics <file>`, then the metrics file once its `seq` has moved past `after`. */
export async function vmmMetrics(pid: number, file: string, after: number): Promise<VmmMetrics> {
  process.kill(pid, 'SIGUSR2');
  const end = Date.now() + 30_000;
  for (;;) {
    try {
      const m = JSON.parse(fs.readFileSync(file, 'utf8')) as VmmMetrics;
      if (m.seq > after) return m;
    } catch {
      // not written yet
    }
    if (Date.now() > end) throw new Error(`no metrics past seq ${after} in ${file}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
