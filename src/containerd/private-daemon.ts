/**
 * A private containerd for tests and the bench: its own config, root, state,
 * gRPC and ttrpc sockets and `opt` directory under one temporary directory,
 * the CRI plugin off, so it shares nothing with a containerd the machine may
 * already run (except what containerd hard-codes: runc's state under
 * /run/containerd/runc and ctr's FIFOs under /run/containerd/fifo, hence
 * unique container ids and `--fifo-dir`).
 *
 * The daemon runs under `setpriv --pdeathsig SIGKILL`, so it dies with the
 * process that started it even when that one is SIGKILLed. Shims it starts
 * are detached by design (as in production) and are the caller's to check.
 *
 * `<opt>/bin` comes first on the daemon's PATH: `installShim` links a shim
 * binary there, which is how containerd finds `containerd-shim-<name>-v2`
 * for `--runtime io.containerd.<name>.v2`.
 *
 * The daemon's TMPDIR is `<dir>/tmp`, so whatever its shims put in the
 * temporary directory is under `dir` too (and found by leak checks there).
 *
 * Every `ctr` call is bounded: `ctr()` kills it with SIGKILL after its
 * timeout and says so in the result.
 *
 * With the `cri` option (off by default, and then the config is exactly the
 * CRI-less one above) the CRI plugin runs too, serving kubelet's gRPC API
 * (runtime.v1) on the same socket: one runtime handler per entry of
 * `handlers`, the given sandbox ("pause") image, CNI pointed at empty
 * directories under `dir` (so only host-network pods can run: no CNI plugin
 * is needed nor touched), and the streaming server (Exec/Attach URLs) on
 * loopback at a port the kernel picks, and OOM scores no lower than the
 * daemon's (`restrict_oom_score_adj`: lowering one needs CAP_SYS_RESOURCE,
 * which a containerised test machine may lack). Its images live in namespace
 * `k8s.io` (CRI_NAMESPACE): import them there with `importImage(archive,
 * CRI_NAMESPACE)`; the sandbox image must be there before a pod runs, since
 * no registry is reachable.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { identify, killTrees, type ProcessIdentity } from '../shim/process-tree.js';
import { removeSparesOf } from '../shim/spare-dir.js';
import { unmountUnder } from './mounts.js';

export interface PrivateContainerdOptions {
  /** containerd's log level (default info; debug logs every shim call). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Namespace ctr() uses (default `passfd`). */
  namespace?: string;
  /** Start budget (default 20 s). */
  startTimeoutMs?: number;
  /** More environment for the daemon (and so for the shims it starts). */
  env?: NodeJS.ProcessEnv;
  /** Runs the CRI plugin too (see the module comment); without it CRI is disabled. */
  cri?: CriPluginOptions;
}

/** The namespace the CRI plugin keeps its images, pods and containers in. */
export const CRI_NAMESPACE = 'k8s.io';

/** A CRI runtime handler: its shim (`io.containerd.<name>.v2`) and the options containerd passes it. */
export interface CriHandler {
  runtimeType: string;
  /**
   * The handler's `options` table, e.g. `{ ConfigPath: '/x.toml' }` for a
   * runtime other than runc (containerd hands such a runtime
   * runtimeoptions.v1.Options).
   */
  options?: Record<string, string | number | boolean>;
}

export interface CriPluginOptions {
  /** Handler name (RunPodSandboxRequest.runtime_handler) → runtime_type, or a full CriHandler. */
  handlers: Record<string, string | CriHandler>;
  /** The pod sandbox image (`sandbox_image`), e.g. `localhost/passfd-pause:1`. */
  sandboxImage: string;
  /** The handler used for an empty runtime_handler (default: the first of `handlers`). */
  defaultHandler?: string;
}

export interface CtrResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the call was killed at its timeout. */
  timedOut: boolean;
  ms: number;
}

export interface CtrOptions {
  /** Bytes for ctr's stdin (default: none, stdin is /dev/null). */
  input?: string | Buffer;
  /** Kill ctr with SIGKILL after this long (default 60 s). */
  timeoutMs?: number;
  /** Namespace (default the daemon's). */
  namespace?: string;
}

export class PrivateContainerd {
  readonly dir: string;
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly root: string;
  readonly state: string;
  readonly optBin: string;
  readonly namespace: string;
  readonly configPath: string;
  readonly logPath: string;
  /** Where tests and the bench put ctr's FIFOs (`ctr run --fifo-dir`). */
  readonly fifoDir: string;
  /** The daemon's (and its shims') TMPDIR. */
  readonly tmpDir: string;
  private readonly env: NodeJS.ProcessEnv;
  private daemon: ChildProcess | null = null;
  private readonly children = new Set<ChildProcess>();

