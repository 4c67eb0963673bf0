/**
 * The broker (host, runtime side): starts a container or exec process whose
 * stdio are containerd's FIFOs, the way a Kata runtime does with Dragonball's
 * passfd IO.
 *
 * passfd path (`use_passfd_io = true`):
 *   1. open a keeper per FIFO (fifo-set.ts);
 *   2. pass a flow-direction fd per FIFO to the device (`passfd`, port =
 *      `passfd_listener_port`) and collect the host ports it assigns;
 *   3. CreateContainer + StartContainer, or ExecProcess, naming those ports,
 *      over ttrpc on a `CONNECT <agent port>` stream.
 *   From then on no byte of stdio passes through the broker.
 *   `Broker.create` + `BrokeredProcess.begin` split this in two (1-2 and
 *   CreateContainer, then StartContainer or ExecProcess) for containerd's
 *   Create and Start.
 *   - CloseStdin drops the stdin keeper: the device drains the FIFO, sees
 *     EOF, and the agent closes the process's stdin (no byte lost).
 *   - `wait()` = WaitProcess (the agent answers once every output byte has
 *     left it), then waits until the device has closed each output
 *     connection (the lingering passfd control socket closes: every byte is
 *     in the FIFO), then until containerd's reader has taken them
 *     (reader-catch-up.ts: containerd's client closes its readers as soon
 *     as it hears of the exit). Only then is the exit reported and the
 *     keepers released. The RPC-copy path ends the same way.
 *
 * The RPC-copy path (`use_passfd_io = false`) is in rpc-copy.ts.
 */
import fs from 'node:fs';
import type { DescMessage, MessageInitShape } from '@bufbuild/protobuf';
import { closeQuietly } from '../../native-bindings/index.js';
import type { Config } from '../config/schema.js';
import { agentMethods } from '../protocol/agent-api.js';
import { GrpcCode } from '../protocol/ttrpc.js';
import { TtrpcClient } from '../ttrpc/client.js';
import type { TtrpcMethod } from '../ttrpc/common.js';
import { TtrpcError } from '../ttrpc/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { type FifoPaths, FifoSet, type StdioName } from './fifo-set.js';
import { hybridConnect, type PassedFd, passFdTracked } from './hvsock-client.js';
import { READER_STALL_MS, readersCaughtUp } from './reader-catch-up.js';
import { RpcCopy } from './rpc-copy.js';

export interface ProcessSpec {
  containerId: string;
  /** Absent: the container's init process (CreateContainer + StartContainer). Present: ExecProcess. */
  execId?: string;
  args: string[];
  env?: string[];
  cwd?: string;
  terminal?: boolean;
  rows?: number;
  cols?: number;
  fifos: FifoPaths;
  /** The process's user (OCI `process.user`); default: the agent's. */
  user?: { uid: number; gid: number; additionalGids?: number[] };
  /** Init process only: the container's root filesystem as the guest sees it (OCI `root.path`); default: the agent's root. */
  root?: string;
  /** Init process only: the container's hostname (OCI `hostname`). */
  hostname?: string;
  /** Init process only: the spec's annotations (OCI `annotations`; the agent finds a pod's sandbox by them). */
  annotations?: Record<string, string>;
  /**
   * Init process only: the Linux namespaces the container gets new (no
   * path) or shares with its pod's sandbox (a path, as containerd's CRI
   * writes it: the agent joins the sandbox's own); none: all new.
   */
  namespaces?: { type: string; path: string }[];
  /** Init process only: join the pod sandbox's PID namespace (Kata's `sandbox_pidns`). */
  sandboxPidns?: boolean;
  /** Init process only: the container's extra mounts (OCI `mounts`, sources as the guest sees them). */
  mounts?: { destination: string; source: string; type: string; options: string[] }[];
  /**
   * Init process only: RemoveContainer once it has exited and its output is
   * delivered (default true, what `run` wants). A runtime that keeps the
   * container until its own Delete (the containerd shim) passes false.
   */
  removeOnExit?: boolean;
}

