/**
 * A live `vmm --vhost-user` for the vhost-user socket fuzzer, restarted when
 * a case kills it (or failed: a leak stays leaked), with a host listener on
 * `<hvsock>_7001` (echoing) for the guest connections cases make. A fresh
 * stand-in QEMU that boots and connects a guest stream to that listener
 * proves the backend still serves a front-end after whatever the fuzzer did.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FakeQemu, until } from '../../device/vhost-user/qemu-sim.js';
import { Captured, spawnCli, stopChild, tmpDir, waitForPath } from '../../support/cli.js';
import { FdZoo } from './fd-kinds.js';
import { keepLog, ProcessHealth } from './process-health.js';

export const GUEST_CID = 3;
/** Host port with an echoing listener at `<hvsock>_<port>`. */
export const HOST_ECHO_PORT = 7001;

interface Running {
  child: ReturnType<typeof spawnCli>;
  dir: string;
  vu: string;
  hvsock: string;
  log: Captured;
  echo: net.Server;
  accepted: Set<net.Socket>;
  /** Connections the echo listener accepted so far. */
  accepts: number;
}

export class VhostUserTarget {
  health!: ProcessHealth;
  /** Fds of every kind for the cases' messages, closed at the end of each case. */
  zoo!: FdZoo;
  restarts = 0;
  private run: Running | null = null;
  private dirty = false;
  private freshPort = 50000;

  get socketPath(): string {
    return this.run!.vu;
  }

  get log(): Captured {
    return this.run!.log;
  }

  markDirty(): void {
    this.dirty = true;
  }

  /** Starts the vmm (again, after a crash or a failed case), warms it up and takes the baseline. */
  async ensure(): Promise<void> {
    const child = this.run?.child;
    const running = child && child.exitCode === null && child.signalCode === null;
    if (running && !this.dirty) return;
    if (this.run) {
      this.restarts++;
      await this.stopRun();
    }
    this.dirty = false;
    const dir = tmpDir('passfd-fuzz-vu-');
    const vu = path.join(dir, 'vu.sock');
    const hvsock = path.join(dir, 'h.sock');
    const accepted = new Set<net.Socket>();
    const echo = net.createServer({ allowHalfOpen: true }, (s) => {
      if (this.run) this.run.accepts++;
      accepted.add(s);
      s.on('error', () => {});
      s.on('close', () => accepted.delete(s));
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    });
    await new Promise<void>((r) => echo.listen(`${hvsock}_${HOST_ECHO_PORT}`, r));
    const proc = spawnCli(['vmm', '--hvsock', hvsock, '--vhost-user', vu, '--guest-cid', String(GUEST_CID)], {
      env: { ...process.env, PASSFD_LOG: process.env.PASSFD_LOG ?? 'info' },
    });
    const log = new Captured(proc.stderr);
    this.run = { child: proc, dir, vu, hvsock, log, echo, accepted, accepts: 0 };
    this.zoo = new FdZoo(dir, hvsock);
    this.health = new ProcessHealth(
      'vmm',
      proc.pid!,
      () =>
        proc.exitCode !== null || proc.signalCode !== null
          ? `${proc.signalCode ?? `exit ${proc.exitCode}`}`
          : null,
      () => log.text.split('\n').slice(-15).join('\n'),
    );
    await waitForPath(vu);
    // Warm-up: lazily created state (the first sessions, buffers) before the baseline.
    for (let i = 0; i < 3; i++) await this.freshSession();
    await new Promise((r) => setTimeout(r, 300));
    this.health.takeBaseline();
  }

  /** A well-behaved front-end: boots, connects a guest stream to the echo listener, leaves. */
  async freshSession(): Promise<void> {
    const q = new FakeQemu(this.run!.vu);
    const before = this.run!.accepts;
    try {
      await q.boot();
      await q.connectToHost(GUEST_CID, this.freshPort++, HOST_ECHO_PORT);
      await until(() => this.run!.accepts > before, 'the host listener to accept');
    } finally {
      q.close();
    }
  }

  /** Closes the host ends of guest connections a case left (the session's end resets them anyway). */
  endCase(): void {
    for (const s of this.run?.accepted ?? []) s.destroy();
    this.zoo?.closeAll();
  }

  private async stopRun(): Promise<void> {
    const r = this.run!;
    this.run = null;
    this.endCase();
    await stopChild(r.child);
    await new Promise<void>((done) => r.echo.close(() => done()));
    keepLog('vmm-vhost-user', r.child.pid!, r.log.text);
    fs.rmSync(r.dir, { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    if (this.run) await this.stopRun();
  }
}
