/**
 * Kata's `grpc.AgentService`, the subset this mission needs, over ttrpc:
 * CreateContainer + StartContainer, ExecProcess, WaitProcess, SignalProcess,
 * CloseStdin, TtyWinResize, RemoveContainer, StatsContainer (summed from
 * /proc: container-stats.ts), and the RPC-copy IO calls (WriteStdin,
 * ReadStdout, ReadStderr).
 *
 * A request's `stdin_port`/`stdout_port`/`stderr_port` name passfd streams by
 * their host port (0 = that stream is not passfd: the process gets a pipe the
 * RPC-copy calls serve). The streams are claimed from PassfdStreams, waiting
 * for ones not yet accepted. Kata's conventions: the init process's exec id
 * is the container id (an empty exec id means the init process); an exec
 * process is forgotten once WaitProcess has returned its status; the init
 * process lives until RemoveContainer. In terminal mode stdout and stderr
 * share one stream and stderr_port is 0. A request waiting for its streams
 * holds its container id (CreateContainer) or exec id (ExecProcess); if
 * RemoveContainer comes meanwhile, the request fails with NOT_FOUND, closes
 * what it claimed and starts nothing.
 *
 * A container whose spec names a root filesystem (`OCI.Root.Path`, as the
 * containerd shim sends it) runs in that root with its own mount namespace
 * and the UTS, IPC and PID namespaces its spec asks for (new, the guest's,
 * or its pod sandbox's: pod-namespaces.ts), its user (`Process.User`), `Hostname` and extra
 * `Mounts` (binds and tmpfs: process/container-mounts.ts); its exec
 * processes join those namespaces (process/container-root.ts). The command,
 * the working directory and the mounts are checked in the root at
 * CreateContainer, so a missing binary fails the create, as with runc. Without a root, a
 * "container" is a process group in the agent's own root (`run`): isolation
 * is the VM's job; what matters is the IO wiring.
 *
 * Signals follow Kata's agent: SignalProcess with an empty exec id and
 * SIGKILL kills every process of the container (the runtime's `kill --all`);
 * SIGTERM to a container's PID 1 that has no handler for it (which the
 * kernel would drop) becomes SIGKILL.
 */
import os from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { closeQuietly } from '../../native-bindings/index.js';
import { agentMethods, type Process } from '../protocol/agent-api.js';
import { GrpcCode } from '../protocol/ttrpc.js';
import { TtrpcError } from '../ttrpc/errors.js';
import type { TtrpcServer } from '../ttrpc/server.js';
import type { Logger } from '../util/log.js';
import { containerUsage } from './container-stats.js';
import type { ProcessGuardian } from './guardian.js';
import type { PassfdStreams } from './passfd-streams.js';
import { type NamespacePlan, planNamespaces, SHARED_KINDS } from './pod-namespaces.js';
import { type PreparedMount, plan as planMounts, prepareMountPoints } from './process/container-mounts.js';
import {
  type ContainerProcess,
  type SpawnOptions,
  spawnContainerProcess,
} from './process/container-process.js';
import { type ContainerNamespaces, checkInRoot } from './process/container-root.js';
import { START_FAILURE, startError } from './start-error.js';

interface Ports {
  stdinPort: number;
  stdoutPort: number;
  stderrPort: number;
}

interface ExecEntry {
  process: ContainerProcess;
  /** Serialises concurrent ReadStdout/ReadStderr calls per stream. */
  readChain: Map<Readable, Promise<unknown>>;
  /** WaitProcess has answered with the exit status. */
  reported?: boolean;
}

interface Container {
  id: string;
  /** The container's root filesystem, hostname and extra mounts (OCI Root.Path, Hostname, Mounts); null: the agent's own root. */
  rootfs: { path: string; hostname: string; mounts: PreparedMount[]; namespaces: NamespacePlan } | null;
  /** Set by CreateContainer, consumed by StartContainer. */
  pending: { process: Process; fds: (number | null)[] } | null;
  /** CreateContainer is still waiting for the container's passfd streams. */
  creating: boolean;
  execs: Map<string, ExecEntry>;
  /** Exec ids of ExecProcess requests still waiting for their streams or their spawn. */
  startingExecs: Set<string>;
}

const MAX_READ = 1 << 20;

export class AgentService {
  private readonly containers = new Map<string, Container>();

