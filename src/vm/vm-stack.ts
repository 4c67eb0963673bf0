/**
 * The stack `run --vm qemu` starts: a `vmm --vhost-user` process (the
 * hybrid-vsock device as QEMU's vhost-user-vsock backend), a busybox
 * initramfs (cached across runs: initramfs.ts), and a QEMU guest (TCG unless
 * KVM is asked for) whose /init runs the host's node on this build's agent
 * with `--vsock`, chrooted into the host's root (read-only over 9p). The
 * passfd listener port reaches the agent as Kata's does:
 * `agent.passfd_listener_port=<port>` on the kernel command line
 * ($AGENT_PASSFD_LISTENER_PORT in the guest).
 *
 * Before the agent starts, the guest mounts a devpts on /dev/pts (the
 * agent's ptys for terminal-mode processes) and each of `shares` (host
 * directories exported over 9p, writable: a container's root filesystem for
 * the containerd shim) at its `guestPath`.
 *
 * Ready once `CONNECT <agent_port>` over the hybrid-vsock socket is answered
 * OK (retried while the guest boots, bounded); the agent listens on its
 * passfd port before its ttrpc port, so both are up by then.
 *
 * `restartQemu()` replaces the guest: the current QEMU is stopped if it still
 * runs (SIGTERM, then SIGKILL) and a new one boots against the same `vmm`,
 * which serves one QEMU at a time and takes the next one when the previous
 * one disconnects; the hybrid-vsock socket and its path stay the same, so
 * brokers keep working (their next call reconnects).
 *
 * Logs. The stack's directory holds `console.log` (the guest's serial
 * console: kernel, /init, and the agent's log lines; every boot appended,
 * each after a `===== passfd-vm: boot N =====` line) and `vmm.log` (the
 * vmm's stderr, which is also forwarded to ours unless `onVmmLog` says
 * otherwise). stop() removes the directory, but the logs are not lost when
 * something went wrong: they are copied, the console first and then the vmm
 * log, into one file `<os.tmpdir()>/passfd-vm-console-<UTC time>-<pid>.log`
 * (mode 0600), whose path is
 *   - appended to the error when start or restart fails (after the console
 *     tail the error already shows),
 *   - logged as a warning by stop() when the guest had gone by itself before
 *     stop() (QEMU exited or was killed from outside: a crash, a panic, the
 *     OOM killer),
 *   - logged by stop({ keepLogs: true }) (a caller that saw a failure, e.g. a
 *     test), or returned by keepLogs() at any time.
 * `keptLogs` then holds the path. A clean stop leaves nothing behind.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hybridConnect } from '../broker/hvsock-client.js';
import type { Config } from '../config/schema.js';
import { createLogger, type Logger } from '../util/log.js';
import { makePrivateDir } from '../util/private-dir.js';
import { CLI_MAIN, type ReadyChild, startReady, stopChild } from '../util/ready-child.js';
import { configuredGuestKernel, type GuestKernel } from './guest-kernel.js';
import { cachedInitramfs } from './initramfs.js';
import { type QemuHandle, type QemuShare, startQemu } from './qemu.js';

export interface VmStackOptions {
  config: Config;
  /** The file `config` came from: the vmm reads its `[hypervisor]` access keys from it. */
  configPath?: string;
  /** Log level for vmm and the guest agent (default warn). */
  logLevel?: string;
  accel?: 'tcg' | 'kvm';
  memoryMiB?: number;
  cpus?: number;
  /** Extra agent arguments. */
  agentArgs?: string[];
  /** Extra vmm arguments (e.g. `--credit firecracker`, `--metrics <file>`). */
  vmmArgs?: string[];
  /** Node options for the vmm process (e.g. `--cpu-prof`). */
  vmmNodeArgs?: string[];
  /** Boot + agent start budget (default 180 s: TCG is slow). */
  startTimeoutMs?: number;
  /** Called with the guest's console output (default: dropped, kept in <dir>/console.log). */
  onConsole?: (chunk: string) => void;
  /** Called with the vmm's stderr (default: written to our stderr); always kept in <dir>/vmm.log too. */
  onVmmLog?: (chunk: string) => void;
  /** Initramfs cache directory (default: see initramfs.ts). */
  initramfsCacheDir?: string;
  /** Where the stack reports kept logs (default: a `vm` logger on stderr). */
  log?: Logger;
  /** The QEMU binary (default qemu-system-x86_64 from PATH). */
  qemuBinary?: string;
  /** Host directories exported to the guest over 9p and mounted at `guestPath` before the agent starts. */
  shares?: readonly (QemuShare & { guestPath: string })[];
}

