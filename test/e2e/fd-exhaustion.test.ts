/**
 * A vmm out of file descriptors (issue 10, item 4), through a real `vmm`
 * (loopback guest) whose RLIMIT_NOFILE the test lowers with `prlimit --pid`
 * once it has warmed up:
 * - a crowd of idle clients up to the limit: accepting pauses with one log
 *   line and no busy loop (the process's CPU time stays flat), and resumes
 *   once the crowd is gone;
 * - a crowd larger than MAX_WAITING_CLIENTS under the normal limit: the
 *   device holds at most that many of them, the rest wait in the backlog;
 * - passfd, CONNECT and a guest process's connect with 1 to 6 fds left:
 *   each is served or refused cleanly (passfd: an `ERR <reason>` line; the
 *   fd the kernel could not hand over is named as such), never a crash.
 * After each: the vmm is alive, serves a fresh passfd round trip, and its
 * /proc/<pid>/fd count is back to the warmed-up baseline.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeQuietly, makePipe } from '../../native-bindings/index.js';
import { HvsockError, hybridConnect, passFd } from '../../src/broker/hvsock-client.js';
import { MAX_WAITING_CLIENTS } from '../../src/device/defaults.js';
import { GuestPort, HOST_ECHO_PORT, VmmTarget } from '../fuzz/support/vmm-target.js';
import { fdCount, stopAll } from '../support/cli.js';

const target = new VmmTarget();
let normalLimit: number;

beforeAll(async () => {
  await target.ensure();
  normalLimit = nofile(target.vmm.pid);
});

afterAll(async () => {
  await target.stop();
  await stopAll();
});

/** The hard limit (Node raised the soft limit to it at start). */
function nofile(pid: number): number {
  const m = /Max open files\s+\d+\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return Number(m![1]);
}

/** Sets the vmm's soft limit (raising a hard limit needs CAP_SYS_RESOURCE). */
function setNofile(n: number): void {
  execFileSync('prlimit', ['--pid', String(target.vmm.pid), `--nofile=${n}:${normalLimit}`]);
}

/** utime + stime of `pid`, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function openFds(): Set<number> {
  return new Set(fs.readdirSync(`/proc/${target.vmm.pid}/fd`).map(Number));
}

/**
 * The soft limit that leaves the vmm exactly `left` free fds: the kernel
 * hands out the lowest free numbers, and the limit is on the number, so
 * the holes below it count too.
 */
