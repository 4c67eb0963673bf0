/**
 * The soak scenario: what connections cost the `vmm` in memory and fds, and
 * whether it gives the memory back once they are gone. Through the real
 * hybrid-vsock socket, to a guest port with a listener (the agent's 1024 in
 * the bench stack):
 *
 *   warm-up   `warmup` CONNECT/close cycles, then a settle: the baseline
 *             (RSS and fd count of the vmm);
 *   storm     `cycles` CONNECT/close cycles, `concurrency` at a time; RSS
 *             sampled throughout (the peak);
 *   settled   after `settleMs` of quiet;
 *   held      `held` connections open at once (idle streams): the cost of
 *             one connection is (held − settled) / held, in RSS and in fds;
 *   after     all released, after `settleMs` of quiet: compared with the
 *             baseline, this is the memory the load left behind.
 *
 * Every loop is bounded by its count and by `timeoutMs` overall.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { hybridConnect } from '../broker/hvsock-client.js';

/**
 * Quiet before the settled and after samples: V8 gives back a heap grown
 * under load through its memory reducer, about 8 s after the load's last
 * full GC, so a shorter wait measures memory that is on its way back.
 */
export const SOAK_SETTLE_MS = 12_000;

export interface SoakOptions {
  hvsockPath: string;
  vmmPid: number;
  /** A guest port with a listener. */
  port: number;
  warmup: number;
  cycles: number;
  concurrency: number;
  held: number;
  settleMs: number;
  timeoutMs: number;
}

export interface SoakSample {
  rssMiB: number;
  fds: number;
}

export interface SoakResult {
  cycles: number;
  held: number;
  baseline: SoakSample;
  stormPeakMiB: number;
  settled: SoakSample;
  holding: SoakSample;
  after: SoakSample;
  /** RSS and fds one open connection costs the vmm. */
  perConnectionKiB: number;
  perConnectionFds: number;
  /** What the load left behind: after − baseline. */
  leftMiB: number;
  leftFds: number;
  /** What the fds left behind are (readlink of each), when there are any. */
  leftOpen?: string[];
}

const MiB = 1024 * 1024;

function openFds(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(fd, fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

function sample(pid: number): SoakSample {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return { rssMiB: (Number(m[1]) * 1024) / MiB, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A sample after `settleMs` of quiet; on a loaded machine the last closes
 * may still be in flight then, so fds get up to 10 s more to come back to
 * `fdTarget` (what is still open after that is reported as left behind).
 */
async function settledSample(o: SoakOptions, fdTarget: number): Promise<SoakSample> {
  await sleep(o.settleMs);
  const end = Date.now() + 10_000;
  let s = sample(o.vmmPid);
  while (s.fds > fdTarget && Date.now() < end) {
    await sleep(100);
    s = sample(o.vmmPid);
  }
  return s;
}

/** `count` CONNECT/close cycles, `concurrency` at a time; `onEach` after each. */
async function cycles(o: SoakOptions, count: number, deadline: number, onEach: () => void): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      if (Date.now() > deadline) throw new Error(`soak: ${count} cycles not done within ${o.timeoutMs} ms`);
      next++;
      const { socket } = await hybridConnect(o.hvsockPath, o.port, o.timeoutMs);
      await new Promise<void>((r) => {
        socket.once('close', () => r());
        socket.destroy();
      });
      onEach();
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, count) }, worker));
}

export async function soak(o: SoakOptions): Promise<SoakResult> {
  const deadline = Date.now() + o.timeoutMs;
  await cycles(o, o.warmup, deadline, () => {});
  await sleep(o.settleMs);
  const baseline = sample(o.vmmPid);
  const baselineOpen = openFds(o.vmmPid);

  let peak = baseline.rssMiB;
  let done = 0;
  await cycles(o, o.cycles, deadline, () => {
    if (++done % 100 === 0) peak = Math.max(peak, sample(o.vmmPid).rssMiB);
  });
  peak = Math.max(peak, sample(o.vmmPid).rssMiB);
  const settled = await settledSample(o, baseline.fds);

  const open: net.Socket[] = [];
  let holding: SoakSample;
  try {
    for (let i = 0; i < o.held; i++) {
      if (Date.now() > deadline)
        throw new Error(`soak: ${o.held} connections not open within ${o.timeoutMs} ms`);
      const { socket } = await hybridConnect(o.hvsockPath, o.port, o.timeoutMs);
      socket.on('error', () => {});
      open.push(socket);
    }
    await sleep(Math.min(o.settleMs, 1000));
    holding = sample(o.vmmPid);
  } finally {
    await Promise.all(
      open.map(
        (s) =>
          new Promise<void>((r) => {
            if (s.destroyed) r();
            else s.once('close', () => r()).destroy();
          }),
      ),
    );
  }
  const after = await settledSample(o, baseline.fds);
  const left = [...openFds(o.vmmPid)].filter(([fd, what]) => baselineOpen.get(fd) !== what);
  return {
    cycles: o.cycles,
    held: o.held,
    baseline,
    stormPeakMiB: peak,
    settled,
    holding,
    after,
    perConnectionKiB: o.held > 0 ? ((holding.rssMiB - settled.rssMiB) * 1024) / o.held : Number.NaN,
    perConnectionFds: o.held > 0 ? (holding.fds - settled.fds) / o.held : Number.NaN,
    leftMiB: after.rssMiB - baseline.rssMiB,
    leftFds: after.fds - baseline.fds,
    ...(left.length > 0 ? { leftOpen: left.map(([fd, what]) => `${fd} -> ${what}`) } : {}),
  };
}
