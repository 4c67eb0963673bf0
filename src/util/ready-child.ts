/**
 * Starting this project's own CLI as a child process and knowing when it is
 * ready: `run`, `bench` and the VM stack start `vmm` and `agent` this way.
 *
 * Readiness is systemd's: each child gets its own $NOTIFY_SOCKET (a datagram
 * socket bound by us) and we wait for its READY=1, so nothing here polls for
 * socket files or parses logs. A child that exits early fails the start with
 * its exit status.
 *
 * A child leads its own session (a terminal's signals are for the process
 * that started it) and gets SIGTERM when that process dies, however it dies
 * (util/lifeline.ts): it stops cleanly and, being orphaned, removes what its
 * parent left (cli/options.ts onTermination).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { dieWithParent } from './lifeline.js';
import { withPrivateUmask } from './private-umask.js';
import { type DatagramReceiver, receiveDatagrams } from './unix-dgram.js';

/** Defined (true) only inside the CLI bundle, by scripts/build-cli.mjs. */
declare const PASSFD_CLI_BUNDLE: boolean | undefined;

/**
 * The CLI the children run, always the bundled one (dist/cli/passfd-broker.js,
 * fast to start): from inside the bundle, beside this chunk; from the library
 * build (dist/src/util/), two levels up; from TypeScript sources (tests,
 * examples under tsx), in dist/.
 */
export const CLI_MAIN =
  typeof PASSFD_CLI_BUNDLE !== 'undefined'
    ? path.join(import.meta.dirname, 'passfd-broker.js')
    : import.meta.filename.endsWith('.ts')
      ? path.resolve(import.meta.dirname, '../../dist/cli/passfd-broker.js')
      : path.resolve(import.meta.dirname, '../../cli/passfd-broker.js');

export interface ReadyChild {
  child: ChildProcess;
  /** Closes the notify socket; kept until the child is stopped so its STOPPING=1 has a receiver. */
  closeNotify(): void;
}

export interface StartReadyOptions {
  /** Node options before the CLI (e.g. `--cpu-prof`). */
  nodeArgs?: string[];
  /** Capture the child's stderr (default: it goes to ours). */
  onStderr?: (chunk: Buffer) => void;
  /** Aborting gives up the start: the child is killed and the promise rejects with the reason. */
  signal?: AbortSignal;
}

/** Starts `passfd-broker <args>` and resolves once it has sent READY=1. */
export function startReady(
  args: string[],
  dir: string,
  name: string,
  logLevel: string,
  timeoutMs: number,
  opts: StartReadyOptions = {},
): Promise<ReadyChild> {
  const notifyPath = path.join(dir, `${name}.notify`);
  return new Promise((resolve, reject) => {
    let child: ChildProcess | null = null;
    let settled = false;
    let notify: DatagramReceiver | null = null;
    const closeNotify = () => {
      notify?.close();
      fs.rmSync(notifyPath, { force: true });
    };
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      child?.off('exit', onExit);
      if (!err) {
        resolve({ child: child!, closeNotify });
        return;
      }
      closeNotify();
      // Reject once the child is gone, so a failed start leaves no process behind.
      if (child && child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        child.once('exit', () => reject(err));
        child.kill('SIGKILL');
      } else reject(err);
    };
    const onExit = (code: number | null, sig: string | null) =>
      finish(new Error(`${name} exited before it was ready (${sig ?? `exit ${code}`})`));
    const timer = setTimeout(() => finish(new Error(`${name} not ready within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => finish(opts.signal!.reason as Error);
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // 0600 from its creation, like every socket this project binds (util/private-umask.ts).
      notify = withPrivateUmask(() =>
        receiveDatagrams(
          notifyPath,
          (msg) => {
            if (msg.toString().split('\n').includes('READY=1')) finish(null);
          },
          (err) => finish(err),
        ),
      );
    } catch (err) {
      finish(err as Error);
      return;
    }
    const cmd = dieWithParent(process.execPath, [...(opts.nodeArgs ?? []), CLI_MAIN, ...args], 'SIGTERM');
    child = spawn(cmd.file, cmd.args, {
      stdio: ['ignore', 'ignore', opts.onStderr ? 'pipe' : 'inherit'],
      env: { ...process.env, NOTIFY_SOCKET: notifyPath, PASSFD_LOG: logLevel },
      // Its own session: a terminal's Ctrl-C is for us (run forwards it to the container).
      detached: true,
    });
    if (opts.onStderr) child.stderr!.on('data', opts.onStderr);
    child.on('error', (err) => finish(err));
    child.on('exit', onExit);
  });
}

export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
