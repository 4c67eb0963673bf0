/**
 * A process's containerd FIFOs as the broker holds them.
 *
 * For each FIFO the broker opens a *keeper*, `O_RDWR|O_NONBLOCK`, held for
 * the life of the process. The keeper makes every other open succeed at once
 * (a FIFO opened O_RDWR is its own reader and writer: no ENXIO while
 * containerd has not opened its end, no blocking), stops the endless HUP on
 * the stdin FIFO when containerd's writer detaches, and lets output that
 * arrives before containerd opens its reader wait in the pipe. To the device
 * the broker passes a separate fd in the direction of the flow: stdin
 * read-only, stdout/stderr write-only, both non-blocking.
 *
 * Dropping the stdin keeper is how stdin ends losslessly: once containerd's
 * writer is gone too, the device reads every byte left in the FIFO, then EOF.
 *
 * The keeper also grows each FIFO to 1 MiB (F_SETPIPE_SZ, best effort, capped
 * at pipe-max-size): the device then moves up to a full packet per read or
 * write instead of the default 64 KiB pipe's worth, and a containerd reader
 * that pauses for a moment does not stall the container at 64 KiB.
 */
import fs from 'node:fs';
import { closeQuietly, growPipe } from '../../native-bindings/index.js';

export type StdioName = 'stdin' | 'stdout' | 'stderr';

export interface FifoPaths {
  stdin?: string | undefined;
  stdout?: string | undefined;
  stderr?: string | undefined;
}

const { O_RDWR, O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

/** What the keeper grows each FIFO to. */
export const FIFO_SIZE = 1 << 20;

export class FifoSet {
  private readonly keepers = new Map<StdioName, number>();

  constructor(readonly paths: FifoPaths) {}

  /** Opens every keeper; on failure closes what it opened and throws with the path. */
  openKeepers(): void {
    try {
      for (const name of ['stdin', 'stdout', 'stderr'] as const) {
        const p = this.paths[name];
        if (!p) continue;
        const st = fs.statSync(p);
        if (!st.isFIFO()) throw new Error(`${name}: ${p} is not a FIFO`);
        const keeper = fs.openSync(p, O_RDWR | O_NONBLOCK);
        this.keepers.set(name, keeper);
        growPipe(keeper, FIFO_SIZE);
      }
    } catch (err) {
      this.releaseAll();
      throw err;
    }
  }

  /** A new fd in the direction of the flow (the caller closes it). Cannot block: the keeper holds the FIFO. */
  openFlowFd(name: StdioName): number {
    const p = this.paths[name];
    if (!p || !this.keepers.has(name)) throw new Error(`${name}: no FIFO`);
    return fs.openSync(p, (name === 'stdin' ? O_RDONLY : O_WRONLY) | O_NONBLOCK);
  }

  /**
   * Trades the keeper of output `name` for a write-only fd of the same FIFO
   * (reopened through /proc, so a path removed meanwhile does not matter):
   * from then on the FIFO's readers are only the others' (reader-catch-up.ts).
   * The caller closes the fd.
   */
  keeperToWriter(name: 'stdout' | 'stderr'): number {
    const keeper = this.keepers.get(name);
    if (keeper === undefined) throw new Error(`${name}: no FIFO`);
    try {
      return fs.openSync(`/proc/self/fd/${keeper}`, O_WRONLY | O_NONBLOCK);
    } finally {
      this.release(name);
    }
  }

  has(name: StdioName): boolean {
    return this.keepers.has(name);
  }

  release(name: StdioName): void {
    closeQuietly(this.keepers.get(name));
    this.keepers.delete(name);
  }

  releaseAll(): void {
    for (const name of [...this.keepers.keys()]) this.release(name);
  }
}
