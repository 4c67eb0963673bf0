/**
 * A warm spare shim: a shim process that has already paid Node's start-up
 * and loaded every module a shim runs (the Task service, the device, the
 * loopback guest, the agent, the broker), bound a socket, and waits for a
 * task. Most of a container's start-to-exit time through this runtime was
 * that start-up (~150 of ~250 ms for `ctr run --rm … true`), which a spare
 * takes off the critical path.
 *
 * States (spare-dir.ts has the files):
 *
 *   WAITING ──(a `start` claims it: claimed/ made, then id and bundle)──▶ TAKEN
 *      │                                                                  │
 *      │ idle time over: it claims itself (mkdir claimed/ fails           │ the directory is removed (no later
 *      │ if a `start` was first: then TAKEN) ──▶ gone                     │ `start` finds it), cwd = bundle,
 *      │                                                                  │ the bundle's `log` FIFO becomes
 *   claimed/ but no id or bundle within CLAIM_TIMEOUT_MS ──▶ gone         ▼ stdout and stderr; then a shim
 *                                                                     (serve.ts runShim) on the same
 *                                                                     socket, as if `start` had launched it
 *
 * The `start` that claims it (the shell wrapper) has written the bundle's
 * `address` and printed the spare's address, so containerd's first request
 * (Create) reaches it on the socket it bound while waiting; connections
 * that come first wait, paused. A spare starts no guest while it waits
 * (Create boots the guest its runtime options ask for) and holds no task's
 * files. It is a fresh process for every task: a shim that served a task
 * is never reused.
 *
 * Started by a serving shim (spare-launch.ts); one per containerd and
 * namespace: a second one finds the first alive and exits.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dup2Fd } from '../../native-bindings/index.js';
import { createLogger } from '../util/log.js';
import { isValidTaskId, SOCKET_DIR, toAddress } from './address.js';
import type { ShimFlags } from './flags.js';
import { identify, isAlive } from './process-tree.js';
import { bind, PausedListener, runShim, setUpLogging } from './serve.js';
import {
  readClaim,
  readSpare,
  removeSpareDir,
  SPARE_ROOT,
  spareDirFor,
  writeSpareRecord,
} from './spare-dir.js';
import { shimPriorityFromEnv, spareIdleFromEnv } from './spare-launch.js';

/** How long a claimant may take between making claimed/ and writing the task's id and bundle. */
export const CLAIM_TIMEOUT_MS = 5000;

/** Every module a shim loads while it serves a task, loaded while the spare waits. */
function preload(): Promise<unknown> {
  return Promise.all([
    import('./config.js'),
    import('./sandbox-slot.js'),
    import('./sandbox.js'),
    import('./state-file.js'),
    import('./rootfs.js'),
    import('./task-service.js'),
    import('./events.js'),
    import('./version.js'),
    import('../ttrpc/server.js'),
    import('../broker/broker.js'),
    import('../device/hybrid-device.js'),
    import('../device/transport/loopback/loopback-transport.js'),
    import('../access/context.js'),
    import('../access/policy.js'),
    import('../agent/agent.js'),
    import('../guest-vsock/standin.js'),
  ]);
}

/** Resolves with the claim, or null when the spare should go (idle, or a claim that never completed). */
function waitForClaim(dir: string, idleMs: number): Promise<{ id: string; bundle: string } | null> {
  return new Promise((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    let watcher: fs.FSWatcher | null = null;
    const done = (claim: { id: string; bundle: string } | null) => {
      for (const t of timers) clearTimeout(t);
      watcher?.close();
      watcher = null;
      resolve(claim);
    };
    let claimSeen = false;
    const check = () => {
      // Removed under it (a cleanup): nobody can claim it any more.
      if (!fs.existsSync(dir)) return done(null);
      const claim = readClaim(dir);
      if (claim) return done(claim);
      if (!claimSeen && fs.existsSync(path.join(dir, 'claimed'))) {
        claimSeen = true;
        timers.push(setTimeout(() => done(readClaim(dir)), CLAIM_TIMEOUT_MS));
        // The claimant writes id and bundle right after mkdir: look again shortly.
        const poll = () => {
          const c = readClaim(dir);
          if (c) done(c);
          else timers.push(setTimeout(poll, 2));
        };
        poll();
      }
    };
    watcher = fs.watch(dir, { persistent: true }, check);
    watcher.on('error', () => {});
    timers.push(
      setTimeout(() => {
        try {
          // Nobody took it: claim it ourselves, so that no `start` can from now on.
          fs.mkdirSync(path.join(dir, 'claimed'));
          done(null);
        } catch {
          check(); // a `start` was first: serve its task
        }
      }, idleMs),
    );
    check();
  });
}

