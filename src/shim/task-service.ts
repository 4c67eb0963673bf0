/**
 * containerd's Task service (`containerd.task.v2.Task`) over the broker and
 * the guest: what containerd's calls do here.
 *
 * - Create: reads the bundle's config.json, mounts the rootfs on
 *   `<bundle>/rootfs`, gets the sandbox (sandbox-slot.ts), makes the rootfs
 *   reachable in the guest, and has the broker hold and pass the FIFOs and
 *   CreateContainer in the guest. Anything that fails is undone before the
 *   error goes back (no mount, FIFO or guest container is left).
 * - Start: StartContainer (init) or ExecProcess (exec); the process's exit
 *   is then followed: the broker's wait() reports it once every output byte
 *   is in containerd's FIFOs, and only then do Wait callers hear of it and
 *   the /tasks/exit event go out.
 * - Kill: SignalProcess; for the init the exec id is "" as Kata's runtime
 *   sends it (the agent then kills everything on SIGKILL). Kill of a
 *   stopped process is NotFound "process already finished", as runc's.
 * - Delete: of a running task is refused; otherwise RemoveContainer,
 *   unmount, /tasks/delete; the last container's Delete stops the guest.
 * - Shutdown: ignored while containers remain; else the shim exits.
 * - Stats: the agent's StatsContainer as cgroup v2 metrics (task-metrics.ts).
 * - Pause, Resume, Checkpoint, Update: UNIMPLEMENTED (containerd's
 *   ErrNotImplemented), answered at once.
 *
 * Task pids: as Kata does, the host pid of the guest's hypervisor (the vmm
 * for the loopback guest, QEMU for a VM): guest pids mean nothing on the
 * host. Create, Start, Delete, Exec and Shutdown run one at a time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { FifoPaths } from '../broker/fifo-set.js';
import { agentMethods } from '../protocol/agent-api.js';
import {
  type CreateTaskRequest,
  type ExecProcessRequest,
  OCI_PROCESS_TYPE_URL,
  Status,
  TaskCreateSchema,
  TaskDeleteSchema,
  TaskExecAddedSchema,
  TaskExecStartedSchema,
  TaskExitSchema,
  TaskStartSchema,
  TaskTopic,
  taskMethods,
  unpackConfigPath,
} from '../protocol/containerd-api.js';
import { GrpcCode } from '../protocol/ttrpc.js';
import { TtrpcError } from '../ttrpc/errors.js';
import type { TtrpcServer } from '../ttrpc/server.js';
import type { Logger } from '../util/log.js';
import { isValidTaskId } from './address.js';
import { Container, ShimProcess, type Stdio } from './container.js';
import {
  alreadyExists,
  asTtrpcError,
  failedPrecondition,
  invalidArgument,
  notFound,
  notImplemented,
} from './errors.js';
import type { EventPublisher } from './events.js';
import { guestMounts } from './guest-mounts.js';
import { guestNamespaces } from './guest-namespaces.js';
import { type OciProcess, parseProcess, readSpec, rootOnHost } from './oci-spec.js';
import { mountRootfs, unmountAll } from './rootfs.js';
import type { Sandbox } from './sandbox.js';
import type { SandboxSlot } from './sandbox-slot.js';
import { metricsFromAgent } from './task-metrics.js';

/** Exit status reported when the guest went away under a process (its real status is unknowable). */
export const GUEST_LOST_STATUS = 255;

export interface TaskServiceOptions {
  namespace: string;
  log: Logger;
  events: EventPublisher;
  sandboxes: SandboxSlot;
  version: string;
  /** Shutdown with no containers left: called before the reply goes out (the process must end soon after). */
  onShutdown(): void;
  /** A task was created from `bundle` (the shim now serves it too). */
  onTaskCreated?(bundle: string): void;
  /** The task from `bundle` was deleted. */
  onTaskDeleted?(bundle: string): void;
}

const ts = (d: Date | null) => timestampFromDate(d ?? new Date(0));
const fifoPaths = (s: Stdio): FifoPaths => ({
  stdin: s.stdin || undefined,
  stdout: s.stdout || undefined,
  stderr: s.terminal ? undefined : s.stderr || undefined,
});

