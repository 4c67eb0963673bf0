/**
 * The guest agent's process launcher: starts a container process with its
 * stdio wired to the passfd streams (or to pipes the RPC path serves) and
 * reports its exit only once its output is delivered.
 *
 * Wiring (non-terminal). The child always gets pipes on fds 0-2, blocking,
 * close-on-exec everywhere else (see stdio-pipe.ts for why not the socket):
 *
 *   stdin stream  ──splice──▶ stdin pipe  ──▶ child fd 0
 *   child fd 1    ──▶ stdout pipe ──splice──▶ stdout stream
 *   child fd 2    ──▶ stderr pipe ──splice──▶ stderr stream
 *
 * A null stream fd means "served over RPC": the agent's end of that pipe is
 * exposed as a Node stream (`stdinPipe` writable, `stdoutPipe`/`stderrPipe`
 * readable; `net.Socket`s on the pipe fds). Each such stream owns its fd:
 * reading it to the end (or destroying it) closes it. The launcher destroys
 * `stdinPipe` itself once the process has exited.
 *
 * Terminal mode. The child runs on a new pty as its controlling terminal (new
 * session; see ctty-step.ts). stdout and stderr are both the terminal, so
 * there is one output stream and `stderrFd` must be null. The bytes between
 * the pty master and the streams are copied by the agent (copy-pump.ts:
 * splice does not work on a pty); with a null stream fd the RPC side is
 * again a pipe, so RPC consumers see the same kind of stream in both modes.
 * EOF on stdin (stream EOF, or closeStdin) writes the terminal's EOF
 * character, which is how a terminal reader sees end-of-file. If the output
 * stream's peer goes away, the terminal is hung up (all master fds closed):
 * the session gets SIGHUP, as when an ssh connection drops.
 *
 * Exit reporting. `wait()` resolves only after every byte the process wrote
 * to stdout/stderr has been written into the streams (output-forwarder.ts
 * explains why the exit-time snapshot is exact). Children of the process that
 * inherited its stdout keep the pipe open after it exits; Kata waits for the
 * pipe's EOF, which hangs `exec` when a daemon was started in the
 * background. Here the launcher waits for EOF at most `drainTimeoutMs`
 * (default 3 s, `Infinity` = Kata's behaviour) after the exit, and never less
 * than what the exit-time snapshot requires; then it reports the exit. The
 * pumps keep forwarding what such children print until the pipe really ends
 * (or the stream's peer goes away): late output is delivered, not cut.
 * Once the exit is reported, stdin is closed (stream and pipe), as Kata does.
 *
 * Signals. Every process is a session and process-group leader (setsid at
 * spawn, or in the terminal step), as runc/rustjail make container
 * processes, so `signal(sig, { group: true })` reaches its whole group, even
 * after the leader is gone (the group id stays reserved while members live).
 * The child starts with default signal dispositions and an empty mask
 * (posix_spawn's SETSIGDEF/SETSIGMASK: Node itself ignores SIGPIPE; the child
 * does not), so a child writing to a closed pipe dies of SIGPIPE as in a shell.
 *
 * Spawning. posix_spawn (vfork-style, spawned-process.ts), not Node's
 * fork-based spawn: a container start then costs the same whatever the
 * agent's memory has grown to. The command is looked up in the PATH of the
 * process's own environment first, so a missing command rejects with ENOENT
 * in both modes.
 *
 * Containers. With `container`, the process runs in a container's root
 * filesystem, namespaces and user (container-root.ts): the pid spawned is a
 * namespace helper that waits for the container's process and exits with its
 * status, so exit reporting is unchanged, while signals go to the
 * container's process itself (its pidfd), and a group signal reaches both.
 *
 * Fds. Stream fds passed in belong to the launcher from the call on, even if
 * it throws. Everything the launcher creates is closed once the process has
 * exited and every stream is finished (`drained`); the RPC pipe streams are
 * closed by whoever consumes them.
 */
