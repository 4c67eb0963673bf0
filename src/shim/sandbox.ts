/**
 * The guest a shim runs its container in (a sandbox, in Kata's words),
 * chosen by `hypervisor.guest`:
 *
 * - loopback: the hybrid-vsock device, its loopback guest kernel and the
 *   agent all run in the shim's own process (as Dragonball runs inside
 *   Kata's runtime-rs shim; the agent reaches the guest's vsock through the
 *   AF_VSOCK stand-in, as `run`'s separate agent does). One Node start-up
 *   fewer per container: `ctr run --rm … true` p50 350 → 254 ms, measured
 *   side by side, with stdio throughput unchanged or better (the device and
 *   the agent's splices share a thread that was mostly waiting). The
 *   container processes are the shim's children, and the agent's guardian
 *   ends them if the shim dies. A container's root filesystem is simply
 *   its host path. The device's sockets admit whom `[hypervisor]` allows
 *   (src/access/), as `vmm`'s do.
 * - qemu: the VM stack `run --vm qemu` boots (`vmm --vhost-user` + QEMU,
 *   agent inside on AF_VSOCK). The guest mounts one writable 9p share,
 *   `<sandbox bundle>/shared` at /run/passfd/shared, and each container's
 *   root filesystem is bind-mounted into it as `shared/<container id>`, so
 *   the agent finds it at /run/passfd/shared/<id> (the sources of its bind
 *   mounts as `shared/<id>.mounts/<n>`). A bind made after boot
 *   shows up in the guest (QEMU resolves paths at each access), which is
 *   what lets a later container of the same sandbox join it.
 *
 * Both give a Broker on the device's hybrid-vsock socket, the host pids to
 * record for a dead shim's `delete`, the pid that stands for the VM (the
 * shim itself for loopback, QEMU for a VM), and `died`, which settles when
 * the guest goes away by itself.
 *
 * Modules are loaded when needed: the guest's, when the sandbox starts.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Broker } from '../broker/broker.js';
import type { Config, GuestKind } from '../config/schema.js';
import type { Logger } from '../util/log.js';
import { makePrivateDir } from '../util/private-dir.js';

export const SHARE_TAG = 'passfd-shared';
export const GUEST_SHARE_PATH = '/run/passfd/shared';

export interface SandboxOptions {
  config: Config;
  /** The file `config` came from (a QEMU guest's vmm reads its access keys from it). */
  configPath?: string;
  /** The sandbox's bundle (its share directory lives there). */
  bundle: string;
  log: Logger;
  /** Log level of the guest's processes. */
  logLevel: string;
}

interface Guest {
  hvsockPath: string;
  /** The process that is the VM (Kata reports the hypervisor's pid as the task's). */
  hypervisorPid: number;
  /** Host processes of the guest other than the shim itself. */
  processes: { name: string; pid: number }[];
  dirs: string[];
  died: Promise<string>;
  stop(): Promise<void>;
}

function exitOf(
  child: { once(e: 'exit', cb: (code: number | null, sig: string | null) => void): unknown },
  name: string,
) {
  return new Promise<string>((resolve) => {
    child.once('exit', (code, sig) => resolve(`${name} exited (${sig ?? `exit ${code}`})`));
  });
}

