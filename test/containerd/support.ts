/**
 * The containerd suite's harness: a private containerd per test file (real
 * `containerd` and `ctr`, CRI off, everything under one temporary
 * directory; src/containerd/private-daemon.ts), the offline busybox image
 * imported into it, this checkout's shim linked into its `<opt>/bin` (the
 * wrapper, by symlink: it must resolve itself), and one configuration file
 * per guest/IO path, chosen per `ctr run` with `--runtime-config-path` (so
 * the ConfigPath plumbing is exercised by every run).
 *
 * `leaks()` looks only at what this file's containerd started: processes
 * whose environment names this containerd's ttrpc socket (shims and
 * everything they start: agent, vmm, QEMU), whose command line names this
 * directory (a container's namespace helpers) or whose root is under it (a
 * container's processes); mounts under the directory; tasks, containers
 * and bundles in containerd; shim sockets of the ids used; files left in
 * the shims' TMPDIR. It waits (bounded) for cleanup that containerd runs
 * after `ctr` returns, then reports what is still there.
 *
 * The suite fails, never skips, when containerd or ctr is missing.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { buildBusyboxImage } from '../../src/containerd/busybox-image.js';
import { type CtrOptions, type CtrResult, PrivateContainerd } from '../../src/containerd/private-daemon.js';
import { socketPathFor } from '../../src/shim/address.js';
import { mountsUnder } from '../../src/util/mountinfo.js';

export const IMAGE = 'localhost/passfd-busybox:1';
export const RUNTIME = 'io.containerd.passfd.v2';
export const SHIM_WRAPPER = path.resolve(import.meta.dirname, '../../bin/containerd-shim-passfd-v2');
/** The bundled shim the wrapper runs with node. */
export const SHIM_BUNDLE = path.resolve(import.meta.dirname, '../../dist/cli/containerd-shim-passfd-v2.js');
export const MiB = 1024 * 1024;

/** Configuration files by name: their TOML text. */
export const CONFIGS = {
  passfd: '[runtime]\nuse_passfd_io = true\n',
  rpc: '[runtime]\nuse_passfd_io = false\n',
  /** Warm spare shims (src/shim/spare.ts), which every other configuration here leaves off. */
  spare: '[runtime]\nuse_passfd_io = true\nshim_spare_idle_s = 60\n',
  /** A QEMU guest whose QEMU does not exist: the guest fails to boot. */
  noqemu: '[hypervisor]\nguest = "qemu"\nqemu_path = "/nonexistent/qemu-system-x86_64"\n',
} as const;

export type IoPath = 'passfd' | 'rpc';
export const IO_PATHS: IoPath[] = ['passfd', 'rpc'];

/** Throws (the suite fails) when a tool it needs is missing. */
export function requireContainerd(): void {
  for (const tool of ['containerd', 'ctr', 'runc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`the containerd suite needs ${tool} on PATH (apt-get install containerd)`);
    }
  }
  if (!fs.existsSync(SHIM_BUNDLE)) {
    throw new Error('dist/cli/containerd-shim-passfd-v2.js missing: run `npm run build` first');
  }
}

export class CtrSuite {
  private n = 0;
  private readonly ids = new Set<string>();
  readonly configs: Record<string, string> = {};

  private constructor(readonly d: PrivateContainerd) {}

  static async start(configs: Record<string, string> = CONFIGS): Promise<CtrSuite> {
    requireContainerd();
    const d = await PrivateContainerd.start();
    try {
      const s = new CtrSuite(d);
      d.installShim(SHIM_WRAPPER, 'containerd-shim-passfd-v2');
      for (const [name, text] of Object.entries(configs)) {
        const file = path.join(d.dir, `${name}.toml`);
        fs.writeFileSync(file, text);
        s.configs[name] = file;
      }
      const archive = path.join(d.dir, 'busybox.tar');
      buildBusyboxImage({ output: archive, name: IMAGE });
      await d.importImage(archive);
      fs.rmSync(archive);
      return s;
    } catch (err) {
      await d.stop();
      throw err;
    }
  }

  /** A container id unique on this machine (runc's state directory is shared). */
  id(prefix: string): string {
    const id = `${prefix}-${process.pid}-${this.n++}-${randomBytes(2).toString('hex')}`;
    this.ids.add(id);
    return id;
  }

  /** `ctr run` arguments for this shim with config `cfg`: [...flags, IMAGE, id, ...cmd]. */
  runArgs(cfg: string, id: string, cmd: string[], flags: string[] = []): string[] {
    return [
      'run',
      '--runtime',
      RUNTIME,
      '--runtime-config-path',
      this.configs[cfg]!,
      '--fifo-dir',
      this.d.fifoDir,
      ...flags,
      IMAGE,
      id,
      ...cmd,
    ];
  }

