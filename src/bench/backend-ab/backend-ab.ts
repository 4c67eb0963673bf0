/**
 * The backend A/B: this project's vhost-user-vsock backend (`vmm
 * --vhost-user`) and any other backend (a command line with `{socket}`,
 * `{uds}`, `{cid}` and optionally `{metrics}` filled in) measured the same
 * way in one run: the same QEMU command line (qemu.ts), kernel, initramfs
 * and guest program (guest-program.ts), boots interleaved (round r runs
 * every backend once, the order rotating each round) so the load of a
 * shared machine falls on all of them alike.
 *
 * Each boot: the backend starts, then QEMU; once the guest program
 * answers, one small warm-up transfer, then `transfers` guest → host and
 * host → guest transfers of `bytes` each, alternating, and `trips` 64-byte
 * round trips. With `connections` (the stall hunt, test/vm), each pair of
 * transfers runs over the next connection count of that list, cycling, the
 * bytes shared by that many connections at once. Per transfer: MiB/s (timed at the receiving end, first byte
 * to EOF), the backend's and QEMU's CPU (/proc/<pid>/stat), the load
 * average, the guest's virtio interrupts and (with `guestTrace`) its vsock
 * packets by op from the guest kernel's own tracepoints, and for a backend
 * started with `{metrics}` its `vmm --metrics` counters. A boot that fails
 * or stalls is recorded with its reason and the console and backend logs are
 * kept (our own backend first logs its connection table: SIGUSR2); it does
 * not end the run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VmmMetrics } from '../../device/metrics.js';
import { clockTicksPerSecond } from '../../util/proc-stat.js';
import { CLI_MAIN } from '../../util/ready-child.js';
import { findGuestKernel, type GuestKernel } from '../../vm/guest-kernel.js';
import { cachedInitramfs } from '../../vm/initramfs.js';
import { type QemuHandle, startQemu } from '../../vm/qemu.js';
import { readCpuTicks } from '../proc-cpu.js';
import type { BackendSpec } from './backend-spec.js';
import { GuestBench, type GuestStat } from './guest-session.js';

export interface BackendAbOptions {
  backends: BackendSpec[];
  /** Boots per backend. */
  boots: number;
  /** Bytes per transfer. */
  bytes: number;
  /** Transfers per direction per boot. */
  transfers: number;
  trips: number;
  /** Bound for one transfer (and for the boot until the guest program answers). */
  timeoutMs: number;
  /** A transfer fails when no byte moves for this long (default: `timeoutMs`). */
  stallMs?: number;
  /** Connection counts the transfer pairs cycle through (default [1]). */
  connections?: number[];
  guestTrace: boolean;
  vm: { accel: 'tcg' | 'kvm'; cpus: number; memoryMiB: number };
  /** The guest kernel (default: the newest installed). */
  kernel?: GuestKernel;
  guestCid?: number;
  onProgress?: (line: string) => void;
}

export interface TransferRecord {
  dir: 'g2h' | 'h2g';
  /** Connections that shared the bytes at once. */
  connections: number;
  mibps: number;
  /** CPU seconds of the backend process and of QEMU during the transfer. */
  cpu: { backend: number; qemu: number };
  /** 1-minute load average when the transfer ended. */
  load: number;
  interrupts: Record<string, number>;
  trace?: GuestStat['trace'];
  /** The backend's own counters over the transfer (backends started with `{metrics}`). */
  metrics?: { before: VmmMetrics; after: VmmMetrics };
}

export interface BootRecord {
  backend: string;
  round: number;
  ok: boolean;
  error?: string;
  /** Where the console and backend logs were kept (failed boots). */
  logs?: string;
  bootS?: number;
  transfers: TransferRecord[];
  /** 64-byte round trips, µs. */
  rtt: number[];
}

/** Our own backend: this build's `vmm --vhost-user`, with its metrics. */
export function ownBackend(extraArgs = ''): BackendSpec {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return {
    name: 'passfd-broker',
    command: `${q(process.execPath)} ${q(CLI_MAIN)} vmm --hvsock {uds} --vhost-user {socket} --guest-cid {cid} --metrics {metrics}${extraArgs ? ` ${extraArgs}` : ''}`,
  };
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const GUEST_PROGRAM = path.join(path.dirname(CLI_MAIN), 'vsock-ab-guest.js');

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(b).map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]));
}