  private constructor(opts: PrivateContainerdOptions) {
    // Short: sun_path holds 108 bytes, and the sockets live here.
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-ctrd-'));
    this.address = path.join(this.dir, 'c.sock');
    this.ttrpcAddress = path.join(this.dir, 'c.sock.ttrpc');
    this.root = path.join(this.dir, 'root');
    this.state = path.join(this.dir, 'state');
    this.optBin = path.join(this.dir, 'opt', 'bin');
    this.fifoDir = path.join(this.dir, 'fifo');
    this.tmpDir = path.join(this.dir, 'tmp');
    this.env = { ...process.env, ...opts.env, TMPDIR: this.tmpDir };
    this.namespace = opts.namespace ?? 'passfd';
    this.configPath = path.join(this.dir, 'config.toml');
    this.logPath = path.join(this.dir, 'containerd.log');
    fs.mkdirSync(this.optBin, { recursive: true });
    fs.mkdirSync(this.fifoDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(
      this.configPath,
      [
        'version = 2',
        `root = ${JSON.stringify(this.root)}`,
        `state = ${JSON.stringify(this.state)}`,
        opts.cri ? 'disabled_plugins = []' : 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = ${JSON.stringify(this.address)}`,
        '[ttrpc]',
        `  address = ${JSON.stringify(this.ttrpcAddress)}`,
        '[debug]',
        `  level = ${JSON.stringify(opts.logLevel ?? 'info')}`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = ${JSON.stringify(path.join(this.dir, 'opt'))}`,
        ...(opts.cri ? this.criConfig(opts.cri) : []),
        '',
      ].join('\n'),
    );
  }

  /** The CRI plugin's config lines (see the module comment); creates the empty CNI directories. */
  private criConfig(cri: CriPluginOptions): string[] {
    const names = Object.keys(cri.handlers);
    const defaultHandler = cri.defaultHandler ?? names[0];
    if (defaultHandler === undefined || !(defaultHandler in cri.handlers)) {
      throw new Error(`CRI: default handler ${String(defaultHandler)} is not among [${names.join(', ')}]`);
    }
    const cniBin = path.join(this.dir, 'cni', 'bin');
    const cniConf = path.join(this.dir, 'cni', 'conf');
    fs.mkdirSync(cniBin, { recursive: true });
    fs.mkdirSync(cniConf, { recursive: true });
    const q = JSON.stringify;
    const plugin = '[plugins."io.containerd.grpc.v1.cri"';
    const lines = [
      `${plugin}]`,
      `  sandbox_image = ${q(cri.sandboxImage)}`,
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
      // The sandbox gets oom_score_adj -998, which needs CAP_SYS_RESOURCE: not held where this runs
      // in a container (runc then fails with "can't get final child's PID from pipe"). Restricted,
      // no score goes below containerd's own.
      '  restrict_oom_score_adj = true',
      `${plugin}.cni]`,
      `  bin_dir = ${q(cniBin)}`,
      `  conf_dir = ${q(cniConf)}`,
      `${plugin}.containerd]`,
      `  default_runtime_name = ${q(defaultHandler)}`,
    ];
    for (const [name, h] of Object.entries(cri.handlers)) {
      const handler: CriHandler = typeof h === 'string' ? { runtimeType: h } : h;
      lines.push(`${plugin}.containerd.runtimes.${q(name)}]`, `  runtime_type = ${q(handler.runtimeType)}`);
      if (handler.options) {
        lines.push(`${plugin}.containerd.runtimes.${q(name)}.options]`);
        for (const [k, v] of Object.entries(handler.options)) lines.push(`  ${q(k)} = ${q(v)}`);
      }
    }
    return lines;
  }

  /** Starts a daemon and waits until its gRPC socket accepts connections. */
  static async start(opts: PrivateContainerdOptions = {}): Promise<PrivateContainerd> {
    const d = new PrivateContainerd(opts);
    try {
      await d.launch(opts.startTimeoutMs ?? 20_000);
    } catch (err) {
      await d.stop();
      throw err;
    }
    return d;
  }

  private async launch(timeoutMs: number): Promise<void> {
    const log = fs.openSync(this.logPath, 'a', 0o600);
    try {
      this.daemon = spawn(
        'setpriv',
        ['--pdeathsig', 'SIGKILL', '--', 'containerd', '--config', this.configPath],
        { stdio: ['ignore', log, log], env: this.env },
      );
    } finally {
      fs.closeSync(log);
    }
    const daemon = this.daemon;
    let exited: string | null = null;
    daemon.on('exit', (code, sig) => {
      exited = sig ?? `exit ${code}`;
    });
    daemon.on('error', (err) => {
      exited = err.message;
    });
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (exited) throw new Error(`containerd exited (${exited}); log:\n${this.logTail()}`);
      if (await canConnect(this.address)) return;
      if (Date.now() > until)
        throw new Error(`containerd not up within ${timeoutMs} ms; log:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  get pid(): number | undefined {
    return this.daemon?.pid;
  }

  /** Links `binary` into `<opt>/bin` under its containerd name (`containerd-shim-<name>-v2`). */
  installShim(binary: string, name = path.basename(binary)): string {
    const link = path.join(this.optBin, name);
    fs.rmSync(link, { force: true });
    fs.symlinkSync(path.resolve(binary), link);
    return link;
  }

  /** `<state>/io.containerd.runtime.v2.task/<ns>/<id>`: a task's bundle. */
  bundle(id: string, namespace = this.namespace): string {
    return path.join(this.state, 'io.containerd.runtime.v2.task', namespace, id);
  }

  /** The ctr argv prefix for this daemon. */
  ctrArgs(namespace = this.namespace): string[] {
    return ['--address', this.address, '--namespace', namespace];
  }

  /** Starts `ctr <args>` against this daemon; the caller reads its stdio. Killed by stop() if still running. */
  spawnCtr(args: string[], opts: SpawnOptions & { namespace?: string } = {}): ChildProcess {
    const child = spawn('ctr', [...this.ctrArgs(opts.namespace), ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...opts,
    });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs `ctr <args>` to completion (SIGKILL at the timeout) and collects its output. */
  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    const started = Date.now();
    const child = this.spawnCtr(args, {
      namespace: opts.namespace,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => {});
      child.stdin!.end(opts.input);
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    return new Promise((resolve, reject) => {
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({
          code,
          signal,
          stdout: Buffer.concat(out).toString(),
          stderr: Buffer.concat(err).toString(),
          timedOut,
          ms: Date.now() - started,
        });
      });
    });
  }

  /** `ctr image import` (into `namespace`, default the daemon's); throws with ctr's output when it fails. */
  async importImage(archive: string, namespace?: string): Promise<void> {
    const r = await this.ctr(['image', 'import', archive], { timeoutMs: 60_000, namespace });
    if (r.code !== 0) throw new Error(`ctr image import ${archive} failed (${r.code}): ${r.stderr}`);
  }

  /** The daemon's log so far. */
  log(): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  logTail(bytes = 4000): string {
    return this.log().slice(-bytes);
  }

  /**
   * Processes started on this daemon's behalf (not the daemon, not ctr
   * calls): those whose environment names its ttrpc socket (containerd sets
   * TTRPC_ADDRESS for every shim it starts, and a shim's children inherit
   * it), whose command line names its directory (a container's namespace
   * helpers) or whose root is under it (a container's processes); with the
   * socket each shim serves.
   */
  ownProcesses(): { process: ProcessIdentity; cmdline: string; socket?: string }[] {
    const marker = `TTRPC_ADDRESS=${this.ttrpcAddress}\0`;
    const found: { process: ProcessIdentity; cmdline: string; socket?: string }[] = [];
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid || Number(name) === this.daemon?.pid) continue;
      try {
        const raw = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
        if (raw === '' || raw.startsWith('ctr\0')) continue; // a kernel thread, or a ctr call
        let root = '';
        try {
          root = fs.readlinkSync(`/proc/${name}/root`);
        } catch {
          // Gone, or not ours to read.
        }
        const env = fs.readFileSync(`/proc/${name}/environ`, 'utf8');
        if (!env.includes(marker) && !raw.includes(this.dir) && !root.startsWith(this.dir)) continue;
        const cmdline = raw.split('\0');
        const id = identify(Number(name));
        const at = cmdline.indexOf('-socket');
        if (id) {
          found.push({
            process: id,
            cmdline: cmdline.join(' ').trim(),
            ...(at >= 0 ? { socket: cmdline[at + 1]?.replace(/^unix:\/\//, '') } : {}),
          });
        }
      } catch {
        // Exited while we looked, or not ours to read.
      }
    }
    return found;
  }

  /**
   * Kills ctr calls still running, stops the daemon (SIGTERM, SIGKILL after
   * 5 s), kills whatever its shims left running (a test that failed half
   * way: shims outlive containerd by design) and their sockets, unmounts
   * anything still mounted under its directory (never deleting through a
   * mount) and removes the directory.
   */
  async stop(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    const d = this.daemon;
    if (d && d.exitCode === null && d.signalCode === null) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => d.kill('SIGKILL'), 5000);
        d.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        d.kill('SIGTERM');
      });
    }
    this.daemon = null;
    const left = this.ownProcesses();
    killTrees(left.map((p) => p.process));
    for (const p of left) if (p.socket) fs.rmSync(p.socket, { force: true });
    // Warm spare shims were among them: their directories and sockets go too.
    removeSparesOf(this.address);
    unmountUnder(this.dir);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