export interface VmStack {
  dir: string;
  hvsockPath: string;
  vmm: ChildProcess;
  /** The current QEMU (a new one after restartQemu()). */
  readonly qemu: QemuHandle;
  /** The kernel the guest boots (`[hypervisor] kernel`, else the newest installed). */
  kernel: GuestKernel;
  /** Milliseconds from the current QEMU's start until the agent answered. */
  readonly bootMs: number;
  /** Guests booted so far (1, then +1 per restartQemu()). */
  readonly boots: number;
  /** `<dir>/console.log`: every boot's console. */
  consoleLogPath: string;
  /** `<dir>/vmm.log`: the vmm's stderr. */
  vmmLogPath: string;
  /** The vmm's stderr so far. */
  vmmLog(): string;
  /** Stops the current QEMU if it runs and boots a new one against the same vmm; resolves with its boot time. */
  restartQemu(): Promise<number>;
  /** Copies the console and vmm logs to a file outside the stack's directory; returns its path. */
  keepLogs(): string;
  /** Where the logs were kept, if they were (see the module comment). */
  readonly keptLogs: string | null;
  /** Stops QEMU and the vmm, removes the directory (keeping the logs first when asked or when the guest died). */
  stop(opts?: { keepLogs?: boolean }): Promise<void>;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function waitForFile(p: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > until) throw new Error(`${p} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Retries `CONNECT <port>` until the guest answers OK; rejects if QEMU exits or time runs out. */
async function waitForAgent(hvsockPath: string, port: number, qemu: QemuHandle, timeoutMs: number) {
  const until = Date.now() + timeoutMs;
  let exited: number | string | undefined;
  void qemu.exited.then((v) => {
    exited = v;
  });
  let last = '';
  for (;;) {
    if (exited !== undefined) {
      throw new Error(
        `QEMU exited (${exited}) before the agent was ready; console tail:\n${qemu.console().slice(-2000)}`,
      );
    }
    try {
      const s = await hybridConnect(hvsockPath, port, 2000);
      s.socket.destroy();
      return;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > until) {
      throw new Error(
        `guest agent not reachable on vsock port ${port} within ${timeoutMs} ms (${last}); console tail:\n${qemu.console().slice(-2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

type VmmChild = ReadyChild;

/**
 * Starts `passfd-broker vmm <args>` (ready-child.ts's startReady: ready on
 * READY=1) with its stderr captured: written synchronously to `logFile`
 * (complete whenever it is copied) and handed to `onLog`.
 */
async function startVmm(
  args: string[],
  dir: string,
  level: string,
  logFile: string,
  onLog: (chunk: string) => void,
  timeoutMs: number,
  nodeArgs: string[] = [],
): Promise<VmmChild> {
  let logFd = fs.openSync(logFile, 'a', 0o600);
  const closeLog = () => {
    if (logFd >= 0) fs.closeSync(logFd);
    logFd = -1;
  };
  try {
    const v = await startReady(args, dir, 'vmm', level, timeoutMs, {
      nodeArgs,
      onStderr: (chunk: Buffer) => {
        if (logFd >= 0) fs.writeSync(logFd, chunk);
        onLog(chunk.toString('utf8'));
      },
    });
    if (v.child.stderr?.closed) closeLog();
    else v.child.on('close', closeLog);
    return v;
  } catch (err) {
    closeLog();
    throw err;
  }
}

function readIfExists(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

/** Copies the console and vmm logs into one file in os.tmpdir() (to `into` if given); returns its path. */
function copyLogs(consoleLog: string, vmmLog: string, into?: string): string | null {
  const consoleText = readIfExists(consoleLog);
  const vmmText = readIfExists(vmmLog);
  if (!consoleText && !vmmText) return null;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = into ?? path.join(os.tmpdir(), `passfd-vm-console-${stamp}-${process.pid}.log`);
  fs.writeFileSync(
    file,
    `===== guest console (${consoleLog}) =====\n${consoleText ?? '(none)\n'}\n` +
      `===== vmm log (${vmmLog}) =====\n${vmmText ?? '(none)\n'}`,
    { mode: 0o600 },
  );
  return file;
}

/** SIGTERM (SIGKILL after 3 s), then waits (bounded) for its stderr to close: vmm.log is complete after this. */
async function stopVmm(v: VmmChild): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    if (v.child.stderr?.closed ?? true) resolve();
    else v.child.once('close', () => resolve());
  });
  await stopChild(v.child);
  v.closeNotify();
  let t: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise((r) => (t = setTimeout(r, 2000)))]);
  clearTimeout(t);
}

function hasExited(q: QemuHandle): boolean {
  return q.process.exitCode !== null || q.process.signalCode !== null;
}