function traceDelta(a: GuestStat['trace'], b: GuestStat['trace']): GuestStat['trace'] {
  const side = (x: GuestStat['trace']['toHost'], y: GuestStat['trace']['toHost']) =>
    Object.fromEntries(
      Object.keys(y).map((op) => [
        op,
        { packets: y[op]!.packets - (x[op]?.packets ?? 0), bytes: y[op]!.bytes - (x[op]?.bytes ?? 0) },
      ]),
    );
  return { toHost: side(a.toHost, b.toHost), fromHost: side(a.fromHost, b.fromHost) };
}

/** The backend's metrics after SIGUSR2, once the file has moved past `after` (null if it never does). */
async function readMetrics(pid: number, file: string, after: number): Promise<VmmMetrics | null> {
  try {
    process.kill(pid, 'SIGUSR2');
  } catch {
    return null;
  }
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    try {
      const m = JSON.parse(fs.readFileSync(file, 'utf8')) as VmmMetrics;
      if (m.seq > after) return m;
    } catch {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return null;
}

const alive = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;

async function stop(p: ChildProcess, graceMs: number): Promise<void> {
  if (!alive(p)) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** One boot of one backend: the measurements, or the reason it failed. */
async function runBoot(
  spec: BackendSpec,
  round: number,
  o: BackendAbOptions,
  kernel: GuestKernel,
  initrd: string,
): Promise<BootRecord> {
  const rec: BootRecord = { backend: spec.name, round, ok: false, transfers: [], rtt: [] };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-ab-'));
  const socket = path.join(dir, 'vu.sock');
  const uds = path.join(dir, 'h.sock');
  const metricsFile = path.join(dir, 'metrics.json');
  const consoleLog = path.join(dir, 'console.log');
  const backendLog = path.join(dir, 'backend.log');
  const withMetrics = spec.command.includes('{metrics}');
  const cmd = spec.command
    .replaceAll('{socket}', quote(socket))
    .replaceAll('{uds}', quote(uds))
    .replaceAll('{cid}', String(o.guestCid ?? 3))
    .replaceAll('{metrics}', quote(metricsFile));
  const logFd = fs.openSync(backendLog, 'w', 0o600);
  const backend = spawn('/bin/sh', ['-c', `exec ${cmd}`], { stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  let qemu: QemuHandle | null = null;
  let guest: GuestBench | null = null;
  try {
    const until = Date.now() + 20_000;
    while (!fs.existsSync(socket)) {
      if (!alive(backend)) throw new Error(`the backend exited (${backend.exitCode ?? backend.signalCode})`);
      if (Date.now() > until) throw new Error(`the backend did not create ${socket} within 20 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    qemu = startQemu({
      kernel: kernel.vmlinuz,
      initrd,
      vhostUserSocket: socket,
      accel: o.vm.accel,
      cpus: o.vm.cpus,
      memoryMiB: o.vm.memoryMiB,
      consoleLog,
      command: `cd / && exec ${quote(process.execPath)} ${quote(GUEST_PROGRAM)}`,
    });
    const q = qemu;
    guest = await GuestBench.connect(
      uds,
      Math.max(o.timeoutMs, 240_000),
      () => alive(backend) && alive(q.process),
    );
    rec.bootS = (Date.now() - q.startedAt) / 1000;
    if (o.guestTrace) await guest.command('TRACE on', 30_000);
    await guest.g2h(8 << 20, o.timeoutMs); // warm-up: page cache, JIT, the sink's first connection
    await guest.h2g(8 << 20, o.timeoutMs);
    const qemuPid = q.process.pid!;
    const backendPid = backend.pid!;
    let seq = 0;
    const counts = o.connections ?? [1];
    const stallMs = o.stallMs ?? o.timeoutMs;
    for (let i = 0; i < o.transfers * 2; i++) {
      const dir2: 'g2h' | 'h2g' = i % 2 === 0 ? 'g2h' : 'h2g';
      const connections = counts[Math.floor(i / 2) % counts.length]!;
      const s0 = await guest.stat(30_000);
      const m0 = withMetrics ? await readMetrics(backendPid, metricsFile, seq) : null;
      if (m0) seq = m0.seq;
      const c0 = { b: readCpuTicks(backendPid).self, q: readCpuTicks(qemuPid).self };
      const ms =
        dir2 === 'g2h'
          ? (await guest.g2h(o.bytes, o.timeoutMs, connections, stallMs)).hostMs
          : (await guest.h2g(o.bytes, o.timeoutMs, connections, stallMs)).guestMs;
      const c1 = { b: readCpuTicks(backendPid).self, q: readCpuTicks(qemuPid).self };
      const m1 = withMetrics ? await readMetrics(backendPid, metricsFile, seq) : null;
      if (m1) seq = m1.seq;
      const s1 = await guest.stat(30_000);
      const hz = clockTicksPerSecond();
      const t: TransferRecord = {
        dir: dir2,
        connections,
        mibps: o.bytes / (1 << 20) / (ms / 1000),
        cpu: { backend: (c1.b - c0.b) / hz, qemu: (c1.q - c0.q) / hz },
        load: os.loadavg()[0]!,
        interrupts: delta(s0.interrupts, s1.interrupts),
      };
      if (o.guestTrace) t.trace = traceDelta(s0.trace, s1.trace);
      if (m0 && m1) t.metrics = { before: m0, after: m1 };
      rec.transfers.push(t);
      o.onProgress?.(`${spec.name} round ${round + 1}: ${dir2} ×${connections} ${t.mibps.toFixed(1)} MiB/s`);
    }
    rec.rtt = await guest.roundTrips(o.trips, o.timeoutMs);
    rec.ok = true;
  } catch (err) {
    rec.error = (err as Error).message.split('\n')[0];
    if (withMetrics && alive(backend)) {
      // Our vmm logs its connection table and rings (credit counters, pending RX/TX, ring indices,
      // last kick and call) on SIGUSR2: the state a stalled transfer left behind goes into the kept log.
      process.kill(backend.pid!, 'SIGUSR2');
      await new Promise((r) => setTimeout(r, 1000));
    }
    const text = fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : '';
    const notHead = /rx:id \d+ is not a head/.exec(text);
    if (notHead) rec.error += ` (guest: "${notHead[0]}")`;
    const kept = path.join(os.tmpdir(), `passfd-ab-${spec.name}-${round}-${Date.now()}.log`);
    const backendText = fs.existsSync(backendLog) ? fs.readFileSync(backendLog, 'utf8') : '';
    fs.writeFileSync(kept, `===== console =====\n${text}\n===== backend =====\n${backendText}`, {
      mode: 0o600,
    });
    rec.logs = kept;
    o.onProgress?.(`${spec.name} round ${round + 1} failed: ${rec.error} (logs: ${kept})`);
  } finally {
    await guest?.close();
    if (qemu) await qemu.stop(3000);
    await stop(backend, 3000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rec;
}

/** Every boot of every backend, interleaved (see the module comment). */
export async function runBackendAb(o: BackendAbOptions): Promise<BootRecord[]> {
  if (o.backends.length === 0) throw new Error('no backend to measure');
  const kernel = o.kernel ?? findGuestKernel();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-ab-initrd-'));
  let initrd: string;
  try {
    initrd = cachedInitramfs({
      kernel,
      fallbackOutput: path.join(scratch, 'initrd.gz'),
    }).path;
  } catch (err) {
    fs.rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
  const boots: BootRecord[] = [];
  for (let round = 0; round < o.boots; round++) {
    const n = o.backends.length;
    for (let k = 0; k < n; k++) {
      const spec = o.backends[(round + k) % n]!;
      o.onProgress?.(`round ${round + 1}/${o.boots}: booting a guest on ${spec.name}`);
      boots.push(await runBoot(spec, round, o, kernel, initrd));
    }
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  return boots;
}
