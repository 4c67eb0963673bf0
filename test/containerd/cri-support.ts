/**
 * The CRI suite's harness: a private containerd per test file with its CRI
 * plugin on (src/containerd/private-daemon.ts, option `cri`), driven the
 * way kubelet drives it, through the CRI gRPC API (src/cri/client.ts).
 *
 * - Runtime handlers: `runc` (io.containerd.runc.v2, the reference),
 *   `passfd` and `passfd-rpc` (io.containerd.passfd.v2, this checkout's shim
 *   linked into the daemon's `<opt>/bin` as test/containerd/support.ts
 *   does, with `ConfigPath` pointing at the `passfd` or `rpc` configuration
 *   of CONFIGS: the two IO paths). A test file parametrises over handler
 *   names.
 * - Images, built offline and imported into namespace k8s.io: the busybox
 *   image (IMAGE) for containers, and the same filesystem with Entrypoint
 *   `/bin/sleep infinity` (PAUSE_IMAGE) as the pod sandbox image.
 * - Pods are host-network pods (namespace_options.network NODE, empty
 *   hostname, as kubelet makes them), so no CNI plugin is needed; each has
 *   its log directory under the suite's own temporary directory.
 *
 * `leaks()` looks at what this containerd started, in the style of
 * support.ts: pods and containers the CRI API still lists, containers and
 * tasks in namespace k8s.io, bundles, the CRI plugin's per-pod and
 * per-container directories, shim sockets of the pods run, processes
 * started on the daemon's behalf (shims, pause and container processes),
 * mounts under either directory, files in the shims' TMPDIR. It waits
 * (bounded) for cleanup containerd does after a call returns.
 *
 * The suite fails, never skips, when containerd, ctr or runc is missing.
 * The `passfd` handler needs `npm run build` (the shim runs from dist/);
 * the `runc` handler does not.
 */

import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import {
  CRI_NAMESPACE,
  type CriHandler,
  type PrivateContainerd,
} from '../../src/containerd/private-daemon.js';
import { type CriClient, isNotFound } from '../../src/cri/client.js';
import { CRI_IMAGE, PAUSE_IMAGE, startCriNode } from '../../src/cri/cri-node.js';
import { type CriLog, parseCriLog } from '../../src/cri/log-file.js';
import { type ContainerOptions, containerConfig, hostNetworkPod } from '../../src/cri/pod-config.js';
import {
  ContainerState,
  type ContainerStatus,
  type PodSandboxConfig,
} from '../../src/protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';
import { socketPathFor } from '../../src/shim/address.js';
import { mountsUnder } from '../../src/util/mountinfo.js';
import { CONFIGS, RUNTIME } from './support.js';

export { PAUSE_IMAGE };
export const IMAGE = CRI_IMAGE;

export type CriHandlers = Record<string, string | CriHandler>;

export interface CriSuiteOptions {
  /** Handler name → runtime (default: `runc` and `passfd`, see the module comment). */
  handlers?: (suiteDir: string) => CriHandlers;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Deadline of each CRI call (default 60 s; a QEMU guest boots inside RunPodSandbox). */
  callTimeoutMs?: number;
}

/** The default handlers: runc, and this shim with the `passfd` configuration written into `suiteDir`. */
export function defaultHandlers(suiteDir: string): CriHandlers {
  const handler = (name: keyof typeof CONFIGS): CriHandler => {
    const config = path.join(suiteDir, `${name}.toml`);
    fs.writeFileSync(config, CONFIGS[name]);
    return { runtimeType: RUNTIME, options: { ConfigPath: config } };
  };
  return {
    runc: 'io.containerd.runc.v2',
    passfd: handler('passfd'),
    'passfd-rpc': handler('rpc'),
    'passfd-spare': handler('spare'),
  };
}

export interface Pod {
  id: string;
  handler: string;
  /** The pod's log directory (PodSandboxConfig.log_directory). */
  logDir: string;
  /** The config it was run with (CreateContainer needs it again). */
  config: PodSandboxConfig;
}

/** A container as a test asks for it (the image defaults to IMAGE). */
export type ContainerSpec = Omit<ContainerOptions, 'image' | 'labels'> & { image?: string };

export interface Container {
  id: string;
  name: string;
  pod: Pod;
  /** The container's CRI log file (absolute). */
  logPath: string;
}

/** Throws (the suite fails) when a tool it needs is missing. */
export function requireCri(): void {
  for (const tool of ['containerd', 'ctr', 'runc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`the CRI suite needs ${tool} on PATH (apt-get install containerd)`);
    }
  }
}

