/**
 * Support for the access tests: processes run as another, real uid through
 * util-linux `setpriv` (the suite runs as root, as CI does), and a `vmm`
 * started under a given umask. Nothing is mocked: the kernel checks file
 * modes and records SO_PEERCRED. Every process started here is stopped by
 * `stopStarted()`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Captured, CLI, stopChild } from '../support/cli.js';

/** `nobody` on Debian: a uid no test process runs as. */
export const OTHER_UID = 65534;
export const OTHER_GID = 65534;
/** A group nobody is in, granted with `setpriv --groups` where a test needs it. */
export const EXTRA_GID = 4242;

const FIXTURE = path.resolve(import.meta.dirname, 'fixtures/other-user.mjs');

const started = new Set<ChildProcess>();

function track(child: ChildProcess): void {
  started.add(child);
  child.on('exit', () => started.delete(child));
}

/** Stops every process this module started (setpriv'd fixtures, vmm under a umask). */
export async function stopStarted(): Promise<void> {
  await Promise.all([...started].map((c) => stopChild(c)));
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error('the access tests switch uids with setpriv: run them as root');
}

/** Runs fixtures/other-user.mjs as OTHER_UID (with `groups` as supplementary groups). */
export function asOtherUser(args: string[], groups: number[] = []): { child: ChildProcess; out: Captured } {
  const child = spawn(
    'setpriv',
    [
      `--reuid=${OTHER_UID}`,
      `--regid=${OTHER_GID}`,
      groups.length ? `--groups=${groups.join(',')}` : '--clear-groups',
      process.execPath,
      FIXTURE,
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  track(child);
  const out = new Captured(child.stdout);
  const err = new Captured(child.stderr);
  child.on('exit', (code) => {
    if (code) out.text += `\n(stderr: ${err.text})`;
  });
  return { child, out };
}

/** The JSON line a fixture prints last. */
export async function resultOf(run: { out: Captured }, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  const m = await run.out.waitFor(/^(\{.*"(?:outcomes|reply|how)".*\})$/m, timeoutMs);
  return JSON.parse(m[1]!) as Record<string, unknown>;
}

/** `passfd-broker vmm <args>` under `umask <mask>` (e.g. 000, the worst case); resolves once it logs `ready`. */
export async function vmmUnderUmask(
  mask: string,
  args: string[],
  ready: RegExp,
  level = 'info',
): Promise<{ child: ChildProcess; log: Captured }> {
  const vmm = spawn('sh', ['-c', `umask ${mask}; exec "$0" "$@"`, process.execPath, CLI, 'vmm', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PASSFD_LOG: level },
  });
  track(vmm);
  const log = new Captured(vmm.stderr);
  await log.waitFor(ready);
  return { child: vmm, log };
}

/** Writes a config file holding `[hypervisor]` lines; returns its path. */
export function hypervisorConfig(dir: string, lines: string[]): string {
  const p = path.join(dir, `config-${Math.random().toString(36).slice(2)}.toml`);
  fs.writeFileSync(p, `[hypervisor]\n${lines.join('\n')}\n`);
  return p;
}

export function modeOf(p: string): number {
  return fs.statSync(p).mode & 0o777;
}