export interface BrokerOptions {
  hvsockPath: string;
  config: Config;
  /** Where warnings go (default: component "broker" on stderr, level from PASSFD_LOG). */
  log?: Logger;
  /**
   * How long the reader of an output FIFO may take nothing before an exit is
   * reported with bytes still unread (default READER_STALL_MS; see
   * reader-catch-up.ts for why the exit waits for the reader at all).
   */
  readerStallMs?: number;
}

/**
 * The exit status a shell gives a command that could not run, when `err`
 * (from `Broker.start`) is the agent saying so: 127 when the command was
 * not found, 126 when it was found but cannot be executed. Null for any
 * other failure. (The agent's answers: src/agent/start-error.ts.)
 */
export function notRunnableStatus(err: unknown): 126 | 127 | null {
  if (!(err instanceof TtrpcError) || !err.message.startsWith('cannot start ')) return null;
  if (err.code === GrpcCode.NOT_FOUND) return 127;
  if (err.code === GrpcCode.PERMISSION_DENIED) return 126;
  return null;
}

const SIGPIPE = 13;

/** How long `wait()` waits for the device to finish delivering output after the exit. */
const OUTPUT_SETTLE_MS = 30_000;

export class Broker {
  private client: TtrpcClient | null = null;
  private readonly opts: Required<BrokerOptions>;

  constructor(opts: BrokerOptions) {
    this.opts = {
      ...opts,
      log: opts.log ?? createLogger('broker'),
      readerStallMs: opts.readerStallMs ?? READER_STALL_MS,
    };
  }

  get config(): Config {
    return this.opts.config;
  }

  /** The ttrpc client to the agent, over `CONNECT <agent_port>` (opened once). */
  async agent(): Promise<TtrpcClient> {
    if (this.client && !this.client.closed) return this.client;
    const { socket } = await hybridConnect(this.opts.hvsockPath, this.opts.config.runtime.agent_port);
    socket.resume();
    this.client = new TtrpcClient(socket);
    return this.client;
  }

  async call<I extends DescMessage, O extends DescMessage>(
    method: TtrpcMethod<I, O>,
    req: MessageInitShape<I>,
  ) {
    return (await this.agent()).callTyped(method, req);
  }

  /** Starts a process with its stdio on the FIFOs; resolves once it runs. */
  async start(spec: ProcessSpec): Promise<BrokeredProcess> {
    const proc = new BrokeredProcess(this, spec, this.opts);
    await proc.start();
    return proc;
  }

  /**
   * The first half of `start`, for runtimes that create and start in two
   * steps (containerd's Create and Start): the FIFOs are held and passed and,
   * for an init process, CreateContainer is done. `proc.begin()` starts it.
   */
  async create(spec: ProcessSpec): Promise<BrokeredProcess> {
    const proc = new BrokeredProcess(this, spec, this.opts);
    await proc.create();
    return proc;
  }

  async close(): Promise<void> {
    await this.client?.close();
    this.client = null;
  }
}

export class BrokeredProcess {
  readonly fifos: FifoSet;
  readonly hostPorts: Partial<Record<StdioName, number>> = {};
  private readonly passed = new Map<StdioName, PassedFd>();
  private rpc: RpcCopy | null = null;
  private exitStatus: Promise<number> | null = null;
  readonly execId: string;

  constructor(
    private readonly broker: Broker,
    readonly spec: ProcessSpec,
    private readonly opts: Required<BrokerOptions>,
  ) {
    this.fifos = new FifoSet(spec.fifos);
    this.execId = spec.execId ?? spec.containerId;
  }

  get usesPassfd(): boolean {
    return this.opts.config.runtime.use_passfd_io;
  }

  private streams(): StdioName[] {
    const names: StdioName[] = ['stdin', 'stdout'];
    if (!this.spec.terminal) names.push('stderr');
    return names.filter((n) => this.spec.fifos[n]);
  }

  async start(): Promise<void> {
    await this.create();
    await this.begin();
  }