export async function startVmStack(opts: VmStackOptions): Promise<VmStack> {
  const dir = makePrivateDir('passfd-vm-');
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const vuPath = path.join(dir, 'vhost-user.sock');
  const consoleLogPath = path.join(dir, 'console.log');
  const vmmLogPath = path.join(dir, 'vmm.log');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 180_000;
  const rt = opts.config.runtime;
  const cid = String(opts.config.hypervisor.guest_cid);
  const log = opts.log ?? createLogger('vm');
  let vmm: VmmChild | null = null;
  let qemu: QemuHandle | null = null;
  let kept: string | null = null;
  const keepLogs = (): string => {
    kept = copyLogs(consoleLogPath, vmmLogPath, kept ?? undefined) ?? kept;
    if (!kept) throw new Error(`no logs to keep in ${dir}`);
    return kept;
  };
  /** Keeps the logs (if there are any) and says where in the error. */
  const annotate = (err: unknown): unknown => {
    try {
      const p = copyLogs(consoleLogPath, vmmLogPath, kept ?? undefined);
      if (p && err instanceof Error) {
        kept = p;
        err.message += `\n(guest console and vmm log kept at ${p})`;
      }
    } catch (copyErr) {
      log.warn(`could not keep the VM logs: ${(copyErr as Error).message}`);
    }
    return err;
  };
  try {
    const kernel: GuestKernel = configuredGuestKernel(opts.config.hypervisor);
    const initrdP = Promise.resolve().then(
      () =>
        cachedInitramfs({
          kernel,
          fallbackOutput: path.join(dir, 'initrd.gz'),
          cacheDir: opts.initramfsCacheDir,
        }).path,
    );
    // Awaited below, after the vmm started; a failure meanwhile must not count as unhandled.
    initrdP.catch(() => {});
    vmm = await startVmm(
      [
        'vmm',
        '--hvsock',
        hvsockPath,
        '--vhost-user',
        vuPath,
        '--guest-cid',
        cid,
        ...(opts.configPath ? ['--config', opts.configPath] : []),
        ...(opts.vmmArgs ?? []),
      ],
      dir,
      level,
      vmmLogPath,
      opts.onVmmLog ?? ((s) => process.stderr.write(s)),
      20_000,
      opts.vmmNodeArgs,
    );
    await waitForFile(vuPath, 10_000);
    const initrd = await initrdP;
    const agentCmd = [
      process.execPath,
      CLI_MAIN,
      'agent',
      '--vsock',
      '--agent-port',
      String(rt.agent_port),
      '--stream-wait-ms',
      String(rt.agent_stream_wait_ms),
      ...(opts.agentArgs ?? []),
    ]
      .map(shellQuote)
      .join(' ');
    // In the guest, before the agent: a devpts for the agent's ptys (terminal mode), and the shares.
    const prelude = [
      'mkdir -p /dev/pts && mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts',
      ...(opts.shares ?? []).map(
        (s) =>
          `mkdir -p ${shellQuote(s.guestPath)} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000${s.readonly ? ',ro' : ''} ${shellQuote(s.tag)} ${shellQuote(s.guestPath)}`,
      ),
    ].join(' && ');
    let boots = 0;
    const launch = (): QemuHandle => {
      boots++;
      fs.appendFileSync(
        consoleLogPath,
        `${boots > 1 ? '\n' : ''}===== passfd-vm: boot ${boots} (${new Date().toISOString()}) =====\n`,
        { mode: 0o600 },
      );
      return startQemu({
        kernel: kernel.vmlinuz,
        initrd,
        vhostUserSocket: vuPath,
        accel: opts.accel ?? 'tcg',
        memoryMiB: opts.memoryMiB,
        cpus: opts.cpus,
        consoleLog: consoleLogPath,
        consoleLogAppend: true,
        onConsole: opts.onConsole,
        agentParams: { passfd_listener_port: rt.passfd_listener_port },
        shares: opts.shares,
        qemuBinary: opts.qemuBinary,
        command: `${prelude} && cd / && PASSFD_LOG=${shellQuote(level)} exec ${agentCmd}`,
      });
    };
    qemu = launch();
    await waitForAgent(hvsockPath, rt.agent_port, qemu, timeout);
    let current: QemuHandle = qemu;
    let bootMs = Date.now() - current.startedAt;
    const v = vmm;
    let stopped = false;
    return {
      dir,
      hvsockPath,
      kernel,
      vmm: v.child,
      get qemu() {
        return current;
      },
      get bootMs() {
        return bootMs;
      },
      get boots() {
        return boots;
      },
      consoleLogPath,
      vmmLogPath,
      vmmLog: () => readIfExists(vmmLogPath) ?? '',
      get keptLogs() {
        return kept;
      },
      keepLogs,
      restartQemu: async () => {
        if (stopped) throw new Error('VM stack stopped');
        await current.stop(2000);
        current = launch();
        try {
          await waitForAgent(hvsockPath, rt.agent_port, current, timeout);
        } catch (err) {
          throw annotate(err);
        }
        bootMs = Date.now() - current.startedAt;
        return bootMs;
      },
      stop: async (stopOpts = {}) => {
        if (stopped) return;
        stopped = true;
        const diedAlone = hasExited(current);
        await current.stop(2000);
        await stopVmm(v);
        if (stopOpts.keepLogs || diedAlone) {
          try {
            const p = keepLogs();
            log.warn(
              `${diedAlone ? `the guest had exited by itself (QEMU: ${await current.exited})` : 'kept on request'}: guest console and vmm log kept at ${p}`,
            );
          } catch (err) {
            log.warn(`could not keep the VM logs: ${(err as Error).message}`);
          }
        }
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (qemu) await qemu.stop(1000);
    if (vmm) await stopVmm(vmm);
    annotate(err);
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
