/**
 * A live `vmm` (loopback guest) for the fuzzers, restarted when a case kills
 * it (or failed, since a leak stays leaked), with guest processes played by
 * the test through the AF_VSOCK stand-in: four listeners with fixed
 * behaviours (echo, sink, close at once, stall), and a host process echoing
 * on `<hvsock>_7001` for guest-initiated connections. Streams accepted during
 * a case belong to it and are closed when it ends. A fresh, valid passfd
 * round trip proves the device still serves after whatever the fuzzer did.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { closeQuietly, makePipe, writeFd } from '../../../native-bindings/index.js';
import { passFd } from '../../../src/broker/hvsock-client.js';
import { StandinVsock } from '../../../src/guest-vsock/standin.js';
import type { VsockListener } from '../../../src/guest-vsock/types.js';
import { startVmm, stopChild, tmpDir, type Vmm } from '../../support/cli.js';
import { FdZoo } from './fd-kinds.js';
import { keepLog, ProcessHealth } from './process-health.js';

/** Guest ports with a listener, by what it does with an accepted stream. */
export const GuestPort = { ECHO: 5001, SINK: 5002, CLOSE: 5003, STALL: 5004 } as const;
/** A guest port nobody listens on. */
export const NOBODY_PORT = 5999;
/** Host port with an echoing listener at `<hvsock>_<port>`, for guest-initiated connections. */
export const HOST_ECHO_PORT = 7001;

const FRESH_PORT_BASE = 6000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export class VmmTarget {
  vmm!: Vmm;
  guest!: StandinVsock;
  health!: ProcessHealth;
  /** Fds for passing, made per case. */
  zoo!: FdZoo;
  scratch = tmpDir('passfd-fuzz-');
  restarts = 0;
  private listeners: VsockListener[] = [];
  private hostEcho: net.Server | null = null;
  /** Guest-side streams accepted during the current case. */
  private readonly caseStreams = new Set<net.Socket | number>();
  private freshPort = FRESH_PORT_BASE;
  private dirty = false;
  private inCase = false;

  constructor(private readonly extraArgs: string[] = []) {}

  get hvsock(): string {
    return this.vmm.hvsock;
  }

  get standinPath(): string {
    return path.join(this.vmm.guestDir, 'vsock.sock');
  }

  /**
   * After a failed case the process is suspect (a leak stays leaked): the next
   * `ensure()` starts a fresh one, so that shrinking replays each candidate
   * against a clean process.
   */
  markDirty(): void {
    this.dirty = true;
  }

  /** Starts the vmm (again, after a crash or a failed case), its guest listeners, warms it up and takes the baseline. */
  async ensure(): Promise<void> {
    const running = this.vmm && this.vmm.child.exitCode === null && this.vmm.child.signalCode === null;
    if (running && !this.dirty) return;
    if (this.vmm) {
      this.restarts++;
      this.endCase();
      this.closeListeners();
      await this.stopVmm();
    }
    this.dirty = false;
    this.vmm = await startVmm(this.extraArgs);
    const child = this.vmm.child;
    this.health = new ProcessHealth(
      'vmm',
      this.vmm.pid,
      () =>
        child.exitCode !== null || child.signalCode !== null
          ? `${child.signalCode ?? `exit ${child.exitCode}`}`
          : null,
      () => this.vmm.log.text.split('\n').slice(-15).join('\n'),
    );
    this.guest = new StandinVsock(this.vmm.guestDir);
    this.zoo = new FdZoo(this.scratch, this.vmm.hvsock);
    this.listeners = await Promise.all([
      this.guest.listen(GuestPort.ECHO, ({ fd }) => {
        const s = this.adopt(fd);
        s.on('data', (d) => s.write(d));
        s.on('end', () => s.end());
      }),
      this.guest.listen(GuestPort.SINK, ({ fd }) => {
        const s = this.adopt(fd);
        s.resume();
        s.on('end', () => s.end());
      }),
      this.guest.listen(GuestPort.CLOSE, ({ fd }) => closeQuietly(fd)),
      this.guest.listen(GuestPort.STALL, ({ fd }) => this.track(fd)),
    ]);
    this.hostEcho = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      this.track(s);
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    });
    const echoPath = `${this.vmm.hvsock}_${HOST_ECHO_PORT}`;
    await new Promise<void>((resolve) => this.hostEcho!.listen(echoPath, resolve));
    // Warm-up: lazily created state (buffers, watchers, the first connections) before the baseline.
    for (let i = 0; i < 3; i++) await this.freshRequest();
    await new Promise((r) => setTimeout(r, 200));
    this.health.takeBaseline();
  }

  private adopt(fd: number): net.Socket {
    const s = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    s.on('error', () => {});
    this.track(s);
    return s;
  }

  /** A stream of the running case; one that arrives after its case ended (a late accept) is closed at once. */
  private track(s: net.Socket | number): void {
    if (this.inCase) this.caseStreams.add(s);
    else if (typeof s === 'number') closeQuietly(s);
    else s.destroy();
  }

  /** Streams accepted from now on belong to the case that starts. */
  beginCase(): void {
    this.inCase = true;
  }

  /** Closes the guest-side streams and the fds made for the case that just ran, and any that arrive late. */
  endCase(): void {
    this.inCase = false;
    for (const s of this.caseStreams) {
      if (typeof s === 'number') closeQuietly(s);
      else s.destroy();
    }
    this.caseStreams.clear();
    this.zoo?.closeAll();
  }

  /**
   * A real passfd round trip on a fresh guest port: a pipe's read end passed,
   * bytes written into the pipe arrive in the guest, EOF follows.
   */
  async freshRequest(): Promise<void> {
    const port = this.freshPort++;
    let accepted!: (fd: number) => void;
    const stream = new Promise<number>((r) => {
      accepted = r;
    });
    const listener = await this.guest.listen(port, ({ fd }) => accepted(fd));
    const [r, w] = makePipe();
    try {
      const hostPort = await withTimeout(passFd(this.vmm.hvsock, r, port), 5000, 'passfd');
      if (hostPort < 2 ** 30 || hostPort >= 2 ** 31) throw new Error(`host port ${hostPort} out of range`);
      closeQuietly(r);
      const fd = await withTimeout(stream, 5000, 'guest accept');
      const s = new net.Socket({ fd, readable: true, writable: false });
      const got = new Promise<string>((resolve, reject) => {
        let text = '';
        s.on('data', (d) => {
          text += d;
        });
        s.on('end', () => resolve(text));
        s.on('error', reject);
      });
      writeFd(w, Buffer.from('fresh request\n'));
      closeQuietly(w);
      const text = await withTimeout(got, 5000, 'data through the device');
      s.destroy();
      if (text !== 'fresh request\n') throw new Error(`guest received ${JSON.stringify(text)}`);
    } finally {
      closeQuietly(r);
      closeQuietly(w);
      listener.close();
    }
  }

  private closeListeners(): void {
    for (const l of this.listeners) l.close();
    this.listeners = [];
    this.hostEcho?.close();
    this.hostEcho = null;
  }

  private async stopVmm(): Promise<void> {
    await stopChild(this.vmm.child);
    keepLog('vmm', this.vmm.pid, this.vmm.log.text);
    fs.rmSync(this.vmm.dir, { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    this.endCase();
    this.closeListeners();
    if (this.vmm) await this.stopVmm();
    fs.rmSync(this.scratch, { recursive: true, force: true });
  }
}