  /** Holds and passes the FIFOs; CreateContainer for an init process. Undone if it fails. */
  async create(): Promise<void> {
    this.fifos.openKeepers();
    try {
      if (this.usesPassfd) await this.passAll();
      if (this.spec.execId === undefined) {
        await this.broker.call(agentMethods.CreateContainer, {
          containerId: this.spec.containerId,
          execId: this.spec.containerId,
          OCI: {
            Process: this.agentProcess(),
            ...(this.spec.root ? { Root: { Path: this.spec.root } } : {}),
            Hostname: this.spec.hostname ?? '',
            Mounts: this.spec.mounts ?? [],
            Annotations: this.spec.annotations ?? {},
            ...(this.spec.namespaces?.length
              ? { Linux: { Namespaces: this.spec.namespaces.map((n) => ({ Type: n.type, Path: n.path })) } }
              : {}),
          },
          sandboxPidns: this.spec.sandboxPidns ?? false,
          ...this.ports(),
        });
      }
    } catch (err) {
      this.releaseAll();
      throw err;
    }
  }

  /** Starts what `create` prepared (StartContainer, or ExecProcess); the FIFOs are released if it fails. */
  async begin(): Promise<void> {
    try {
      await this.launch();
      if (!this.usesPassfd) {
        const { stdin, stdout, stderr } = this.spec.fifos;
        this.rpc = new RpcCopy({
          call: (method, req) => this.broker.call(method, req),
          containerId: this.spec.containerId,
          execId: this.execId,
          fifos: { stdin, stdout, ...(this.spec.terminal ? {} : { stderr }) },
          releaseStdin: () => this.fifos.release('stdin'),
          chunkSize: this.opts.config.runtime.rpc_chunk_size,
          log: this.opts.log,
        });
      }
    } catch (err) {
      this.releaseAll();
      throw err;
    }
  }

  private async passAll(): Promise<void> {
    const port = this.opts.config.runtime.passfd_listener_port;
    await Promise.all(
      this.streams().map(async (name) => {
        const fd = this.fifos.openFlowFd(name);
        try {
          const p = await passFdTracked(this.opts.hvsockPath, fd, port);
          this.passed.set(name, p);
          this.hostPorts[name] = p.hostPort;
        } finally {
          // The device holds its own copy now (or the pass failed): ours is not needed.
          fs.closeSync(fd);
        }
      }),
    );
  }

  private agentProcess() {
    const s = this.spec;
    return {
      Terminal: s.terminal ?? false,
      Args: s.args,
      Env: s.env ?? [],
      Cwd: s.cwd ?? '',
      ...(s.rows && s.cols ? { ConsoleSize: { Height: s.rows, Width: s.cols } } : {}),
      ...(s.user
        ? { User: { UID: s.user.uid, GID: s.user.gid, AdditionalGids: s.user.additionalGids ?? [] } }
        : {}),
    };
  }

  private ports() {
    return {
      stdinPort: this.hostPorts.stdin ?? 0,
      stdoutPort: this.hostPorts.stdout ?? 0,
      stderrPort: this.hostPorts.stderr ?? 0,
    };
  }

  private async launch(): Promise<void> {
    const s = this.spec;
    if (s.execId === undefined) {
      await this.broker.call(agentMethods.StartContainer, { containerId: s.containerId });
    } else {
      await this.broker.call(agentMethods.ExecProcess, {
        containerId: s.containerId,
        execId: s.execId,
        process: this.agentProcess(),
        ...this.ports(),
      });
    }
  }

  /** No more stdin: losslessly (see module comment). */
  async closeStdin(): Promise<void> {
    if (this.rpc) {
      await this.rpc.closeStdin();
      return;
    }
    this.fifos.release('stdin');
  }