  /** `ctr run --rm` of `cmd` in a new container; resolves with ctr's result. */
  run(
    cfg: string,
    id: string,
    cmd: string[],
    opts: CtrOptions & { flags?: string[] } = {},
  ): Promise<CtrResult> {
    return this.d.ctr(this.runArgs(cfg, id, cmd, ['--rm', ...(opts.flags ?? [])]), {
      timeoutMs: 60_000,
      ...opts,
    });
  }

  /**
   * `ctr run --rm` of a command that prints `ready` on stderr before it reads
   * stdin; `input` is written to ctr's stdin only then (ctr never sends
   * CloseIO for input that ended before the task ran), and stdin is closed.
   * stdout is kept as bytes.
   */
  runPiped(
    cfg: string,
    id: string,
    cmd: string[],
    input: Buffer,
    timeoutMs = 120_000,
  ): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
    const child = this.d.spawnCtr(this.runArgs(cfg, id, cmd, ['--rm']));
    const out: Buffer[] = [];
    let err = '';
    let fed = false;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stdin!.on('error', () => {});
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      if (!fed && err.includes('ready')) {
        fed = true;
        child.stdin!.end(input);
      }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`ctr run ${id} did not finish within ${timeoutMs} ms; stderr: ${err}`));
      }, timeoutMs);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout: Buffer.concat(out), stderr: err });
      });
    });
  }

  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    return this.d.ctr(args, { timeoutMs: 30_000, ...opts });
  }

  /** Waits until `ctr task ls` shows `id` with `status`; throws after `timeoutMs`. */
  async waitTask(id: string, status: string, timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < until) {
      last = (await this.ctr(['task', 'ls'])).stdout;
      if (new RegExp(`^${id}\\s+\\d+\\s+${status}\\b`, 'm').test(last)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`task ${id} not ${status} within ${timeoutMs} ms; ctr task ls:\n${last}`);
  }

  /** What is left of this containerd's tasks (see the module comment); [] when nothing. */
  async leaks(timeoutMs = 15_000): Promise<string[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = await this.findLeaks();
      if (found.length === 0 || Date.now() > until) return found;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private async findLeaks(): Promise<string[]> {
    const d = this.d;
    const out: string[] = [];
    for (const p of ownProcesses(d)) out.push(`process ${p}`);
    for (const m of mountsUnder(d.dir)) out.push(`mount ${m}`);
    const tasks = (await this.ctr(['task', 'ls', '-q'])).stdout.trim();
    if (tasks) out.push(`tasks: ${tasks.replace(/\n/g, ' ')}`);
    const containers = (await this.ctr(['container', 'ls', '-q'])).stdout.trim();
    if (containers) out.push(`containers: ${containers.replace(/\n/g, ' ')}`);
    const bundles = path.join(d.state, 'io.containerd.runtime.v2.task', d.namespace);
    for (const b of fs.existsSync(bundles) ? fs.readdirSync(bundles) : []) out.push(`bundle ${b}`);
    for (const id of this.ids) {
      const sock = socketPathFor(d.address, d.namespace, id);
      if (fs.existsSync(sock)) out.push(`socket ${sock} (${id})`);
    }
    for (const f of fs.readdirSync(d.tmpDir)) out.push(`tmp ${f}`);
    return out;
  }

  async stop(): Promise<void> {
    await this.d.stop();
    for (const id of this.ids)
      fs.rmSync(socketPathFor(this.d.address, this.d.namespace, id), { force: true });
  }
}

/** "pid: cmdline" of every process started on behalf of this containerd (PrivateContainerd.ownProcesses). */
export function ownProcesses(d: PrivateContainerd): string[] {
  return d.ownProcesses().map((p) => `${p.process.pid}: ${p.cmdline.slice(0, 200)}`);
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * A suite for the calling test file: started before its tests, stopped
 * after them, and a leak check after every test. Returns the suite (a
 * stand-in that reaches the started one; using it outside a test throws).
 */
export function useCtrSuite(configs: Record<string, string> = CONFIGS, leakWaitMs?: number): CtrSuite {
  let suite: CtrSuite | undefined;
  beforeAll(async () => {
    suite = await CtrSuite.start(configs);
  }, 120_000);
  afterAll(async () => {
    await suite?.stop();
  });
  afterEach(async () => {
    expect(await suite!.leaks(leakWaitMs)).toEqual([]);
  });
  return new Proxy({} as CtrSuite, {
    get: (_, key) => {
      if (!suite) throw new Error('the containerd suite did not start (see beforeAll)');
      const v = Reflect.get(suite, key);
      return typeof v === 'function' ? v.bind(suite) : v;
    },
  });
}
