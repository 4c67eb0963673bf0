/**
 * The shim's one sandbox, booted early and handed to Create.
 *
 * The long-lived shim starts booting its guest as soon as it runs, with the
 * configuration `start` found (the runtime options containerd wrote on its
 * stdin, else the environment or the system file), so the guest comes up
 * while containerd is still sending Create. Create asks for the sandbox with
 * its own runtime options: the same configuration file gets the early boot;
 * a different one stops it and boots again with the new file, unless other
 * tasks (a pod's) already run in it. A boot that failed is tried again by
 * the next Create.
 */
import type { Logger } from '../util/log.js';
import { loadShimConfig, type ShimConfig } from './config.js';
import type { Sandbox } from './sandbox.js';

export class SandboxSlot {
  private current: { path: string | undefined; sandbox: Promise<Sandbox>; failed: boolean } | null = null;

  constructor(
    private readonly boot: (cfg: ShimConfig) => Promise<Sandbox>,
    private readonly log: Logger,
  ) {}

  /** Starts booting with `cfg` now (errors surface in `get`). */
  prestart(cfg: ShimConfig): void {
    this.current = this.launch(cfg);
  }

  private launch(cfg: ShimConfig) {
    this.log.info(
      `booting a ${cfg.config.hypervisor.guest} guest (config: ${cfg.path ?? 'defaults'}, from ${cfg.source})`,
    );
    const slot = { path: cfg.path, sandbox: this.boot(cfg), failed: false };
    slot.sandbox.catch(() => {
      slot.failed = true;
    });
    return slot;
  }

  /**
   * The sandbox for a task whose runtime options name `optionsPath` (see the
   * module comment). `inUse`: other tasks run in the current guest (a pod's),
   * which a different configuration must not stop: that task is refused.
   */
  async get(optionsPath: string | undefined, inUse = false): Promise<Sandbox> {
    const cfg = loadShimConfig(optionsPath);
    const cur = this.current;
    if (cur && cur.path === cfg.path && !cur.failed) return cur.sandbox;
    if (cur && !cur.failed && inUse) {
      throw new Error(
        `this pod's guest runs with configuration ${cur.path ?? 'defaults'}; a task of the same pod cannot use ${cfg.path ?? 'defaults'}`,
      );
    }
    if (cur && !cur.failed) {
      this.log.info(`configuration changed to ${cfg.path ?? 'defaults'}: restarting the guest`);
      await cur.sandbox.then((s) => s.stop()).catch(() => {});
    }
    this.current = this.launch(cfg);
    return this.current.sandbox;
  }

  /** The sandbox if it is up (no waiting). */
  async ready(): Promise<Sandbox | null> {
    const cur = this.current;
    if (!cur || cur.failed) return null;
    return cur.sandbox.catch(() => null);
  }

  /** Stops the sandbox (waiting for a boot in progress first). */
  async stop(): Promise<void> {
    const cur = this.current;
    this.current = null;
    if (cur) await cur.sandbox.then((s) => s.stop()).catch(() => {});
  }
}