function limitLeaving(left: number): number {
  const open = openFds();
  let free = 0;
  for (let n = 0; ; n++) if (!open.has(n) && ++free === left) return n + 1;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function crowd(n: number): net.Socket[] {
  return Array.from({ length: n }, () => {
    const s = net.connect(target.hvsock);
    s.on('error', () => {});
    return s;
  });
}

function count(re: RegExp): number {
  return (target.vmm.log.text.match(new RegExp(re, 'g')) ?? []).length;
}

/** After the case: alive, limit restored, a fresh request served, fds at the baseline. */
async function servesAgain(): Promise<void> {
  target.health.assertAlive();
  setNofile(normalLimit);
  await target.freshRequest();
  await target.health.assertFdsBack();
  expect(target.vmm.log.text).not.toMatch(/Uncaught|FATAL|TypeError|RangeError/);
}

describe('vmm out of file descriptors', () => {
  it('a crowd of idle clients up to the fd limit: accepting pauses, logged once, no busy loop; served again after', async () => {
    const warned = count(/EMFILE \(too many open files\): new connections wait in the backlog/);
    const before = openFds();
    const limit = limitLeaving(40);
    setNofile(limit);
    const idle = crowd(200);
    try {
      await target.vmm.log.waitFor(
        /accept on .*h\.sock: accept4: EMFILE .*new connections wait in the backlog/,
      );
      // Paused, not spinning: level-triggered readiness would otherwise call back at once, forever.
      const t0 = cpuTicks(target.vmm.pid);
      await sleep(1000);
      const burnt = cpuTicks(target.vmm.pid) - t0;
      expect(burnt).toBeLessThan(50); // a busy loop burns ~100 ticks a second
      // Every fd opened since is below the limit (fds open before it may sit above).
      const opened = [...openFds()].filter((fd) => !before.has(fd));
      expect(opened.filter((fd) => fd >= limit)).toEqual([]);
      expect(count(/EMFILE \(too many open files\): new connections wait in the backlog/)).toBe(warned + 1);
      target.health.assertAlive();
      for (const s of idle) s.destroy();
      // The closed crowd is accepted (EOF, dropped) as fds free up.
      await target.vmm.log.waitFor(/accepting on .*h\.sock again after \d+ ms/, 15_000);
    } finally {
      for (const s of idle) s.destroy();
      setNofile(normalLimit);
    }
    await servesAgain();
  });

  it(`a crowd beyond ${MAX_WAITING_CLIENTS} idle clients: the device holds at most that many, the rest wait in the backlog`, async () => {
    const base = fdCount(target.vmm.pid);
    const idle = crowd(MAX_WAITING_CLIENTS * 2 + 100);
    try {
      await target.vmm.log.waitFor(
        new RegExp(`${MAX_WAITING_CLIENTS} clients waiting for a command on .*h\\.sock \\(the cap\\)`),
      );
      await sleep(300);
      expect(fdCount(target.vmm.pid)).toBeLessThanOrEqual(base + MAX_WAITING_CLIENTS);
      target.health.assertAlive();
    } finally {
      for (const s of idle) s.destroy();
    }
    await servesAgain();
  });

  type Outcome = 'ok' | `refused: ${string}`;

  async function passPipe(port: number, keep: boolean): Promise<Outcome> {
    // A FIFO with `keep` makes the device open a keeper: one more fd.
    const fifo = path.join(target.scratch, `edge-${Date.now()}-${Math.random()}.fifo`);
    execFileSync('mkfifo', ['-m', '600', fifo]);
    const fd = keep ? fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK) : makePipe(true)[0];
    try {
      await passFd(target.hvsock, fd, port, { keep, timeoutMs: 5000 });
      return 'ok';
    } catch (err) {
      if (!(err instanceof HvsockError)) throw err;
      return `refused: ${err.message}`;
    } finally {
      closeQuietly(fd);
      fs.rmSync(fifo, { force: true });
    }
  }

  async function connect(port: number): Promise<Outcome> {
    try {
      const { socket } = await hybridConnect(target.hvsock, port, 5000);
      socket.destroy();
      return 'ok';
    } catch (err) {
      if (!(err instanceof HvsockError)) throw err;
      return `refused: ${err.message}`;
    }
  }

  async function guestConnect(port: number): Promise<Outcome> {
    try {
      const s = await target.guest.connect(port);
      closeQuietly(s.fd);
      return 'ok';
    } catch (err) {
      return `refused: ${(err as Error).message}`;
    }
  }

  const requests: [string, () => Promise<Outcome>][] = [
    ['passfd of a pipe', () => passPipe(GuestPort.SINK, false)],
    ['passfd of a FIFO with keep', () => passPipe(GuestPort.SINK, true)],
    ['CONNECT', () => connect(GuestPort.ECHO)],
    ["a guest process's connect to the host", () => guestConnect(HOST_ECHO_PORT)],
  ];

  it.each(requests)('%s with 1 to 6 fds left: served or refused cleanly', async (_what, request) => {
    const outcomes: Outcome[] = [];
    for (let left = 1; left <= 6; left++) {
      target.beginCase();
      try {
        await target.health.assertFdsBack();
        setNofile(limitLeaving(left));
        outcomes.push(await request());
        target.health.assertAlive();
      } finally {
        setNofile(normalLimit);
        target.endCase();
      }
    }
    // Each is OK or a refusal with a reason; with the fd itself lost, the passer is told so.
    for (const o of outcomes) expect(o).toMatch(/^(ok|refused: .+)$/);
    if (_what.startsWith('passfd')) expect(outcomes[0]).toMatch(/out of file descriptors/);
    // Enough fds for everything a connection needs: served.
    expect(outcomes.at(-1)).toBe('ok');
    await servesAgain();
  });
});