/** How old a spare's directory without a complete record may be before it counts as a dead start. */
const START_TIMEOUT_MS = 30_000;

/** A directory a spare made but never finished (it died starting); a younger one is a spare starting now. */
function isStale(dir: string): boolean {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  return st !== undefined && Date.now() - st.mtimeMs > START_TIMEOUT_MS;
}

export async function runSpare(flags: ShimFlags): Promise<void> {
  const idleMs = spareIdleFromEnv();
  if (idleMs === 0) return;
  const dir = spareDirFor(flags.address, flags.namespace);
  const there = readSpare(dir);
  if (there && isAlive(there.process)) return; // one waits already (or is being claimed)
  if (there || isStale(dir)) removeSpareDir(dir); // a dead spare's
  fs.mkdirSync(SPARE_ROOT, { recursive: true, mode: 0o700 });
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch {
    return; // another spare is starting
  }
  const socketPath = path.join(SOCKET_DIR, `passfd-spare-${randomBytes(12).toString('hex')}`);
  const listener = new PausedListener();
  const goAway = () => {
    listener.server.close();
    fs.rmSync(socketPath, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await bind(listener.server, socketPath);
    await preload();
    writeSpareRecord(
      dir,
      { address: flags.address, namespace: flags.namespace },
      { process: identify(process.pid)!, address: toAddress(socketPath) },
    );
  } catch {
    goAway();
    return;
  }
  const onSignal = () => {
    goAway();
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, onSignal);
  const waited = performance.now();
  const claim = await waitForClaim(dir, idleMs);
  if (!claim || !isValidTaskId(claim.id) || !path.isAbsolute(claim.bundle)) {
    goAway();
    process.exit(0);
  }
  const { id, bundle } = claim;
  // The shim's own handlers follow (runShim): a signal then ends the task's shim properly.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.off(sig, onSignal);
  // From here on this process is the task's shim: no later `start` may find it.
  fs.rmSync(dir, { recursive: true, force: true });
  // A shim's priority again, not a waiting spare's.
  try {
    os.setPriority(shimPriorityFromEnv() ?? 0);
  } catch {
    // Not allowed to raise it (not root): it stays as it waited.
  }
  process.chdir(bundle);
  takeLogFifo(bundle);
  const taskFlags: ShimFlags = { ...flags, id, bundle };
  setUpLogging(taskFlags);
  const log = createLogger(`passfd-shim[${flags.namespace}/${id}]`);
  log.info(
    `a warm spare (pid ${process.pid}) takes task ${id} after ${Math.round(performance.now() - waited)} ms`,
  );
  await runShim({ flags: taskFlags, bundle, log, socketPath, listener, spares: true });
}

/**
 * The bundle's `log` FIFO (containerd copies what arrives there into its
 * log) as stdout and stderr, as the wrapper gives a launched shim. Opened
 * without blocking (containerd holds its reader open; if it does not, the
 * lines go nowhere, as they would have). Node's stdio streams are created
 * afterwards, on the FIFO.
 */
function takeLogFifo(bundle: string): void {
  let fd: number;
  try {
    fd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return;
  }
  try {
    dup2Fd(fd, 1);
    dup2Fd(fd, 2);
  } finally {
    fs.closeSync(fd);
  }
}