async function startLoopback(o: SandboxOptions): Promise<Guest> {
  const dir = makePrivateDir('passfd-sandbox-');
  const guestDir = path.join(dir, 'guest');
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const cid = o.config.hypervisor.guest_cid;
  const rt = o.config.runtime;
  let device: { stop(): Promise<void> } | null = null;
  let agentStarted: { stop(): Promise<void> } | null = null;
  try {
    const [hybrid, loopback, access, policy, agentModule, standin] = await Promise.all([
      import('../device/hybrid-device.js'),
      import('../device/transport/loopback/loopback-transport.js'),
      import('../access/context.js'),
      import('../access/policy.js'),
      import('../agent/agent.js'),
      import('../guest-vsock/standin.js'),
    ]);
    const log = o.log.child('vmm');
    access.installAccess(policy.AccessPolicy.fromConfig(o.config.hypervisor), log.child('access'));
    const maxWaitingClients = o.config.hypervisor.max_waiting_clients;
    const d = new hybrid.HybridVsockDevice({ hvsockPath, guestCid: cid, log, maxWaitingClients });
    d.start(new loopback.LoopbackTransport(cid, guestDir, log, maxWaitingClients));
    device = d;
    const agent = new agentModule.Agent({
      vsock: new standin.StandinVsock(guestDir),
      passfdPort: rt.passfd_listener_port,
      agentPort: rt.agent_port,
      streamWaitMs: rt.agent_stream_wait_ms,
      // The containers' /dev template lives beside the stand-in, in the sandbox's private directory.
      runtimeDir: guestDir,
      log: o.log.child('agent'),
    });
    agentStarted = agent;
    await agent.start();
    return {
      hvsockPath,
      hypervisorPid: process.pid,
      // The container processes are the shim's own children; its guardian ends them if the shim dies.
      processes: [],
      dirs: [dir],
      // A guest kernel and agent inside this process do not go away by themselves.
      died: new Promise<string>(() => {}),
      stop: async () => {
        await agent.stop();
        await d.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    // A half-started agent may already have its guardian and a listener.
    await agentStarted?.stop().catch(() => {});
    await device?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startQemuGuest(o: SandboxOptions, shareDir: string): Promise<Guest> {
  const h = o.config.hypervisor;
  const { startVmStack } = await import('../vm/vm-stack.js');
  const s = await startVmStack({
    config: o.config,
    ...(o.configPath ? { configPath: o.configPath } : {}),
    logLevel: o.logLevel,
    accel: h.accel,
    cpus: h.default_vcpus,
    memoryMiB: h.default_memory,
    qemuBinary: h.qemu_path,
    shares: [{ tag: SHARE_TAG, path: shareDir, guestPath: GUEST_SHARE_PATH }],
    onVmmLog: (chunk) => o.log.info(`vmm: ${chunk.trimEnd()}`),
    onConsole: (chunk) => o.log.debug(`guest console: ${chunk.trimEnd()}`),
    log: o.log,
  });
  const qemuPid = s.qemu.process.pid!;
  return {
    hvsockPath: s.hvsockPath,
    hypervisorPid: qemuPid,
    processes: [
      { name: 'vmm', pid: s.vmm.pid! },
      { name: 'qemu', pid: qemuPid },
    ],
    dirs: [s.dir],
    died: Promise.race([s.qemu.exited.then((v) => `QEMU exited (${v})`), exitOf(s.vmm, 'vmm')]),
    stop: () => s.stop(),
  };
}

export class Sandbox {
  private stopped = false;

  private constructor(
    readonly kind: GuestKind,
    private readonly guest: Guest,
    private readonly shareDir: string | null,
    readonly broker: Broker,
    private readonly mounts: typeof import('./rootfs.js'),
  ) {}

  /** Boots the configured guest; resolves once its agent answers. */
  static async start(o: SandboxOptions): Promise<Sandbox> {
    const kind = o.config.hypervisor.guest;
    const shareDir = kind === 'qemu' ? path.join(o.bundle, 'shared') : null;
    if (shareDir) fs.mkdirSync(shareDir, { recursive: true, mode: 0o700 });
    const guestP = kind === 'loopback' ? startLoopback(o) : startQemuGuest(o, shareDir!);
    guestP.catch(() => {});
    const [{ Broker }, mounts] = await Promise.all([import('../broker/broker.js'), import('./rootfs.js')]);
    let guest: Guest;
    try {
      guest = await guestP;
    } catch (err) {
      if (shareDir) fs.rmSync(shareDir, { recursive: true, force: true });
      throw err;
    }
    const broker = new Broker({ hvsockPath: guest.hvsockPath, config: o.config, log: o.log.child('broker') });
    return new Sandbox(kind, guest, shareDir, broker, mounts);
  }

  get hypervisorPid(): number {
    return this.guest.hypervisorPid;
  }

  /** The guest's host processes (for the state file). */
  get processes(): { name: string; pid: number }[] {
    return this.guest.processes;
  }

  get dirs(): string[] {
    return this.shareDir ? [...this.guest.dirs, this.shareDir] : this.guest.dirs;
  }

  /** Settles with a reason when the guest goes away by itself. */
  get died(): Promise<string> {
    return this.guest.died;
  }

  /** Makes a container's root filesystem (a host directory) reachable in the guest; returns the guest's path for it. */
  addRootfs(containerId: string, hostPath: string): string {
    if (!this.shareDir) return hostPath;
    const target = path.join(this.shareDir, containerId);
    fs.mkdirSync(target, { recursive: true });
    try {
      this.mounts.mountRootfs(
        [{ type: 'bind', source: hostPath, target: '', options: ['rbind'] } as never],
        target,
      );
    } catch (err) {
      fs.rmSync(target, { recursive: true, force: true });
      throw err;
    }
    return path.posix.join(GUEST_SHARE_PATH, containerId);
  }

  /**
   * Makes the source of a container's bind mount (a host file or directory)
   * reachable in the guest, as `<share>/<id>.mounts/<n>`; returns the
   * guest's path for it (the host path itself in the loopback guest).
   */
  addMountSource(containerId: string, n: number, hostPath: string): string {
    if (!this.shareDir) return hostPath;
    const dir = path.join(this.shareDir, `${containerId}.mounts`);
    const target = path.join(dir, String(n));
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (fs.statSync(hostPath).isDirectory()) fs.mkdirSync(target, { recursive: true });
    else fs.closeSync(fs.openSync(target, 'a', 0o600));
    this.mounts.bindMount(hostPath, target);
    return path.posix.join(GUEST_SHARE_PATH, `${containerId}.mounts`, String(n));
  }

  /** Undoes addRootfs and addMountSource (idempotent). */
  removeRootfs(containerId: string): void {
    if (!this.shareDir) return;
    for (const name of [`${containerId}.mounts`, containerId]) {
      const target = path.join(this.shareDir, name);
      this.mounts.unmountAll(target);
      fs.rmSync(target, { recursive: true, force: true });
    }
  }

  /** Stops the guest (its processes are killed with it) and removes the share. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.broker.close();
    await this.guest.stop();
    if (this.shareDir) {
      this.mounts.unmountAll(this.shareDir);
      fs.rmSync(this.shareDir, { recursive: true, force: true });
    }
  }
}
