/**
 * The stack `run --vm qemu` starts: a `vmm --vhost-user` process (the
 * hybrid-vsock device as QEMU's vhost-user-vsock backend), a busybox
 * initramfs, and a QEMU guest (TCG unless KVM is asked for) whose /init runs
 * the host's node on this build's agent with `--vsock`, chrooted into the
 * host's root (read-only over 9p). The passfd listener port reaches the agent
 * as Kata's does: `agent.passfd_listener_port=<port>` on the kernel command
 * line ($AGENT_PASSFD_LISTENER_PORT in the guest).
 *
 * Ready once `CONNECT <agent_port>` over the hybrid-vsock socket is answered
 * OK (retried while the guest boots, bounded); the agent listens on its
 * passfd port before its ttrpc port, so both are up by then.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI_MAIN, type ReadyChild, startReady, stopChild } from '../broker/embedded-stack.js';
import { hybridConnect } from '../broker/hvsock-client.js';
import type { Config } from '../config/schema.js';
import { buildInitramfs, findGuestKernel } from './initramfs.js';
import { type QemuHandle, startQemu } from './qemu.js';

export interface VmStackOptions {
  config: Config;
  /** Log level for vmm and the guest agent (default warn). */
  logLevel?: string;
  accel?: 'tcg' | 'kvm';
  memoryMiB?: number;
  cpus?: number;
  /** Extra agent arguments. */
  agentArgs?: string[];
  /** Boot + agent start budget (default 180 s: TCG is slow). */
  startTimeoutMs?: number;
  /** Called with the guest's console output (default: dropped, kept in <dir>/console.log). */
  onConsole?: (chunk: string) => void;
}

export interface VmStack {
  dir: string;
  hvsockPath: string;
  vmm: ChildProcess;
  qemu: QemuHandle;
  /** Milliseconds from QEMU start until the agent answered. */
  bootMs: number;
  stop(): Promise<void>;
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

export async function startVmStack(opts: VmStackOptions): Promise<VmStack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-vm-'));
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const vuPath = path.join(dir, 'vhost-user.sock');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 180_000;
  const rt = opts.config.runtime;
  const cid = String(opts.config.hypervisor.guest_cid);
  let vmm: ReadyChild | null = null;
  let qemu: QemuHandle | null = null;
  try {
    const kernel = findGuestKernel();
    const initrdP = Promise.resolve().then(
      () => buildInitramfs({ output: path.join(dir, 'initrd.gz'), kernel }).path,
    );
    vmm = await startReady(
      ['vmm', '--hvsock', hvsockPath, '--vhost-user', vuPath, '--guest-cid', cid],
      dir,
      'vmm',
      level,
      20_000,
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
    qemu = startQemu({
      kernel: kernel.vmlinuz,
      initrd,
      vhostUserSocket: vuPath,
      accel: opts.accel ?? 'tcg',
      memoryMiB: opts.memoryMiB,
      cpus: opts.cpus,
      consoleLog: path.join(dir, 'console.log'),
      onConsole: opts.onConsole,
      agentParams: { passfd_listener_port: rt.passfd_listener_port },
      command: `cd / && PASSFD_LOG=${shellQuote(level)} exec ${agentCmd}`,
    });
    await waitForAgent(hvsockPath, rt.agent_port, qemu, timeout);
    const bootMs = Date.now() - qemu.startedAt;
    const v = vmm;
    const q = qemu;
    let stopped = false;
    return {
      dir,
      hvsockPath,
      vmm: v.child,
      qemu: q,
      bootMs,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await q.stop(2000);
        await stopChild(v.child);
        v.closeNotify();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (qemu) await qemu.stop(1000);
    if (vmm) {
      await stopChild(vmm.child);
      vmm.closeNotify();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