  constructor(
    private readonly streams: PassfdStreams,
    private readonly log: Logger,
    /** What every process spawned gets unless its request says otherwise (drain timeout, output relay). */
    private readonly spawnDefaults: Pick<SpawnOptions, 'drainTimeoutMs' | 'outputRelay'> = {},
    /** Kills the processes' groups should the agent die (guardian.ts). */
    private readonly guardian?: ProcessGuardian,
    /** Where the agent may keep small runtime files (the containers' /dev template). */
    private readonly runtimeDir: string = os.tmpdir(),
  ) {}

  /** Counts for leak checks: containers and live exec processes. */
  get stats(): { containers: number; processes: number } {
    let processes = 0;
    for (const c of this.containers.values()) processes += c.execs.size;
    return { containers: this.containers.size, processes };
  }

  register(server: TtrpcServer): void {
    const m = agentMethods;
    server.registerTyped(m.CreateContainer, async (req) => {
      if (!req.containerId) throw invalid('container_id is empty');
      if (this.containers.has(req.containerId)) throw exists(`container ${req.containerId} already exists`);
      const process = req.OCI?.Process;
      if (!process || process.Args.length === 0) throw invalid('OCI.Process.Args is empty');
      const root = req.OCI?.Root?.Path;
      let rootfs: Container['rootfs'] = null;
      if (root) {
        try {
          const namespaces = planNamespaces({
            containerId: req.containerId,
            annotations: req.OCI?.Annotations ?? {},
            namespaces: req.OCI?.Linux?.Namespaces,
            sandboxPidns: req.sandboxPidns,
          });
          checkInRoot(root, process.Args, envPath(process.Env), process.Cwd);
          const mounts = prepareMountPoints(root, planMounts(req.OCI?.Mounts ?? []));
          rootfs = { path: root, hostname: req.OCI?.Hostname ?? '', mounts, namespaces };
        } catch (err) {
          throw invalid((err as Error).message);
        }
        const sandboxId = rootfs.namespaces.sandboxId;
        if (sandboxId !== undefined && !this.containers.has(sandboxId)) {
          throw precondition(
            `container ${req.containerId} belongs to pod sandbox ${sandboxId}, which is not in this guest`,
          );
        }
      } else if ((req.OCI?.Mounts ?? []).length > 0) {
        throw invalid('OCI.Mounts need a root filesystem (OCI.Root.Path)');
      }
      // Reserve the id before awaiting streams so a duplicate create fails at once.
      const c: Container = {
        id: req.containerId,
        rootfs,
        pending: null,
        creating: true,
        execs: new Map(),
        startingExecs: new Set(),
      };
      this.containers.set(c.id, c);
      let fds: (number | null)[];
      try {
        fds = await this.claim(req, process.Terminal);
      } catch (err) {
        // RemoveContainer may have dropped the reservation meanwhile and another create taken the id.
        if (this.containers.get(c.id) === c) this.containers.delete(c.id);
        throw err;
      }
      c.creating = false;
      if (this.containers.get(c.id) !== c) {
        for (const fd of fds) closeQuietly(fd);
        throw removedMeanwhile(c.id);
      }
      c.pending = { process, fds };
      this.log.debug(`created container ${c.id}`);
      return {};
    });
    server.registerTyped(m.StartContainer, async (req) => {
      const c = this.container(req.containerId);
      if (c.creating) throw precondition(`container ${c.id} is still being created`);
      if (!c.pending) throw precondition(`container ${c.id} was already started`);
      const { process, fds } = c.pending;
      c.pending = null;
      await this.start(c, c.id, process, fds);
      return {};
    });
    server.registerTyped(m.ExecProcess, async (req) => {
      const c = this.container(req.containerId);
      if (!req.execId) throw invalid('exec_id is empty');
      const previous = c.execs.get(req.execId);
      if (previous?.process.hasExited && previous.reported) {
        // Exited and reported, only its unread output kept it here (see forgetOnceRead).
        previous.process.destroy();
        c.execs.delete(req.execId);
      }
      if (c.execs.has(req.execId) || c.startingExecs.has(req.execId)) {
        throw exists(`exec ${req.execId} already exists in ${c.id}`);
      }
      const process = req.process;
      if (!process || process.Args.length === 0) throw invalid('process.Args is empty');
      const init = c.execs.get(c.id)?.process;
      if (c.rootfs) {
        if (!init || init.hasExited || init.containerPid === null)
          throw precondition(`container ${c.id} is not running`);
        try {
          checkInRoot(c.rootfs.path, process.Args, envPath(process.Env), process.Cwd);
        } catch (err) {
          throw invalid((err as Error).message);
        }
      }
      // Reserved while its streams are awaited, so a second exec with this id fails at once.
      c.startingExecs.add(req.execId);
      try {
        const fds = await this.claim(req, process.Terminal);
        await this.start(c, req.execId, process, fds);
      } finally {
        c.startingExecs.delete(req.execId);
      }
      return {};
    });
    server.registerTyped(m.WaitProcess, async (req, ctx) => {
      const { entry, execId, c } = this.exec(req.containerId, req.execId);
      const aborted = new Promise<never>((_, reject) => {
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
      });
      const st = await Promise.race([entry.process.wait(), aborted]);
      entry.reported = true;
      if (execId !== c.id) this.forgetOnceRead(c, execId, entry);
      this.log.debug(`process ${c.id}/${execId} exited with ${st.status}`);
      return { status: st.status };
    });
    server.registerTyped(m.StatsContainer, async (req) => {
      const c = this.container(req.containerId);
      const init = c.execs.get(c.id);
      if (!init) throw precondition(`container ${c.id} has not started`);
      const live = [...c.execs.values()].filter((e) => !e.process.hasExited);
      const u = containerUsage(
        live.map((e) => e.process.containerPid ?? e.process.pid),
        init.process.containerPid,
      );
      return {
        cgroupStats: {
          cpuStats: {
            cpuUsage: {
              totalUsage: u.cpuNs.total,
              usageInUsermode: u.cpuNs.user,
              usageInKernelmode: u.cpuNs.system,
            },
          },
          memoryStats: {
            cache: u.memory.file,
            usage: { usage: u.memory.usage, limit: u.memory.limit },
            // cgroup v2's memory.stat names.
            stats: { anon: u.memory.anon, file: u.memory.file },
          },
          pidsStats: { current: u.tasks },
        },
      };
    });
    server.registerTyped(m.SignalProcess, async (req) => {
      if (req.execId === '' && req.signal === SIGKILL) {
        // Kata's "all": every process of the container.
        for (const e of this.container(req.containerId).execs.values()) {
          e.process.signal(SIGKILL, { group: true });
        }
        return {};
      }
      const { entry, execId, c } = this.exec(req.containerId, req.execId);
      let sig = req.signal;
      if (execId === c.id && sig === SIGTERM && c.rootfs && !entry.process.handlesSignal(sig)) sig = SIGKILL;
      try {
        entry.process.signal(sig);
      } catch (err) {
        throw invalid((err as Error).message);
      }
      return {};
    });
    server.registerTyped(m.CloseStdin, async (req) => {
      this.exec(req.containerId, req.execId).entry.process.closeStdin();
      return {};
    });
    server.registerTyped(m.TtyWinResize, async (req) => {
      const { entry } = this.exec(req.containerId, req.execId);
      if (!entry.process.terminal) throw precondition('the process has no terminal');
      entry.process.resize(req.row, req.column);
      return {};
    });
    server.registerTyped(m.RemoveContainer, async (req) => {
      const c = this.container(req.containerId);
      for (const [, e] of c.execs) {
        e.process.signal('SIGKILL', { group: true });
        e.process.destroy();
      }
      if (c.pending) for (const fd of c.pending.fds) closeQuietly(fd);
      this.containers.delete(c.id);
      return {};
    });
    server.registerTyped(m.WriteStdin, async (req) => {
      const { entry } = this.exec(req.containerId, req.execId);
      const pipe = entry.process.stdinPipe;
      if (!pipe) throw precondition('stdin is a passfd stream, not served over RPC');
      await writeAll(pipe, req.data);
      return { len: req.data.length };
    });
    server.registerTyped(m.ReadStdout, async (req) => {
      const { entry } = this.exec(req.containerId, req.execId);
      return { data: await this.readFrom(entry, entry.process.stdoutPipe, req.len, 'stdout') };
    });
    server.registerTyped(m.ReadStderr, async (req) => {
      const { entry } = this.exec(req.containerId, req.execId);
      return { data: await this.readFrom(entry, entry.process.stderrPipe, req.len, 'stderr') };
    });
  }

