/**
 * The `cri` bench scenario: Kubernetes pods through containerd's CRI plugin,
 * driven as a kubelet drives them (src/cri/), on three runtime handlers of
 * one private containerd (src/cri/cri-node.ts), side by side, the order
 * rotating from one repetition to the next:
 *
 * - `passfd`: io.containerd.passfd.v2, passfd IO, loopback guest;
 * - `passfd-rpc`: the same shim on the RPC-copy path (`use_passfd_io = false`);
 * - `runc`: io.containerd.runc.v2, the reference.
 *
 * Figures:
 *
 * - pod start: the RunPodSandbox call, which returns once the sandbox runs
 *   (for this shim: its start, the guest's boot, the sandbox container);
 * - container start: CreateContainer + StartContainer of a container in a
 *   running pod, until StartContainer returns (it is running);
 *   both the median (p50) and p90 of `starts` pods;
 * - log throughput: a container writes `bytes` of 1 KiB lines on stdout,
 *   then `END`; MiB/s from StartContainer's return until `END` is in the
 *   CRI log file containerd writes from the container's stdout FIFO (its
 *   line splitting, timestamps and file writes are in the figure, as on a
 *   node). Every byte must be there (the log is parsed and checked).
 *
 * Needs containerd, ctr and runc (apt-get install containerd) and root; not
 * part of the default scenarios.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CRI_IMAGE, startCriNode } from '../cri/cri-node.js';
import { parseCriLog } from '../cri/log-file.js';
import { containerConfig, hostNetworkPod } from '../cri/pod-config.js';
import { ContainerState } from '../protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';
import { makePrivateDir } from '../util/private-dir.js';
import {
  type ContainerdMeta,
  containerdMeta,
  formatFigure,
  reportMarkdown,
  requireContainerdTools,
  stepRunner,
  writeReportFiles,
} from './containerd-report.js';
import { createProgress } from './progress.js';
import { median, percentile } from './stats.js';

export const CRI_HANDLERS = ['passfd', 'passfd-rpc', 'runc'] as const;
export type CriHandlerName = (typeof CRI_HANDLERS)[number];

const MiB = 1024 * 1024;
const SHIM_RUNTIME = 'io.containerd.passfd.v2';
/** One log line: 1023 bytes and a newline. */
const LINE = 1024;
const END = 'END\n';

export interface CriBenchOptions {
  /** Bytes of stdout per log-throughput run (whole 1 KiB lines). */
  bytes: number;
  reps: number;
  /** Pods started (and containers started in them) per handler. */
  starts: number;
  /** Bound for any one measured operation. */
  timeoutMs: number;
  progress: boolean;
  abort?: AbortSignal;
}

interface Samples {
  logMiBps: number[];
  podStartMs: number[];
  containerStartMs: number[];
}

export interface CriRow {
  metric: string;
  unit: string;
  values: Record<CriHandlerName, number>;
  /** passfd / runc. */
  ratio: number;
  target?: string;
}

export interface CriBenchReport {
  meta: ContainerdMeta;
  options: Omit<CriBenchOptions, 'progress' | 'abort'>;
  rows: CriRow[];
  samples: Record<CriHandlerName, Samples>;
  errors: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True once the file ends with `tail`. */
function endsWith(file: string, tail: Buffer): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < tail.length) return false;
    const b = Buffer.alloc(tail.length);
    fs.readSync(fd, b, 0, b.length, size - b.length);
    return b.equals(tail);
  } finally {
    fs.closeSync(fd);
  }
}

