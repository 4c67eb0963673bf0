/**
 * Boots a QEMU guest wired to a vhost-user-vsock backend (the device's
 * `vmm --vhost-user <socket>`), with a command line verified on this
 * project's machine kind: TCG by default (KVM fails or hangs at guest boot
 * under nested virtualisation),
 * shared memfd guest memory (vhost-user needs it), the host root read-only
 * over 9p, no network, serial console on stdout.
 *
 * The backend must already listen on the vhost-user socket: QEMU 7.2 does not
 * retry for this device.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { dieWithParent } from '../util/lifeline.js';
import { VM_EXIT_MARKER, VM_READY_MARKER } from './initramfs.js';

export interface QemuOptions {
  kernel: string;
  initrd: string;
  /** The backend's vhost-user socket. */
  vhostUserSocket: string;
  /** Shell script the guest's /init runs chrooted in the host root (base64 on the kernel command line). */
  command?: string;
  /** Extra `agent.<key>=<value>` kernel parameters (exported as AGENT_<KEY> to the command). */
  agentParams?: Record<string, string | number>;
  accel?: 'tcg' | 'kvm';
  memoryMiB?: number;
  cpus?: number;
  /**
   * Also write the console to this file, synchronously as it arrives (so a
   * copy taken at any moment, e.g. right after QEMU died, is complete).
   */
  consoleLog?: string;
  /** Append to `consoleLog` instead of truncating it (a second boot of the same stack). */
  consoleLogAppend?: boolean;
  /** Extra kernel command line words. */
  append?: string;
  qemuBinary?: string;
  /** Export the host's root read-only over 9p (tag `hostroot`); default `/`. */
  shareRoot?: string;
  /** More host directories exported over 9p, writable unless `readonly` (ownership passed through). */
  shares?: readonly QemuShare[];
  /** Called with each chunk of console output. */
  onConsole?: (chunk: string) => void;
}

export interface QemuShare {
  /** The 9p mount tag the guest mounts it by. */
  tag: string;
  /** The host directory. */
  path: string;
  readonly?: boolean;
}

export interface QemuHandle {
  readonly process: ChildProcess;
  readonly startedAt: number;
  /** Console output so far. */
  readonly console: () => string;
  /** Resolves with the console text up to the first match (rejects on timeout or QEMU exit). */
  waitFor(pattern: RegExp | string, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves when `/init` printed `PASSFD-VM-READY`: the 9p root is mounted, the command starts. */
  ready(timeoutMs?: number): Promise<number>;
  /** Resolves with the command's exit status once `/init` printed `PASSFD-VM-EXIT`. */
  commandExit(timeoutMs?: number): Promise<string>;
  /** Resolves with QEMU's exit code (or signal name), once its console output has all arrived. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | string>;
}

export function qemuArgs(opts: QemuOptions): string[] {
  const mem = opts.memoryMiB ?? 1024;
  const accel = opts.accel ?? 'tcg';
  const params = Object.entries(opts.agentParams ?? {}).map(([k, v]) => `agent.${k}=${v}`);
  if (opts.command !== undefined) params.push(`agent.cmd=${Buffer.from(opts.command).toString('base64')}`);
  const append = ['console=ttyS0', 'panic=-1', 'quiet', ...params, opts.append ?? '']
    .filter(Boolean)
    .join(' ');
  return [
    '-accel',
    accel,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    String(mem),
    '-smp',
    String(opts.cpus ?? 1),
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-net',
    'none',
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-machine',
    'pc,memory-backend=mem',
    '-kernel',
    opts.kernel,
    '-initrd',
    opts.initrd,
    '-append',
    append,
    '-virtfs',
    // multidevs=remap: the host root spans several filesystems (/proc, /sys, /tmp …);
    // remapping keeps guest inode numbers unique across them (QEMU warns otherwise).
    `local,path=${opts.shareRoot ?? '/'},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap`,
    ...(opts.shares ?? []).flatMap((s) => [
      '-virtfs',
      `local,path=${s.path},mount_tag=${s.tag},security_model=passthrough,multidevs=remap${s.readonly ? ',readonly=on' : ''}`,
    ]),
    '-chardev',
    `socket,id=vsock0,path=${opts.vhostUserSocket}`,
    '-device',
    'vhost-user-vsock-pci,chardev=vsock0',
  ];
}

export function startQemu(opts: QemuOptions): QemuHandle {
  const args = qemuArgs(opts);
  const startedAt = Date.now();
  // Its own session (a terminal's Ctrl-C is for `run`), and SIGKILL when we die.
  const cmd = dieWithParent(opts.qemuBinary ?? 'qemu-system-x86_64', args, 'SIGKILL');
  const child = spawn(cmd.file, cmd.args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let text = '';
  const waiters = new Set<() => void>();
  let logFd = opts.consoleLog ? fs.openSync(opts.consoleLog, opts.consoleLogAppend ? 'a' : 'w', 0o600) : -1;
  const closeLog = () => {
    if (logFd >= 0) fs.closeSync(logFd);
    logFd = -1;
  };
  const onData = (chunk: Buffer) => {
    const s = chunk.toString('utf8');
    text += s;
    if (logFd >= 0) fs.writeSync(logFd, s);
    opts.onConsole?.(s);
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', onData);
  // QEMU's own messages, marked at each line start (they come in pieces).
  let stderrAtLineStart = true;
  child.stderr!.on('data', (chunk: Buffer) => {
    const s = chunk.toString();
    const marked = s.replace(/^(?=.)/gm, (_m, at: number) =>
      at === 0 && !stderrAtLineStart ? '' : '[qemu stderr] ',
    );
    stderrAtLineStart = s.endsWith('\n');
    onData(Buffer.from(marked));
  });
  let exitValue: number | string | undefined;
  const exited = new Promise<number | string>((resolve) => {
    const settle = (v: number | string) => {
      if (exitValue !== undefined) return;
      exitValue = v;
      closeLog();
      resolve(v);
      for (const w of [...waiters]) w();
    };
    // 'close', not 'exit': it comes after the last console chunk, so the
    // console text and log file are complete once `exited` resolves.
    child.on('close', (code, signal) => settle(code ?? signal ?? 'unknown'));
    child.on('error', (err) => {
      onData(Buffer.from(`[qemu spawn error] ${err.message}\n`));
      settle('spawn-error');
    });
  });

  const waitFor = (pattern: RegExp | string, timeoutMs = 120_000): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const re =
        typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
      const done = () => {
        waiters.delete(check);
        clearTimeout(timer);
      };
      const check = () => {
        const m = text.match(re);
        if (m) {
          done();
          resolve(m);
        } else if (exitValue !== undefined) {
          done();
          reject(new Error(`QEMU exited (${exitValue}) before ${re}; console tail:\n${text.slice(-2000)}`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for ${re}; console tail:\n${text.slice(-2000)}`),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });

  return {
    process: child,
    startedAt,
    console: () => text,
    waitFor,
    ready: async (timeoutMs) => {
      await waitFor(VM_READY_MARKER, timeoutMs);
      return Date.now() - startedAt;
    },
    commandExit: async (timeoutMs) => (await waitFor(new RegExp(`${VM_EXIT_MARKER} (\\S+)`), timeoutMs))[1]!,
    exited,
    stop: async (graceMs = 3000) => {
      if (exitValue !== undefined) return exitValue;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const v = await exited;
      clearTimeout(t);
      return v;
    },
  };
}
