/**
 * What the process fuzzers check about a process they fuzz, from the
 * outside: alive, its open fds (/proc/<pid>/fd) back to the baseline taken
 * after a warm-up, its resident memory within a stated margin of that
 * baseline. A failed check says what is open, so a leak report names the
 * kind of fd that leaked.
 */
import fs from 'node:fs';
import { fdCount, fdsSettle } from '../../support/cli.js';

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

export const MiB = 1024 * 1024;

/**
 * With PASSFD_FUZZ_LOG_DIR set, keeps a fuzzed process's log there when it is
 * stopped or replaced (with PASSFD_LOG=debug it shows every path a run took).
 */
export function keepLog(name: string, pid: number, text: string): void {
  const dir = process.env.PASSFD_FUZZ_LOG_DIR;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(`${dir}/${name}-${pid}.log`, text);
}

/** Open fds of `pid` grouped by what they are ("socket", "pipe", "anon_inode:[eventpoll]", "/dev/null", ...). */
export function fdSummary(pid: number): string {
  const kinds = new Map<string, number>();
  for (const name of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue;
    }
    const kind = target.replace(/:\[\d+\]$/, '').replace(/^\/(tmp|proc)\/.*/, '/$1/…');
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([k, n]) => `${n}× ${k}`).join(', ');
}

export class ProcessHealth {
  baselineFds = 0;
  baselineRss = 0;

  constructor(
    readonly name: string,
    readonly pid: number,
    private readonly exitInfo: () => string | null,
    private readonly logTail: () => string,
  ) {}

  /** Takes the baseline: call after a warm-up, with nothing of the fuzzer's in flight. */
  takeBaseline(): void {
    this.baselineFds = fdCount(this.pid);
    this.baselineRss = rssBytes(this.pid);
  }

  /** Throws if the process has exited (with its exit status and the end of its log). */
  assertAlive(): void {
    const exit = this.exitInfo();
    if (exit !== null) throw new Error(`${this.name} (pid ${this.pid}) died: ${exit}\n${this.logTail()}`);
  }

  /** Throws unless the fd count returns to the baseline within `timeoutMs`. */
  async assertFdsBack(timeoutMs = 5000): Promise<void> {
    const n = await fdsSettle(this.pid, this.baselineFds, timeoutMs);
    this.assertAlive();
    if (n > this.baselineFds) {
      throw new Error(
        `${this.name} holds ${n} fds, ${n - this.baselineFds} over its baseline of ${this.baselineFds}, ` +
          `${timeoutMs} ms after the case ended (open now: ${fdSummary(this.pid)})`,
      );
    }
  }

  /** Throws if resident memory is more than `marginBytes` over the baseline. Returns the current RSS. */
  assertRssWithin(marginBytes: number): number {
    const rss = rssBytes(this.pid);
    if (rss > this.baselineRss + marginBytes) {
      throw new Error(
        `${this.name} RSS ${(rss / MiB).toFixed(1)} MiB is over its warmed-up baseline ` +
          `${(this.baselineRss / MiB).toFixed(1)} MiB + ${(marginBytes / MiB).toFixed(0)} MiB`,
      );
    }
    return rss;
  }

  describe(): string {
    return `${this.name}: ${fdCount(this.pid)} fds (baseline ${this.baselineFds}), RSS ${(rssBytes(this.pid) / MiB).toFixed(1)} MiB (baseline ${(this.baselineRss / MiB).toFixed(1)} MiB)`;
  }
}