  /** Claims the passfd streams a request names (0 = none), all or nothing. */
  private async claim(ports: Ports, terminal: boolean): Promise<(number | null)[]> {
    if (terminal && ports.stderrPort !== 0)
      throw invalid('terminal mode: stderr shares the stdout stream (stderr_port must be 0)');
    const wanted = [ports.stdinPort, ports.stdoutPort, ports.stderrPort];
    const results = await Promise.allSettled(
      wanted.map((p) => (p === 0 ? Promise.resolve(null) : this.streams.take(p))),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      for (const r of results) if (r.status === 'fulfilled' && r.value !== null) closeQuietly(r.value);
      throw new TtrpcError(GrpcCode.DEADLINE_EXCEEDED, (failed as PromiseRejectedResult).reason.message);
    }
    return results.map((r) => (r as PromiseFulfilledResult<number | null>).value);
  }

  /** A plan's sources with "the sandbox's" resolved to the sandbox's running init (FAILED_PRECONDITION if it is not). */
  private namespaceSources(plan: NamespacePlan): ContainerNamespaces {
    const sandboxPid = () => {
      const sandbox = this.containers.get(plan.sandboxId!);
      const init = sandbox?.execs.get(sandbox.id)?.process;
      const pid = init && !init.hasExited ? init.containerPid : null;
      if (!pid) throw precondition(`pod sandbox ${plan.sandboxId} is not running in this guest`);
      return pid;
    };
    const out: ContainerNamespaces = {};
    for (const kind of SHARED_KINDS) out[kind] = plan[kind] === 'sandbox' ? sandboxPid() : plan[kind];
    out.net = plan.net === 'sandbox' ? sandboxPid() : plan.net;
    return out;
  }

