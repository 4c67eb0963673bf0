/**
 * The container processes end when the agent ends, even by kill -9.
 *
 * A guest's agent is its init: when it dies the VM goes with it, and every
 * process in it. The loopback guest has no such boundary, so the agent
 * starts a guardian: a small `sh` in its own session that reads the process
 * groups the agent starts from a pipe and, once the pipe reaches EOF (the
 * agent closed it or died: the kernel closes a dead process's fds),
 * SIGKILLs every group still listed, then exits. An agent that stops
 * normally kills its processes itself first; the guardian is the backstop.
 *
 * Lines on the pipe: `+<pgid>` when a process (a group and session leader,
 * see container-process.ts) starts; `-<pgid>` once the group is known to be
 * empty. The agent checks that (`kill(-pgid, 0)` answering ESRCH) when the
 * leader has been reaped, and again every few seconds while members that
 * outlived their leader remain, so a group id that could be reused by
 * another process is dropped at most that long after its last member left.
 * A group id in use cannot be reused, so the guardian never signals a
 * stranger while the group lives. The guardian also signals the pid itself,
 * for a terminal-mode process that had not become a group leader yet.
 *
 * (`kill -9 -<pgid>`: the one spelling dash and busybox both accept.)
 *
 * If the guardian itself is killed the agent logs it once and goes on.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Logger } from '../util/log.js';

/** First line of the guardian's script: names it in `ps` (and lets tests tell it from container processes). */
export const GUARDIAN_TITLE = '# passfd-broker agent: process guardian';

const SCRIPT = `${GUARDIAN_TITLE}
g=' '
while IFS= read -r l; do
  case $l in
  +*) g="$g\${l#+} " ;;
  -*) n=\${l#-}; case $g in *" $n "*) g="\${g%%" $n "*} \${g#*" $n "}" ;; esac ;;
  esac
done
for n in $g; do kill -9 "-$n" "$n" 2>/dev/null; done`;

/** How often groups that outlived their leader are checked for emptiness. */
const RECHECK_MS = 5000;

export class ProcessGuardian {
  private child: ChildProcess | null = null;
  private readonly lingering = new Set<number>();
  private timer: NodeJS.Timeout | null = null;
  private closing = false;

  constructor(private readonly log: Logger) {}

  start(): void {
    const child = spawn('sh', ['-c', SCRIPT], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
    this.child = child;
    child.stdin!.on('error', () => {});
    child.on('error', (err) => this.lost(err.message));
    child.on('exit', (code, sig) => this.lost(`exited (${sig ?? code})`));
    // Not a reason to keep the agent alive.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
  }

  /** A process group (led by `pgid`) has started. */
  track(pgid: number): void {
    this.send(`+${pgid}`);
  }

  /** The group's leader has been reaped: forget the group once it is empty. */
  leaderGone(pgid: number): void {
    if (groupIsEmpty(pgid)) this.send(`-${pgid}`);
    else {
      this.lingering.add(pgid);
      this.timer ??= setInterval(() => this.recheck(), RECHECK_MS).unref();
    }
  }

  /** Ends the guardian: it kills what is still listed and exits. */
  close(): void {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.child?.stdin?.end();
    this.child = null;
  }

  private recheck(): void {
    for (const pgid of this.lingering) {
      if (!groupIsEmpty(pgid)) continue;
      this.lingering.delete(pgid);
      this.send(`-${pgid}`);
    }
    if (this.lingering.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private send(line: string): void {
    this.child?.stdin?.write(`${line}\n`);
  }

  private lost(why: string): void {
    if (this.closing || !this.child) return;
    this.child = null;
    this.log.warn(`process guardian ${why}: container processes will not be killed if the agent dies`);
  }
}

function groupIsEmpty(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