import type { Readable, Writable } from 'node:stream';
import { closeQuietly, fdKind, setCloexec, setWinSize } from '../../../native-bindings/index.js';
import {
  type ContainerRootOptions,
  type IsolatedProcess,
  isolatedCommand,
  SetupHandshake,
} from './container-root.js';
import { type CttyMethod, cttyStep, envObject } from './ctty-step.js';
import { type ExitStatus, exitStatus, signalNumber } from './exit-status.js';
import type { InputForwarder } from './input-forwarder.js';
import type { OutputForwarder } from './output-forwarder.js';
import type { OutputRelay } from './output-relay.js';
import { resolveCommand } from './resolve-command.js';
import { SpawnedProcess } from './spawned-process.js';
import { abandon, type Wiring, wirePipes, wireTerminal } from './wiring.js';

export type { ExitStatus } from './exit-status.js';

export const DEFAULT_DRAIN_TIMEOUT_MS = 3000;

export interface SpawnOptions {
  /** argv; args[0] is looked up in the PATH of `env`. */
  args: string[];
  /** "KEY=value" strings: exactly the process's environment. Default: the agent's own, minus its supervision variables (inheritedEnv). */
  env?: string[];
  /** Working directory. Default: the agent's. */
  cwd?: string;
  /** Run on a new pty as controlling terminal; stdout and stderr share the stdout stream. */
  terminal?: boolean;
  /** Initial window size (terminal mode); both or neither. */
  rows?: number;
  cols?: number;
  /** Connected stream sockets (vsock, or a socketpair end); null/absent = served over RPC. Owned by the launcher. */
  stdinFd?: number | null;
  stdoutFd?: number | null;
  /** Must be null in terminal mode. */
  stderrFd?: number | null;
  /** How long after the exit to wait for stdout/stderr EOF held off by surviving children (default 3000). */
  drainTimeoutMs?: number;
  /** Non-terminal mode: how stdout/stderr reach their streams (default 'auto', see output-relay.ts). */
  outputRelay?: OutputRelay;
  /** Terminal mode: how the child gets its controlling terminal (default 'auto': setsid(1), else Node). */
  ctty?: CttyMethod;
  /** Run inside a container's root filesystem and namespaces (container-root.ts); `cwd` is then in-root. */
  container?: ContainerRootOptions;
}

export interface SignalOptions {
  /** Signal the process group (the process and the children it did not move elsewhere). */
  group?: boolean;
}

export class ContainerProcess {
  /** The process id (its process group and session id too). */
  readonly pid: number;
  readonly terminal: boolean;
  /** RPC path: write what WriteStdin receives; `closeStdin()` ends it. Null when stdin is a stream. */
  readonly stdinPipe: Writable | null;
  /** RPC path: what ReadStdout returns. Null when stdout is a stream. */
  readonly stdoutPipe: Readable | null;
  /** RPC path: what ReadStderr returns. Null when stderr is a stream, and in terminal mode. */
  readonly stderrPipe: Readable | null;
  /** The pty slave's path in terminal mode (e.g. /dev/pts/3). */
  readonly ptyName: string | null;
  /** Settles when the process is gone, every stream is finished and every launcher fd is closed. */
  readonly drained: Promise<void>;

  private readonly child: SpawnedProcess;
  private readonly inputs: InputForwarder[];
  private readonly outputs: OutputForwarder[];
  private master: number | null;
  /** With `container`: the container's process itself (the spawned pid is the namespace helper). */
  private isolated: IsolatedProcess | null = null;
  private exited = false;
  private readonly waitPromise: Promise<ExitStatus>;

  private constructor(child: SpawnedProcess, w: Wiring, drainTimeoutMs: number, terminal: boolean) {
    this.child = child;
    this.pid = child.pid;
    this.terminal = terminal;
    this.inputs = w.inputs;
    this.outputs = w.outputs;
    this.master = w.master;
    this.ptyName = w.ptyName;
    this.stdinPipe = w.stdinPipe;
    this.stdoutPipe = w.stdoutPipe;
    this.stderrPipe = w.stderrPipe;
    const exited = child.exited.then(({ code, signalNumber }) => {
      this.exited = true;
      this.isolated?.close();
      return exitStatus(code, signalNumber);
    });
    this.waitPromise = exited.then(async (status) => {
      await this.outputsSettled(drainTimeoutMs);
      this.afterReported();
      return status;
    });
    if (terminal) {
      for (const out of this.outputs) {
        void out.finished.then((end) => {
          if (end.reason === 'error') this.hangUp();
        });
      }
    }
    this.drained = Promise.all([
      this.waitPromise,
      ...this.outputs.map((o) => o.finished),
      ...this.inputs.map((i) => i.finished),
    ]).then(() => {
      this.closeMaster();
    });
    for (const f of [...this.outputs, ...this.inputs]) f.start();
  }