  /**
   * Spawns a container's process. The container may have been removed while
   * the request waited for its streams or for the spawn: then nothing is left
   * running (nobody could kill it) and the caller gets NOT_FOUND.
   */
  private async start(c: Container, execId: string, process: Process, fds: (number | null)[]): Promise<void> {
    if (this.containers.get(c.id) !== c) {
      for (const fd of fds) closeQuietly(fd);
      throw removedMeanwhile(c.id);
    }
    let proc: ContainerProcess;
    const user = process.User;
    const initPid = execId === c.id ? undefined : (c.execs.get(c.id)?.process.containerPid ?? undefined);
    let namespaces: ContainerNamespaces | undefined;
    try {
      if (execId === c.id && c.rootfs) namespaces = this.namespaceSources(c.rootfs.namespaces);
    } catch (err) {
      for (const fd of fds) closeQuietly(fd);
      throw err;
    }
    try {
      proc = await spawnContainerProcess({
        ...(c.rootfs
          ? {
              container: {
                root: c.rootfs.path,
                runtimeDir: this.runtimeDir,
                ...(execId === c.id
                  ? {
                      hostname: c.rootfs.hostname,
                      mounts: c.rootfs.mounts,
                      ...(namespaces ? { namespaces } : {}),
                    }
                  : { joinPid: initPid }),
                ...(user
                  ? { user: { uid: user.UID, gid: user.GID, additionalGids: user.AdditionalGids } }
                  : {}),
              },
            }
          : {}),
        args: process.Args,
        // A container's environment is exactly its spec's; `run` without -e inherits the agent's.
        env: process.Env.length > 0 || c.rootfs ? process.Env : undefined,
        cwd: process.Cwd || undefined,
        terminal: process.Terminal,
        ...(process.Terminal && process.ConsoleSize?.Height && process.ConsoleSize.Width
          ? { rows: process.ConsoleSize.Height, cols: process.ConsoleSize.Width }
          : {}),
        stdinFd: fds[0] ?? null,
        stdoutFd: fds[1] ?? null,
        stderrFd: fds[2] ?? null,
        ...this.spawnDefaults,
      });
    } catch (err) {
      // The launcher owns the fds from the call on and has closed them.
      // A container's cwd is in its root, not the agent's: checked there (container-root.ts).
      if ((err as { badCwd?: string }).badCwd !== undefined)
        throw new TtrpcError(
          GrpcCode.INVALID_ARGUMENT,
          `${START_FAILURE} ${process.Args[0]}: ${(err as Error).message}`,
        );
      throw startError(err, process.Args[0]!, c.rootfs ? undefined : process.Cwd || undefined);
    }
    if (this.containers.get(c.id) !== c) {
      proc.signal('SIGKILL', { group: true });
      proc.destroy();
      throw removedMeanwhile(c.id);
    }
    c.execs.set(execId, { process: proc, readChain: new Map() });
    // In a container with a terminal the process leads its own group apart from the helper's: guard both.
    const groups = proc.containerPid !== null && proc.terminal ? [proc.pid, proc.containerPid] : [proc.pid];
    for (const g of groups) this.guardian?.track(g);
    void proc.wait().finally(() => {
      for (const g of groups) this.guardian?.leaderGone(g);
    });
    this.log.debug(`started ${c.id}/${execId} pid ${proc.pid}: ${process.Args.join(' ')}`);
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw new TtrpcError(GrpcCode.NOT_FOUND, `container ${id} not found`);
    return c;
  }