export class CriSuite {
  private n = 0;
  private readonly pods = new Map<string, Pod>();
  private readonly podsSeen = new Set<string>();

  private constructor(
    readonly d: PrivateContainerd,
    readonly cri: CriClient,
    /** The suite's own temporary directory: configuration files, pods' log directories. */
    readonly dir: string,
  ) {}

  static async start(opts: CriSuiteOptions = {}): Promise<CriSuite> {
    requireCri();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-cri-'));
    try {
      const node = await startCriNode({
        handlers: (opts.handlers ?? defaultHandlers)(dir),
        ...(opts.logLevel ? { logLevel: opts.logLevel } : {}),
        callTimeoutMs: opts.callTimeoutMs ?? 60_000,
      });
      return new CriSuite(node.d, node.cri, dir);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A name unique in this suite. */
  name(prefix: string): string {
    return `${prefix}-${this.n++}`;
  }

  /**
   * Runs a host-network pod with `handler`; its log directory is under the
   * suite's directory. Its containers have their own PID namespaces, as
   * kubelet asks (`pid: CONTAINER`) unless `shareProcessNamespace`.
   */
  async runPod(
    handler: string,
    name = this.name('pod'),
    opts: { shareProcessNamespace?: boolean } = {},
  ): Promise<Pod> {
    const logDir = path.join(this.dir, 'pods', name);
    fs.mkdirSync(logDir, { recursive: true });
    const config = hostNetworkPod({
      name,
      uid: randomUUID(),
      namespace: 'passfd-test',
      logDirectory: logDir,
      labels: { 'passfd-test': 'true' },
      ...(opts.shareProcessNamespace ? { shareProcessNamespace: true } : {}),
    });
    const r = await this.cri.runPodSandbox({ config, runtimeHandler: handler });
    this.podsSeen.add(r.podSandboxId);
    const pod: Pod = { id: r.podSandboxId, handler, logDir, config };
    this.pods.set(pod.id, pod);
    return pod;
  }

  /** CreateContainer in `pod` (not started). */
  async createContainer(pod: Pod, spec: ContainerSpec): Promise<Container> {
    const config = containerConfig(pod.config, {
      ...spec,
      image: spec.image ?? IMAGE,
      labels: { 'passfd-test': 'true' },
    });
    const r = await this.cri.createContainer({ podSandboxId: pod.id, config, sandboxConfig: pod.config });
    return { id: r.containerId, name: spec.name, pod, logPath: path.join(pod.logDir, config.logPath) };
  }

  /** CreateContainer and StartContainer. */
  async startContainer(pod: Pod, spec: ContainerSpec): Promise<Container> {
    const c = await this.createContainer(pod, spec);
    await this.cri.startContainer({ containerId: c.id });
    return c;
  }

  /** The container's status (ContainerStatus). */
  async status(c: Container | string): Promise<ContainerStatus> {
    const id = typeof c === 'string' ? c : c.id;
    const r = await this.cri.containerStatus({ containerId: id });
    if (!r.status) throw new Error(`ContainerStatus ${id}: no status`);
    return r.status;
  }

  /** Polls ContainerStatus until the container is in `state`; throws after `timeoutMs`. */
  async waitState(c: Container, state: ContainerState, timeoutMs = 30_000): Promise<ContainerStatus> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(c);
      if (s.state === state) return s;
      if (Date.now() > until) {
        throw new Error(
          `container ${c.name} (${c.id}) not ${ContainerState[state]} within ${timeoutMs} ms: ${ContainerState[s.state]}`,
        );
      }
      await sleep(50);
    }
  }

  /** Waits until the container exited; its final status (exit code, reason). */
  waitExit(c: Container, timeoutMs = 30_000): Promise<ContainerStatus> {
    return this.waitState(c, ContainerState.CONTAINER_EXITED, timeoutMs);
  }

  /** The container's CRI log as it is now (empty when not written yet). */
  readLog(c: Container): CriLog {
    let data: Buffer;
    try {
      data = fs.readFileSync(c.logPath);
    } catch {
      data = Buffer.alloc(0);
    }
    return parseCriLog(data);
  }