  /** Starts a process. Resolves once it runs; rejects (an error with `code` ENOENT, EACCES, ...) if it cannot start. */
  static async spawn(opts: SpawnOptions): Promise<ContainerProcess> {
    const streams = [opts.stdinFd ?? null, opts.stdoutFd ?? null, opts.stderrFd ?? null];
    const given = streams.filter((fd): fd is number => fd !== null);
    let w: Wiring | null = null;
    let child: SpawnedProcess;
    let handshake: SetupHandshake | null = null;
    try {
      validate(opts, given);
      for (const fd of given) setCloexec(fd, true);
      const env = opts.env ?? inheritedEnv();
      const cwd = opts.cwd ?? (opts.container ? '/' : process.cwd());
      // Looked up here (PATH of the process's own environment, as execvp would),
      // so a missing command is an ENOENT from spawn in both modes.
      let file: string;
      let argv: string[];
      let childEnv: Record<string, string>;
      if (opts.container) {
        ({ file, argv } = isolatedCommand(opts.container, opts.args, envObject(env), cwd, !!opts.terminal));
        childEnv = envObject(env);
        handshake = new SetupHandshake();
        w = opts.terminal ? wireTerminal(opts) : wirePipes(opts);
      } else if (opts.terminal) {
        resolveCommand(opts.args[0]!, envObject(env).PATH, cwd); // fail now, not as the step's exit 127
        const step = cttyStep(opts.ctty ?? 'auto', opts.args, env);
        file = step.file;
        argv = [step.file, ...step.args];
        childEnv = step.env;
        w = wireTerminal(opts);
      } else {
        file = resolveCommand(opts.args[0]!, envObject(env).PATH, cwd);
        argv = opts.args;
        childEnv = envObject(env);
        w = wirePipes(opts);
      }
      // setsid: every process leads its own session and group. Not in terminal
      // mode: setsid(1) or the trampoline does it (setsid(1) would fork if it
      // already led a group, and the launcher must keep the pid it spawned).
      child = new SpawnedProcess({
        file,
        argv,
        env: Object.entries(childEnv).map(([k, v]) => `${k}=${v}`),
        cwd: opts.container ? '/' : cwd,
        stdio: w.childStdio,
        // In a container the helper leads the session; the process makes its own with `setsid -c`.
        setsid: !!opts.container || !opts.terminal,
        extraFds: handshake?.childFds ?? [],
      });
    } catch (err) {
      if (w) abandon(w);
      for (const fd of given) closeQuietly(fd);
      handshake?.close();
      throw err;
    } finally {
      // The child has its copies now (or never will): the agent's must go, or EOF never comes.
      if (w) for (const fd of w.childEnds) closeQuietly(fd);
      handshake?.releaseChildEnds();
    }
    const proc = new ContainerProcess(
      child,
      w,
      opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
      !!opts.terminal,
    );
    if (handshake) {
      try {
        proc.isolated = await handshake.complete(child.exited);
      } catch (err) {
        proc.signal('SIGKILL', { group: true });
        throw err;
      }
    }
    return proc;
  }

  /** In a container: the host pid of the container's process (whose namespaces execs join). */
  get containerPid(): number | null {
    return this.isolated?.pid ?? null;
  }

  /** In a container: whether the process handles `sig` (Kata turns an unhandled SIGTERM to PID 1 into SIGKILL). */
  handlesSignal(sig: number | string): boolean {
    return this.isolated?.handles(signalNumber(sig)) ?? true;
  }

  /** True once the process has exited (its output may still be on its way: use `wait()`). */
  get hasExited(): boolean {
    return this.exited;
  }

  /** The exit status, once the process has exited and its output is delivered (see module comment). */
  wait(): Promise<ExitStatus> {
    return this.waitPromise;
  }

  /**
   * Sends `sig` (number or name) to the process, or with `group` to its
   * process group. Returns false when there is nothing left to signal.
   */
  signal(sig: number | string, opts: SignalOptions = {}): boolean {
    const num = signalNumber(sig);
    if (opts.group) {
      // In a container the process leads its own group in terminal mode: signal both.
      const groups = this.isolated ? [this.pid, this.isolated.pid] : [this.pid];
      return groups.map((g) => killGroup(g, num)).some(Boolean);
    }
    // Not after the exit: the pid may already belong to someone else.
    if (this.exited) return false;
    return this.isolated ? this.isolated.signal(num) : this.child.kill(num);
  }