  private exec(containerId: string, execId: string): { c: Container; entry: ExecEntry; execId: string } {
    const c = this.container(containerId);
    const id = execId || c.id;
    const entry = c.execs.get(id);
    if (!entry) throw new TtrpcError(GrpcCode.NOT_FOUND, `process ${containerId}/${id} not found`);
    return { c, entry, execId: id };
  }

  /**
   * An exec leaves the table once its exit has been reported and its RPC
   * output pipes have been read to EOF (at once on the passfd path: it has
   * none). The runtime reads on after WaitProcess answers (the exit is
   * reported to containerd only once every byte is in its FIFOs), so
   * forgetting the exec at its exit would turn the next ReadStdout into
   * NOT_FOUND and lose what is still in the pipe. An output nobody reads (a
   * background child holding the pipe) keeps the entry until the container
   * goes; ExecProcess may reuse the id of such an exited exec.
   */
  private forgetOnceRead(c: Container, execId: string, entry: ExecEntry): void {
    const pipes = [entry.process.stdoutPipe, entry.process.stderrPipe].filter(
      (p): p is Readable => p !== null,
    );
    void Promise.all(pipes.map((p) => finished(p, { writable: false }).catch(() => undefined))).then(() => {
      if (c.execs.get(execId) === entry) c.execs.delete(execId);
    });
  }

  /** One ReadStdout/ReadStderr: up to `len` bytes, empty at EOF. Calls on a stream are served in order. */
  private readFrom(entry: ExecEntry, pipe: Readable | null, len: number, what: string): Promise<Uint8Array> {
    if (!pipe) throw precondition(`${what} is a passfd stream, not served over RPC`);
    const prev = entry.readChain.get(pipe) ?? Promise.resolve();
    const next = prev.then(() => readUpTo(pipe, Math.max(1, Math.min(len || MAX_READ, MAX_READ))));
    entry.readChain.set(
      pipe,
      next.catch(() => undefined),
    );
    return next;
  }

  /** Kills every process (agent shutdown). */
  close(): void {
    for (const c of this.containers.values()) {
      for (const e of c.execs.values()) {
        e.process.signal('SIGKILL', { group: true });
        e.process.destroy();
      }
      if (c.pending) for (const fd of c.pending.fds) closeQuietly(fd);
    }
    this.containers.clear();
  }
}

const SIGKILL = os.constants.signals.SIGKILL;
const SIGTERM = os.constants.signals.SIGTERM;

/** PATH from a process's "K=V" environment. */
function envPath(env: readonly string[]): string | undefined {
  return env.find((e) => e.startsWith('PATH='))?.slice(5);
}

function invalid(msg: string): TtrpcError {
  return new TtrpcError(GrpcCode.INVALID_ARGUMENT, msg);
}
function exists(msg: string): TtrpcError {
  return new TtrpcError(GrpcCode.ALREADY_EXISTS, msg);
}
function removedMeanwhile(id: string): TtrpcError {
  return new TtrpcError(GrpcCode.NOT_FOUND, `container ${id} was removed while the request was in progress`);
}
function precondition(msg: string): TtrpcError {
  return new TtrpcError(GrpcCode.FAILED_PRECONDITION, msg);
}

function writeAll(pipe: Writable, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (pipe.writableEnded || pipe.destroyed) {
      reject(precondition('stdin is closed'));
      return;
    }
    pipe.write(data, (err) => (err ? reject(new TtrpcError(GrpcCode.UNAVAILABLE, err.message)) : resolve()));
  });
}

/** Reads what is available (at most `len` bytes), waiting for at least one byte; empty at EOF. */
function readUpTo(pipe: Readable, len: number): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const attempt = (): boolean => {
      // Ask for exactly what we return: read() with no size would copy the whole
      // buffered backlog on every call, and unshifting the rest copies it again.
      const avail = pipe.readableLength;
      const chunk = (avail > 0 ? pipe.read(Math.min(len, avail)) : pipe.read()) as Buffer | null;
      if (chunk !== null) {
        if (chunk.length > len) pipe.unshift(chunk.subarray(len));
        resolve(chunk.subarray(0, len));
        return true;
      }
      if (pipe.readableEnded || pipe.destroyed) {
        resolve(new Uint8Array(0));
        return true;
      }
      return false;
    };
    if (attempt()) return;
    const done = () => {
      pipe.off('readable', onReadable);
      pipe.off('end', onEnd);
      pipe.off('close', onEnd);
    };
    const onReadable = () => {
      if (attempt()) done();
    };
    const onEnd = () => {
      done();
      resolve(new Uint8Array(0));
    };
    pipe.on('readable', onReadable);
    pipe.on('end', onEnd);
    pipe.on('close', onEnd);
  });
}