export class TaskService {
  private readonly containers = new Map<string, Container>();
  private sandbox: Sandbox | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: TaskServiceOptions) {}

  get containerCount(): number {
    return this.containers.size;
  }

  /** Runs `fn` after every earlier serialized call has finished. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => {});
    return run;
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw notFound(`task ${id} not found`);
    return c;
  }

  private get pid(): number {
    return this.sandbox?.hypervisorPid ?? 0;
  }

  register(server: TtrpcServer): void {
    const m = taskMethods;
    const log = this.o.log;
    server.registerTyped(m.Create, (r) => this.serial(() => this.create(r)));
    server.registerTyped(m.Start, (r) => this.serial(() => this.start(r.id, r.execId)));
    server.registerTyped(m.Delete, (r) => this.serial(() => this.delete(r.id, r.execId)));
    server.registerTyped(m.Exec, (r) => this.serial(async () => this.exec(r)));
    server.registerTyped(m.Kill, (r) => this.kill(r.id, r.execId, r.signal, r.all));
    server.registerTyped(m.Wait, async (r, ctx) => {
      const p = this.container(r.id).process(r.execId);
      const aborted = new Promise<never>((_, reject) => {
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
      });
      await Promise.race([p.exited, aborted]);
      return { exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
    });
    server.registerTyped(m.State, (r) => {
      const c = this.container(r.id);
      const p = c.process(r.execId);
      return {
        id: r.execId || c.id,
        execId: r.execId,
        bundle: c.bundle,
        pid: this.pid,
        status: p.status,
        ...p.stdio,
        exitStatus: p.exitStatus,
        exitedAt: ts(p.exitedAt),
      };
    });
    server.registerTyped(m.Pids, (r) => {
      this.container(r.id);
      return { processes: this.pid ? [{ pid: this.pid }] : [] };
    });
    server.registerTyped(m.ResizePty, async (r) => {
      const p = this.container(r.id).process(r.execId);
      log.debug(
        `resize ${r.id}${r.execId ? `/${r.execId}` : ''} to ${r.height}x${r.width} (${Status[p.status]})`,
      );
      if (p.status !== Status.RUNNING || !p.brokered) {
        p.consoleSize = { rows: r.height, cols: r.width };
        return {};
      }
      await p.brokered.resize(r.height, r.width).catch((err) => {
        throw asTtrpcError(err, 'resize pty');
      });
      return {};
    });
    server.registerTyped(m.CloseIO, async (r) => {
      const p = this.container(r.id).process(r.execId);
      // Not awaited: on the RPC path stdin ends only once the FIFO is drained to EOF, and ctr
      // closes its writer only after this call has returned (it calls CloseIO from its read of EOF).
      if (r.stdin && p.brokered) {
        p.brokered.closeStdin().catch((err: Error) => log.warn(`close stdin of ${r.id}: ${err.message}`));
      }
      return {};
    });
    server.registerTyped(m.Connect, () => ({
      shimPid: process.pid,
      taskPid: this.pid,
      version: this.o.version,
    }));
    server.registerTyped(m.Shutdown, () =>
      this.serial(async () => {
        if (this.containers.size > 0) return {};
        log.info('shutdown: no tasks left');
        this.o.onShutdown();
        return {};
      }),
    );
    server.registerTyped(m.Stats, async (r) => {
      const c = this.container(r.id);
      const sandbox = this.sandbox;
      if (!sandbox || c.init.status !== Status.RUNNING)
        throw failedPrecondition(`task ${r.id} is not running`);
      const res = await sandbox.broker
        .call(agentMethods.StatsContainer, { containerId: r.id })
        .catch((err: unknown) => {
          throw asTtrpcError(err, 'stats');
        });
      return { stats: metricsFromAgent(res) };
    });
    const unsupported = (what: string) => () => {
      throw notImplemented(`${what}: not supported by io.containerd.passfd.v2`);
    };
    server.registerTyped(m.Pause, unsupported('pause'));
    server.registerTyped(m.Resume, unsupported('resume'));
    server.registerTyped(m.Checkpoint, unsupported('checkpoint'));
    server.registerTyped(m.Update, unsupported('update'));
  }

  private async create(r: CreateTaskRequest) {
    if (!isValidTaskId(r.id)) throw invalidArgument(`invalid task id ${JSON.stringify(r.id)}`);
    if (this.containers.has(r.id)) throw alreadyExists(`task ${r.id} already exists`);
    if (r.checkpoint) throw notImplemented('restore from a checkpoint');
    const log = this.o.log;
    let spec: ReturnType<typeof readSpec>;
    try {
      spec = readSpec(r.bundle);
    } catch (err) {
      throw invalidArgument((err as Error).message);
    }
    const undo: (() => void | Promise<void>)[] = [];
    const rollback = async () => {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (err) {
          log.warn(`undoing create ${r.id}: ${(err as Error).message}`);
        }
      }
    };
    try {
      let host: string;
      let mounted = false;
      if (r.rootfs.length > 0) {
        host = path.join(r.bundle, 'rootfs');
        mountRootfs(r.rootfs, host);
        mounted = true;
        undo.push(() => void unmountAll(host));
      } else {
        host = rootOnHost(r.bundle, spec);
        if (!fs.statSync(host, { throwIfNoEntry: false })?.isDirectory()) {
          throw new Error(`root filesystem ${host} does not exist (no rootfs mounts were given)`);
        }
      }
      const inUse = this.containers.size > 0;
      const sandbox = await this.o.sandboxes.get(unpackConfigPath(r.options), inUse).catch((err: Error) => {
        throw new Error(inUse ? err.message : `the guest did not start: ${err.message}`);
      });
      this.sandbox = sandbox;
      const guestRoot = sandbox.addRootfs(r.id, host);
      undo.push(() => sandbox.removeRootfs(r.id));
      const mounts = guestMounts(spec.mounts, (n, source) => {
        if (!fs.existsSync(source)) throw new Error(`bind mount source ${source} does not exist`);
        return sandbox.addMountSource(r.id, n, source);
      });
      const stdio: Stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
      const init = new ShimProcess('', spec.process, stdio);
      init.brokered = await sandbox.broker.create({
        ...this.processSpec(r.id, undefined, spec.process, init),
        root: guestRoot,
        hostname: spec.hostname,
        mounts,
        annotations: spec.annotations,
        namespaces: guestNamespaces(spec, r.id, sandbox.kind),
        removeOnExit: false,
      });
      const c = new Container(r.id, r.bundle, spec, init, { host, mounted });
      this.containers.set(r.id, c);
      this.o.onTaskCreated?.(r.bundle);
      this.watchGuest(sandbox);
      log.info(
        `created task ${r.id} (${sandbox.kind} guest, ${sandbox.broker.config.runtime.use_passfd_io ? 'passfd' : 'rpc-copy'} IO)`,
      );
      this.o.events.publish(TaskTopic.create, TaskCreateSchema, {
        containerId: r.id,
        bundle: r.bundle,
        rootfs: r.rootfs,
        io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        checkpoint: r.checkpoint,
        pid: this.pid,
      });
      return { pid: this.pid };
    } catch (err) {
      await rollback();
      log.error(`create ${r.id}: ${(err as Error).message}`);
      throw asTtrpcError(err, 'passfd create');
    }
  }

  private processSpec(containerId: string, execId: string | undefined, spec: OciProcess, p: ShimProcess) {
    return {
      containerId,
      ...(execId !== undefined ? { execId } : {}),
      args: spec.args,
      env: spec.env,
      cwd: spec.cwd,
      terminal: p.stdio.terminal,
      ...(p.consoleSize ? { rows: p.consoleSize.rows, cols: p.consoleSize.cols } : {}),
      user: spec.user,
      fifos: fifoPaths(p.stdio),
    };
  }

  private async start(id: string, execId: string) {
    const c = this.container(id);
    const p = c.process(execId);
    if (p.status !== Status.CREATED) throw failedPrecondition(`process ${execId || id} was already started`);
    const sandbox = this.sandbox!;
    try {
      if (p.isInit) {
        await p.brokered!.begin();
      } else {
        if (c.init.status !== Status.RUNNING) throw failedPrecondition(`task ${id} is not running`);
        p.brokered = await sandbox.broker.start(this.processSpec(id, execId, p.spec, p));
      }
    } catch (err) {
      this.o.log.error(`start ${id}${execId ? `/${execId}` : ''}: ${(err as Error).message}`);
      throw asTtrpcError(err, 'passfd start');
    }
    p.status = Status.RUNNING;
    // A size that came while the init was only created (its pty exists already): apply it now.
    if (p.isInit && p.consoleSize && p.stdio.terminal) {
      await p.brokered!.resize(p.consoleSize.rows, p.consoleSize.cols).catch(() => {});
    }
    this.followExit(c, p);
    if (p.isInit) this.o.events.publish(TaskTopic.start, TaskStartSchema, { containerId: id, pid: this.pid });
    else
      this.o.events.publish(TaskTopic.execStarted, TaskExecStartedSchema, {
        containerId: id,
        execId,
        pid: this.pid,
      });
    return { pid: this.pid };
  }

  /** Records the exit once the broker reports it (every output byte delivered). */
  private followExit(c: Container, p: ShimProcess): void {
    p.brokered!.wait().then(
      (status) => this.exited(c, p, status),
      (err: Error) => {
        this.o.log.error(`${c.id}${p.execId ? `/${p.execId}` : ''}: lost the process: ${err.message}`);
        this.exited(c, p, GUEST_LOST_STATUS);
      },
    );
  }

  private exited(c: Container, p: ShimProcess, status: number): void {
    if (!p.markExited(status)) return;
    this.o.log.info(`${c.id}${p.execId ? `/${p.execId}` : ''} exited with ${status}`);
    this.o.events.publish(TaskTopic.exit, TaskExitSchema, {
      containerId: c.id,
      id: p.execId || c.id,
      pid: this.pid,
      exitStatus: status,
      exitedAt: ts(p.exitedAt),
    });
  }

  private watched = new WeakSet<Sandbox>();

  /** When the guest dies by itself, every process in it is lost. */
  private watchGuest(sandbox: Sandbox): void {
    if (this.watched.has(sandbox)) return;
    this.watched.add(sandbox);
    void sandbox.died.then((why) => {
      if (this.sandbox !== sandbox) return;
      this.o.log.error(`the guest went away: ${why}`);
      for (const c of this.containers.values()) {
        for (const p of [c.init, ...c.execs.values()]) {
          if (p.status === Status.CREATED) {
            p.brokered?.releaseAll();
            this.exited(c, p, GUEST_LOST_STATUS);
          }
        }
      }
    });
  }

  private exec(r: ExecProcessRequest) {
    const c = this.container(r.id);
    if (!r.execId) throw invalidArgument('exec id is empty');
    if (c.execs.has(r.execId)) throw alreadyExists(`exec ${r.execId} already exists in task ${r.id}`);
    if (c.init.status !== Status.RUNNING) throw failedPrecondition(`task ${r.id} is not running`);
    const any = r.spec;
    // containerd registers it as types.containerd.io/…; the path after the host is what identifies it.
    if (!any?.typeUrl.endsWith(OCI_PROCESS_TYPE_URL.slice(OCI_PROCESS_TYPE_URL.indexOf('/')))) {
      throw invalidArgument(`exec spec must be a ${OCI_PROCESS_TYPE_URL}, got ${any?.typeUrl ?? 'nothing'}`);
    }
    let spec: OciProcess;
    try {
      spec = parseProcess(JSON.parse(Buffer.from(any.value).toString('utf8')), 'exec process');
    } catch (err) {
      throw invalidArgument((err as Error).message);
    }
    const stdio: Stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
    c.execs.set(r.execId, new ShimProcess(r.execId, spec, stdio));
    this.o.events.publish(TaskTopic.execAdded, TaskExecAddedSchema, {
      containerId: r.id,
      execId: r.execId,
    });
    return {};
  }

  private async kill(id: string, execId: string, signal: number, all: boolean) {
    const c = this.container(id);
    const p = c.process(execId);
    if (p.status === Status.STOPPED) throw notFound('process already finished');
    if (p.status === Status.CREATED) {
      // Never started: nothing runs in the guest yet. Drop it as if the signal had ended it.
      if (p.isInit) await this.removeInGuest(c);
      p.brokered?.releaseAll();
      this.exited(c, p, 128 + signal);
      return {};
    }
    try {
      await this.sandbox!.broker.call(agentMethods.SignalProcess, {
        containerId: id,
        // Kata's convention: the init is signalled with an empty exec id (all processes on SIGKILL).
        execId: p.isInit ? '' : execId,
        signal,
      });
    } catch (err) {
      if (err instanceof TtrpcError && err.code === GrpcCode.NOT_FOUND)
        throw notFound('process already finished');
      throw asTtrpcError(err, 'passfd kill');
    }
    if (all) this.o.log.debug(`kill --all ${id}: signal ${signal}`);
    return {};
  }

  private async removeInGuest(c: Container): Promise<void> {
    await this.sandbox?.broker
      .call(agentMethods.RemoveContainer, { containerId: c.id })
      .catch((err: Error) => {
        if (!(err instanceof TtrpcError && err.code === GrpcCode.NOT_FOUND))
          this.o.log.warn(`RemoveContainer ${c.id}: ${err.message}`);
      });
  }

  private async delete(id: string, execId: string) {
    const c = this.container(id);
    const p = c.process(execId);
    if (p.status === Status.RUNNING)
      throw failedPrecondition(`cannot delete running ${execId ? 'exec' : 'task'} ${execId || id}`);
    if (p.status === Status.CREATED) {
      p.brokered?.releaseAll();
      p.markExited(0);
    }
    const reply = { pid: this.pid, exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
    if (!p.isInit) {
      c.execs.delete(execId);
      return reply;
    }
    for (const e of c.execs.values()) e.brokered?.releaseAll();
    await this.removeInGuest(c);
    const sandbox = this.sandbox;
    try {
      sandbox?.removeRootfs(id);
      if (c.rootfs.mounted) unmountAll(c.rootfs.host);
    } catch (err) {
      this.o.log.error(`delete ${id}: unmount: ${(err as Error).message}`);
      throw asTtrpcError(err, 'passfd delete');
    }
    this.containers.delete(id);
    this.o.onTaskDeleted?.(c.bundle);
    this.o.events.publish(TaskTopic.delete, TaskDeleteSchema, {
      containerId: id,
      pid: this.pid,
      exitStatus: p.exitStatus,
      exitedAt: ts(p.exitedAt),
    });
    if (this.containers.size === 0) {
      this.o.log.info('last task deleted: stopping the guest');
      this.sandbox = null;
      await this.o.sandboxes.stop();
    }
    return reply;
  }
}