  /** Terminal mode: sets the window size (TIOCSWINSZ; the foreground group gets SIGWINCH). */
  resize(rows: number, cols: number): void {
    if (!this.terminal) throw new Error('resize: the process has no terminal');
    if (this.master === null) return; // exited or hung up: nothing to resize
    setWinSize(this.master, rows, cols);
  }

  /**
   * CloseStdin: the process reads EOF after every byte already sent. Stream:
   * what is queued in the socket now is still delivered first. RPC pipe: ends
   * `stdinPipe` after its pending writes.
   */
  closeStdin(): void {
    if (this.stdinPipe) this.stdinPipe.end();
    for (const i of this.inputs) i.closeInput();
  }

  /**
   * Releases everything at once without waiting: stops the pumps, closes every
   * launcher fd, destroys the RPC pipe streams. Does not signal the process;
   * `wait()` still resolves when it exits.
   */
  destroy(): void {
    for (const f of [...this.outputs, ...this.inputs]) f.stop();
    this.stdinPipe?.destroy();
    this.stdoutPipe?.destroy();
    this.stderrPipe?.destroy();
    this.closeMaster();
  }

  private async outputsSettled(drainTimeoutMs: number): Promise<void> {
    if (this.outputs.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      if (Number.isFinite(drainTimeoutMs)) timer = setTimeout(resolve, Math.max(0, drainTimeoutMs));
    });
    // Snapshot at the exit (the pumps cannot run in between): see output-forwarder.ts.
    const settled = this.outputs.map((o) =>
      Promise.race([o.finished.then(() => undefined), Promise.all([o.flushedAtExit(), grace])]),
    );
    await Promise.all(settled);
    clearTimeout(timer);
  }

  private afterReported(): void {
    for (const i of this.inputs) i.stop();
    this.stdinPipe?.destroy();
    this.closeMaster();
  }

  private hangUp(): void {
    for (const i of this.inputs) i.stop();
    for (const o of this.outputs) o.stop();
    this.closeMaster();
  }

  private closeMaster(): void {
    if (this.master === null) return;
    closeQuietly(this.master);
    this.master = null;
  }
}

/** kill(-pgid); false when the group is gone (ESRCH). */
/**
 * Variables that are the agent's own business, not a container's: its
 * supervisor's readiness socket (a process that inherited NOTIFY_SOCKET could
 * send READY/STOPPING in the agent's name, which is why sd_notify(3) offers
 * to unset it) and its log level.
 */
const AGENT_ONLY_VARIABLES = new Set(['NOTIFY_SOCKET', 'PASSFD_LOG']);

/** The agent's environment as a process's default one, without AGENT_ONLY_VARIABLES. */
export function inheritedEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.entries(env)
    .filter(([k]) => !AGENT_ONLY_VARIABLES.has(k))
    .map(([k, v]) => `${k}=${v ?? ''}`);
}

function killGroup(pgid: number, sig: number): boolean {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Starts a container process; see ContainerProcess. */
export function spawnContainerProcess(opts: SpawnOptions): Promise<ContainerProcess> {
  return ContainerProcess.spawn(opts);
}

function validate(opts: SpawnOptions, given: number[]): void {
  if (!Array.isArray(opts.args) || opts.args.length === 0 || !opts.args[0]) {
    throw new TypeError('spawnContainerProcess: args must name a command');
  }
  if (new Set(given).size !== given.length) {
    throw new RangeError('spawnContainerProcess: the same fd was given for two streams; pass separate fds');
  }
  for (const fd of given) {
    const kind = fdKind(fd);
    if (kind !== 'socket' && kind !== 'fifo') {
      throw new TypeError(`spawnContainerProcess: stream fd ${fd} is a ${kind}, not a socket or pipe`);
    }
  }
  if (opts.terminal && opts.stderrFd != null) {
    throw new RangeError('spawnContainerProcess: terminal mode has no stderr stream (stderr port must be 0)');
  }
  if ((opts.rows === undefined) !== (opts.cols === undefined)) {
    throw new RangeError('spawnContainerProcess: give both rows and cols, or neither');
  }
}