export async function runCriBench(o: CriBenchOptions): Promise<CriBenchReport> {
  const started = performance.now();
  requireContainerdTools('cri');
  const lines = Math.max(1, Math.floor(o.bytes / LINE));
  const progress = createProgress(
    (o.reps + o.starts) * CRI_HANDLERS.length,
    o.progress,
    'starting a private containerd with CRI',
  );
  const dir = makePrivateDir('passfd-bench-');
  const config = (name: string, text: string) => {
    const file = path.join(dir, `${name}.toml`);
    fs.writeFileSync(file, text);
    return { runtimeType: SHIM_RUNTIME, options: { ConfigPath: file } };
  };
  const samples = Object.fromEntries(
    CRI_HANDLERS.map((h) => [h, { logMiBps: [], podStartMs: [], containerStartMs: [] }]),
  ) as unknown as Record<CriHandlerName, Samples>;
  const errors: string[] = [];
  let node: Awaited<ReturnType<typeof startCriNode>> | undefined;
  try {
    node = await startCriNode({
      handlers: {
        passfd: config('passfd', '[runtime]\nuse_passfd_io = true\n'),
        'passfd-rpc': config('rpc', '[runtime]\nuse_passfd_io = false\n'),
        runc: 'io.containerd.runc.v2',
      },
      callTimeoutMs: o.timeoutMs,
    });
    const { cri } = node;
    let n = 0;
    const runPod = async (handler: CriHandlerName) => {
      const name = `bench-${handler}-${n++}`;
      const logDirectory = path.join(dir, 'pods', name);
      fs.mkdirSync(logDirectory, { recursive: true });
      const podConfig = hostNetworkPod({ name, uid: randomUUID(), namespace: 'passfd-bench', logDirectory });
      const t0 = performance.now();
      const { podSandboxId } = await cri.runPodSandbox({ config: podConfig, runtimeHandler: handler });
      return { id: podSandboxId, config: podConfig, logDirectory, ms: performance.now() - t0 };
    };
    const removePod = async (id: string) => {
      await cri.stopPodSandbox({ podSandboxId: id });
      await cri.removePodSandbox({ podSandboxId: id });
    };
    const measure = stepRunner({ scenario: 'cri', progress, errors, ...(o.abort ? { abort: o.abort } : {}) });
    const order = (i: number) => CRI_HANDLERS.map((_, k) => CRI_HANDLERS[(k + i) % CRI_HANDLERS.length]!);

    for (let i = 0; i < o.starts; i++) {
      for (const handler of order(i)) {
        await measure('pod and container start', handler, async () => {
          const pod = await runPod(handler);
          try {
            const t0 = performance.now();
            const { containerId } = await cri.createContainer({
              podSandboxId: pod.id,
              config: containerConfig(pod.config, {
                name: 'idle',
                image: CRI_IMAGE,
                command: ['sleep', 'infinity'],
              }),
              sandboxConfig: pod.config,
            });
            await cri.startContainer({ containerId });
            samples[handler].containerStartMs.push(performance.now() - t0);
            samples[handler].podStartMs.push(pod.ms);
          } finally {
            await removePod(pod.id);
          }
        });
      }
    }

    for (let rep = 0; rep < o.reps; rep++) {
      for (const handler of order(rep)) {
        await measure('log throughput', handler, async () => {
          const pod = await runPod(handler);
          try {
            const line = 'a'.repeat(LINE - 1);
            const cfg = containerConfig(pod.config, {
              name: 'writer',
              image: CRI_IMAGE,
              command: [
                'sh',
                '-c',
                `yes "$(head -c ${LINE - 1} /dev/zero | tr '\\0' a)" | head -n ${lines}; echo END`,
              ],
            });
            const { containerId } = await cri.createContainer({
              podSandboxId: pod.id,
              config: cfg,
              sandboxConfig: pod.config,
            });
            const logFile = path.join(pod.logDirectory, cfg.logPath);
            await cri.startContainer({ containerId });
            const t0 = performance.now();
            // A CRI log line ends with the text: `... stdout F END\n`.
            const tail = Buffer.from(` F ${END}`);
            const until = t0 + o.timeoutMs;
            while (!endsWith(logFile, tail)) {
              if (performance.now() > until) throw new Error(`END not in the log within ${o.timeoutMs} ms`);
              await sleep(5);
            }
            const ms = performance.now() - t0;
            const status = (await cri.containerStatus({ containerId })).status;
            if (status?.state === ContainerState.CONTAINER_EXITED && status.exitCode !== 0)
              throw new Error(`the writer exited with ${status.exitCode}`);
            const log = parseCriLog(fs.readFileSync(logFile));
            const want = lines * LINE + END.length;
            if (log.stdout.length !== want || !log.stdout.subarray(0, LINE).equals(Buffer.from(`${line}\n`)))
              throw new Error(`the log holds ${log.stdout.length} of ${want} stdout bytes`);
            samples[handler].logMiBps.push((lines * LINE) / MiB / (ms / 1000));
          } finally {
            await removePod(pod.id);
          }
        });
      }
    }
  } finally {
    progress.done();
    await node?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const rows: CriRow[] = [];
  const row = (
    metric: string,
    unit: string,
    pick: (s: Samples) => number[],
    f: (v: number[]) => number,
    target?: string,
  ) => {
    if (!CRI_HANDLERS.every((h) => pick(samples[h]).length > 0)) return;
    const values = Object.fromEntries(CRI_HANDLERS.map((h) => [h, f(pick(samples[h]))])) as Record<
      CriHandlerName,
      number
    >;
    rows.push({ metric, unit, values, ratio: values.passfd / values.runc, ...(target ? { target } : {}) });
  };
  row('log throughput (median)', 'MiB/s', (s) => s.logMiBps, median, 'passfd ≥ 0.8× runc');
  row('RunPodSandbox → ready, p50', 'ms', (s) => s.podStartMs, median);
  row(
    'RunPodSandbox → ready, p90',
    'ms',
    (s) => s.podStartMs,
    (v) => percentile(v, 90),
  );
  row('CreateContainer + StartContainer → running, p50', 'ms', (s) => s.containerStartMs, median);
  row(
    'CreateContainer + StartContainer → running, p90',
    'ms',
    (s) => s.containerStartMs,
    (v) => percentile(v, 90),
  );
  return {
    meta: containerdMeta(started),
    options: { bytes: lines * LINE, reps: o.reps, starts: o.starts, timeoutMs: o.timeoutMs },
    rows,
    samples,
    errors,
  };
}

/** The report as a Markdown table (also what the terminal shows). */
export function criMarkdown(r: CriBenchReport): string {
  return reportMarkdown({
    title:
      'cri scenario: pods through containerd’s CRI plugin, io.containerd.passfd.v2 (passfd and RPC-copy IO, loopback guest) vs io.containerd.runc.v2, side by side',
    meta: r.meta,
    what: `${r.options.bytes / MiB} MiB of 1 KiB log lines × ${r.options.reps} reps, ${r.options.starts} pods started per handler`,
    figures: [...CRI_HANDLERS, 'passfd/runc'],
    rows: r.rows.map((x) => [
      x.metric,
      x.unit,
      ...CRI_HANDLERS.map((h) => formatFigure(x.values[h])),
      `${x.ratio.toFixed(2)}×`,
      x.target ?? '',
    ]),
    errors: r.errors,
  });
}

/** Writes cri.json and cri.md into `dir`; returns their paths. */
export function writeCriOutputs(dir: string, r: CriBenchReport): string[] {
  return writeReportFiles(dir, 'cri', r, criMarkdown(r));
}
