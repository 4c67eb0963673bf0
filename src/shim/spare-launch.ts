/**
 * Starting a warm spare shim (spare.ts) for the next task's `start`: a shim
 * starts one as soon as it serves its task, when none waits already; a
 * spare that takes a task starts its successor the same way. How long a
 * spare may wait for a task comes from `[runtime] shim_spare_idle_s` (0:
 * none) of the configuration `start` found, and is handed down the chain in
 * the environment, with the priority a shim runs at (a spare waits at a
 * lower one and takes its shim's back when it takes a task).
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import type { Logger } from '../util/log.js';
import type { ShimFlags } from './flags.js';
import { liveSpare, spareDirFor } from './spare-dir.js';

/** The environment variable that carries the idle time down the chain (milliseconds). */
export const SPARE_IDLE_ENV = 'PASSFD_SHIM_SPARE_IDLE_MS';
/** The environment variable with the priority (nice value) a spare takes back with a task. */
export const SPARE_PRIORITY_ENV = 'PASSFD_SHIM_PRIORITY';
/** How much nicer than its shim a spare is while it loads and waits. */
export const SPARE_NICENESS = 10;

/** The priority a spare takes back with its task (that of the shim that started the chain). */
export function shimPriorityFromEnv(env: NodeJS.ProcessEnv = process.env): number | null {
  const p = Number(env[SPARE_PRIORITY_ENV]);
  return env[SPARE_PRIORITY_ENV] !== undefined && Number.isInteger(p) && p >= -20 && p <= 19 ? p : null;
}

export function spareIdleFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const ms = Number(env[SPARE_IDLE_ENV]);
  return Number.isInteger(ms) && ms > 0 ? ms : 0;
}

/**
 * Starts a spare for (containerd, namespace) now, unless one waits already:
 * at a lower priority, so that it loads while this shim's task starts
 * without slowing it (measured: starting it a second later instead left
 * the next start without a spare whenever starts came closer together).
 */
export function startSpare(flags: ShimFlags, idleMs: number, log: Logger): void {
  if (liveSpare(spareDirFor(flags.address, flags.namespace))) return;
  const priority = shimPriorityFromEnv() ?? os.getPriority();
  try {
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        process.argv[1]!,
        '-namespace',
        flags.namespace,
        '-address',
        flags.address,
        '-publish-binary',
        flags.publishBinary,
        ...(flags.debug ? ['-debug'] : []),
        'spare',
      ],
      {
        // Its own session, like every shim: containerd's signals are not its own.
        detached: true,
        stdio: 'ignore',
        cwd: '/',
        env: { ...process.env, [SPARE_IDLE_ENV]: String(idleMs), [SPARE_PRIORITY_ENV]: String(priority) },
      },
    );
    child.on('error', (err) => log.warn(`cannot start a spare shim: ${err.message}`));
    child.unref();
    try {
      if (child.pid) os.setPriority(child.pid, Math.min(19, priority + SPARE_NICENESS));
    } catch {
      // Not allowed to: it competes as an equal.
    }
    log.debug(`started a spare shim (pid ${child.pid}, waits ${idleMs} ms)`);
  } catch (err) {
    log.warn(`cannot start a spare shim: ${(err as Error).message}`);
  }
}
