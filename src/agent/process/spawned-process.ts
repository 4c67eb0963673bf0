/**
 * A child process started with posix_spawn and followed through its pidfd
 * (native-bindings/spawn.ts explains why not Node's fork-based spawn: its
 * cost grows with the agent's memory, and it sits on every container start).
 *
 * States: running → exited. While running, a watcher on the pidfd waits for
 * it to become readable (the child has exited); then the status is reaped,
 * the watcher and the pidfd are closed and `exited` resolves. The uv_poll
 * handle keeps Node's loop alive while the child runs, as a ChildProcess
 * does. `kill` goes through the pidfd while the child runs and is a no-op
 * (false) once it has been reaped: the pid may belong to someone else then.
 */
import { constants } from 'node:os';
import {
  closeQuietly,
  FdWatcher,
  type PosixSpawnOptions,
  pidfdOpen,
  pidfdSignal,
  posixSpawn,
  reap,
} from '../../../native-bindings/index.js';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The number of the signal that ended it (real-time signals have no name). */
  signalNumber: number | null;
}

const signalNames = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(constants.signals)) {
  if (!signalNames.has(num)) signalNames.set(num, name as NodeJS.Signals);
}

export class SpawnedProcess {
  readonly pid: number;
  /** Resolves once the child has exited and been reaped. */
  readonly exited: Promise<ChildExit>;
  private pidfd: number | null;
  private watcher: FdWatcher | null = null;

  /** Starts the child; throws (code ENOENT, EACCES, ...) if it cannot run. */
  constructor(opts: PosixSpawnOptions) {
    this.pid = posixSpawn(opts);
    let done!: (e: ChildExit) => void;
    this.exited = new Promise((resolve) => {
      done = resolve;
    });
    // Cannot fail for our own unreaped child short of fd exhaustion; if it does,
    // the child must not run unwatched.
    try {
      this.pidfd = pidfdOpen(this.pid);
      this.watcher = new FdWatcher(this.pidfd, () => this.onReadable(done));
      this.watcher.want(true, false);
    } catch (err) {
      process.kill(this.pid, 'SIGKILL');
      reap(this.pid, true); // SIGKILL cannot be caught: this returns at once
      this.release();
      throw err;
    }
  }

  /** Sends `sig`; false once the child has exited (or already gone). */
  kill(sig: number): boolean {
    if (this.pidfd === null) return false;
    return pidfdSignal(this.pidfd, sig);
  }

  private onReadable(done: (e: ChildExit) => void): void {
    const st = reap(this.pid);
    if (st === null) return; // spurious wake-up: still running
    this.release();
    done({
      code: st.code,
      signalNumber: st.signal,
      signal:
        st.signal === null ? null : (signalNames.get(st.signal) ?? (`SIG${st.signal}` as NodeJS.Signals)),
    });
  }

  private release(): void {
    this.watcher?.close();
    this.watcher = null;
    closeQuietly(this.pidfd ?? undefined);
    this.pidfd = null;
  }
}