  /**
   * containerd's reader of `name` is gone for good (`run`'s own stdout was
   * closed, as in `run … | head`): the process must meet what a writer to a
   * closed pipe meets. passfd: the keeper goes, the FIFO has no reader left,
   * the device's next write fails with EPIPE and ends the connection, the
   * agent closes the process's pipe, and its next write raises SIGPIPE (EPIPE
   * if it ignores that). The RPC-copy path has no call that closes a
   * process's pipe: the copier stops and SignalProcess sends SIGPIPE.
   */
  async outputGone(name: 'stdout' | 'stderr'): Promise<void> {
    this.fifos.release(name);
    if (this.rpc) await this.signal(SIGPIPE);
  }

  async signal(sig: number): Promise<void> {
    await this.broker.call(agentMethods.SignalProcess, {
      containerId: this.spec.containerId,
      execId: this.execId,
      signal: sig,
    });
  }

  async resize(rows: number, cols: number): Promise<void> {
    await this.broker.call(agentMethods.TtyWinResize, {
      containerId: this.spec.containerId,
      execId: this.execId,
      row: rows,
      column: cols,
    });
  }

  /** The exit status, reported only once every output byte is in the FIFOs; then the keepers are released. */
  wait(): Promise<number> {
    this.exitStatus ??= this.waitOnce();
    return this.exitStatus;
  }

  private async waitOnce(): Promise<number> {
    let res: { status: number };
    try {
      res = await this.broker.call(agentMethods.WaitProcess, {
        containerId: this.spec.containerId,
        execId: this.execId,
      });
    } catch (err) {
      // The agent (or the whole guest) is gone: no exit will ever be reported and
      // no byte will arrive. Let go of the FIFOs so containerd's readers see EOF
      // and its writer EPIPE, instead of waiting on us until the runtime exits.
      this.releaseAll();
      throw err;
    }
    if (this.rpc) await this.rpc.outputDone();
    else await this.outputDelivered();
    await this.outputTaken();
    if (this.spec.execId === undefined && this.spec.removeOnExit !== false) {
      await this.broker
        .call(agentMethods.RemoveContainer, { containerId: this.spec.containerId })
        .catch((err) => {
          this.opts.log.warn(`RemoveContainer ${this.spec.containerId}: ${(err as Error).message}`);
        });
    }
    this.releaseAll();
    return res.status;
  }

  private async outputDelivered(): Promise<void> {
    const outputs = (['stdout', 'stderr'] as const)
      .map((n) => this.passed.get(n))
      .filter((p) => p !== undefined);
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), OUTPUT_SETTLE_MS);
    });
    const settled = await Promise.race([Promise.all(outputs.map((p) => p.closed)), bound]);
    clearTimeout(timer);
    if (settled === 'timeout') {
      this.opts.log.warn(
        `${this.spec.containerId}/${this.execId}: output still flowing ${OUTPUT_SETTLE_MS} ms after exit`,
      );
    }
  }

  /**
   * Every output byte is in its FIFO: now wait for containerd's reader to
   * take them (reader-catch-up.ts). Each output's keeper gives way to a
   * write-only fd, so that a FIFO nobody else reads shows as such.
   */
  private async outputTaken(): Promise<void> {
    const writers: number[] = [];
    for (const name of ['stdout', 'stderr'] as const) {
      if (!this.fifos.has(name)) continue;
      try {
        writers.push(this.fifos.keeperToWriter(name));
      } catch {
        // Cannot reopen it (out of fds): report the exit without waiting for the reader.
      }
    }
    try {
      const left = await readersCaughtUp(writers, this.opts.readerStallMs);
      if (left > 0) {
        this.opts.log.debug(
          `${this.spec.containerId}/${this.execId}: exit reported with ${left} bytes not yet taken by the output FIFOs' reader (it took nothing for ${this.opts.readerStallMs} ms)`,
        );
      }
    } finally {
      for (const fd of writers) closeQuietly(fd);
    }
  }

  /** Lets go of the FIFOs now (keepers, passed fds' tracking, RPC copiers): for a process that will never start or be waited for. */
  releaseAll(): void {
    for (const p of this.passed.values()) p.release();
    this.rpc?.stop();
    this.fifos.releaseAll();
  }
}