  /** Polls the container's log until `done(log)`; throws with the log after `timeoutMs`. */
  async waitLog(c: Container, done: (log: CriLog) => boolean, timeoutMs = 10_000): Promise<CriLog> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const log = this.readLog(c);
      if (done(log)) return log;
      if (Date.now() > until) {
        throw new Error(
          `log of ${c.name} not as expected within ${timeoutMs} ms: stdout ${JSON.stringify(log.stdout.toString())}, stderr ${JSON.stringify(log.stderr.toString())}`,
        );
      }
      await sleep(50);
    }
  }

  /** StopPodSandbox and RemovePodSandbox (both idempotent; a pod already gone is fine). */
  async removePod(pod: Pod | string): Promise<void> {
    const id = typeof pod === 'string' ? pod : pod.id;
    for (const call of [
      () => this.cri.stopPodSandbox({ podSandboxId: id }),
      () => this.cri.removePodSandbox({ podSandboxId: id }),
    ]) {
      try {
        await call();
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    this.pods.delete(id);
  }

  /** Removes every pod the CRI API lists (and those this suite ran). */
  async removeAllPods(): Promise<void> {
    const listed = (await this.cri.listPodSandbox({})).items.map((p) => p.id);
    for (const id of new Set([...listed, ...this.pods.keys()])) await this.removePod(id);
  }

  /** What is left of this containerd's pods (see the module comment); [] when nothing. */
  async leaks(timeoutMs = 15_000): Promise<string[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = await this.findLeaks();
      if (found.length === 0 || Date.now() > until) return found;
      await sleep(200);
    }
  }

  private async findLeaks(): Promise<string[]> {
    const d = this.d;
    const out: string[] = [];
    for (const p of (await this.cri.listPodSandbox({})).items) out.push(`pod ${p.metadata?.name} ${p.id}`);
    for (const c of (await this.cri.listContainers({})).containers) {
      out.push(`container ${c.metadata?.name} ${c.id}`);
    }
    for (const what of ['task', 'container'] as const) {
      const r = await d.ctr([what, 'ls', '-q'], { namespace: CRI_NAMESPACE, timeoutMs: 30_000 });
      if (r.code !== 0) out.push(`ctr ${what} ls failed: ${r.stderr.trim()}`);
      else if (r.stdout.trim()) out.push(`ctr ${what}s: ${r.stdout.trim().replace(/\n/g, ' ')}`);
    }
    const dirs = [
      path.join(d.state, 'io.containerd.runtime.v2.task', CRI_NAMESPACE),
      ...['root', 'state'].flatMap((base) =>
        ['sandboxes', 'containers'].map((kind) =>
          path.join(base === 'root' ? d.root : d.state, 'io.containerd.grpc.v1.cri', kind),
        ),
      ),
    ];
    for (const dir of dirs) for (const f of listDir(dir)) out.push(`${dir}/${f}`);
    for (const id of this.podsSeen) {
      const sock = socketPathFor(d.address, CRI_NAMESPACE, id);
      if (fs.existsSync(sock)) out.push(`socket ${sock} (pod ${id})`);
    }
    for (const p of d.ownProcesses()) out.push(`process ${p.process.pid}: ${p.cmdline.slice(0, 200)}`);
    for (const m of [...mountsUnder(d.dir), ...mountsUnder(this.dir)]) out.push(`mount ${m}`);
    for (const f of listDir(d.tmpDir)) out.push(`tmp ${f}`);
    return out;
  }

  /** Removes every pod (best effort), closes the client, stops the daemon, removes the suite's directory. */
  async stop(): Promise<void> {
    try {
      await this.removeAllPods();
    } catch {
      // The daemon's stop() kills whatever is left.
    }
    this.cri.close();
    await this.d.stop();
    for (const id of this.podsSeen)
      fs.rmSync(socketPathFor(this.d.address, CRI_NAMESPACE, id), { force: true });
    unmountAndRemove(this.dir);
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function unmountAndRemove(dir: string): void {
  for (const m of mountsUnder(dir).reverse()) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      // Reported by leaks(); never delete through a mount.
    }
  }
  if (mountsUnder(dir).length === 0) fs.rmSync(dir, { recursive: true, force: true });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A suite for the calling test file: started before its tests, stopped
 * after them, every pod removed and a leak check after every test. Returns
 * the suite (a stand-in that reaches the started one; using it outside a
 * test throws).
 */
export function useCriSuite(opts: CriSuiteOptions = {}, leakWaitMs?: number): CriSuite {
  let suite: CriSuite | undefined;
  beforeAll(async () => {
    suite = await CriSuite.start(opts);
  }, 120_000);
  afterAll(async () => {
    await suite?.stop();
  }, 60_000);
  afterEach(async () => {
    if (!suite) return;
    await suite.removeAllPods();
    expect(await suite.leaks(leakWaitMs)).toEqual([]);
  }, 60_000);
  return new Proxy({} as CriSuite, {
    get: (_, key) => {
      if (!suite) throw new Error('the CRI suite did not start (see beforeAll)');
      const v = Reflect.get(suite, key);
      return typeof v === 'function' ? v.bind(suite) : v;
    },
  });
}
