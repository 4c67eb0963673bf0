/**
 * Support for the VM suite: one real QEMU guest per test file (started by
 * startVmStack: `vmm --vhost-user` + the agent on AF_VSOCK in the guest),
 * shared by every test of the file, with one Broker per IO path against it.
 * The E2e objects it builds are the loopback suite's (test/e2e/support.ts),
 * so sessions, FIFOs and readers work the same way; only the stack differs.
 *
 * Logs: if the set-up or any test of the file fails, the guest console and
 * the vmm log are kept when the guest is stopped (startVmStack's keepLogs:
 * the path is printed on stderr); a failed start says where in its error.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { Broker } from '../../src/broker/broker.js';
import type { EmbeddedStack } from '../../src/broker/embedded-stack.js';
import { createLogger } from '../../src/util/log.js';
import { startVmStack, type VmStack, type VmStackOptions } from '../../src/vm/vm-stack.js';
import { type E2e, e2eConfig, IO_PATHS } from '../e2e/support.js';
import { tmpDir } from '../support/cli.js';

export type IoName = (typeof IO_PATHS)[number]['name'];

export interface SharedVm {
  /** The file's guest (set in beforeAll). */
  readonly vm: VmStack;
  /** One E2e per IO path, on the same guest. */
  readonly e: Record<IoName, E2e>;
  /** Scratch directory of the file (FIFOs, pattern files; visible in the guest over 9p). */
  readonly dir: string;
  /** True once the set-up or a test of this file failed (the logs are then kept). */
  readonly failed: boolean;
  /** Every line each path's Broker logged (also written to stderr). */
  readonly brokerLog: Record<IoName, string[]>;
}

/** Boot budget: TCG guests take ~7 s to boot and ~20 s until the agent answers; the machine is shared. */
export const VM_BOOT_TIMEOUT_MS = 240_000;

export function useSharedVm(opts: Partial<Omit<VmStackOptions, 'config'>> = {}): SharedVm {
  let vm: VmStack | undefined;
  let dir: string | undefined;
  let failed = true; // until the set-up completes
  const e = {} as Record<IoName, E2e>;
  const brokerLog: Record<IoName, string[]> = { passfd: [], rpc: [] };
  const shared: SharedVm = {
    get vm() {
      if (!vm) throw new Error('the VM is not started (beforeAll failed)');
      return vm;
    },
    e,
    get dir() {
      if (!dir) throw new Error('no scratch directory (beforeAll failed)');
      return dir;
    },
    get failed() {
      return failed;
    },
    brokerLog,
  };

  beforeAll(async () => {
    vm = await startVmStack({
      config: e2eConfig(true),
      startTimeoutMs: VM_BOOT_TIMEOUT_MS - 30_000,
      ...opts,
    });
    const d = tmpDir('passfd-vm-test-');
    dir = d;
    let n = 0;
    for (const { name, passfd } of IO_PATHS) {
      const config = e2eConfig(passfd);
      const log = createLogger(`vm-${name}`, (line) => {
        brokerLog[name].push(line);
        process.stderr.write(line);
      });
      const broker = new Broker({ hvsockPath: vm.hvsockPath, config, log });
      e[name] = {
        stack: vm as unknown as EmbeddedStack,
        broker,
        config,
        dir: d,
        nextId: (prefix = 'c') => `${prefix}${process.pid}-${n++}`,
        stop: () => broker.close(),
      };
    }
    failed = false;
  }, VM_BOOT_TIMEOUT_MS);

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      failed = true;
    });
  });

  afterAll(async () => {
    for (const x of Object.values(e)) await x.stop();
    await vm?.stop({ keepLogs: failed });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  return shared;
}

/** Lines of /proc/<pid>/maps that map a memfd (the vhost-user backend's view of guest memory). */
export function memfdMappings(pid: number): number {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;
}

/** fd number → link target for every open fd of `pid`. */
export function fdLinks(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(fd), fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Waits (bounded) until `pid`'s fd count has been the same for `stableMs`
 * and satisfies `ok`; resolves with it (the last count seen on timeout, for
 * the caller's assertion to show).
 */
export async function settledFdCount(
  pid: number,
  ok: (n: number) => boolean,
  timeoutMs = 15_000,
  stableMs = 500,
): Promise<number> {
  const end = Date.now() + timeoutMs;
  let n = fs.readdirSync(`/proc/${pid}/fd`).length;
  let since = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const m = fs.readdirSync(`/proc/${pid}/fd`).length;
    if (m !== n) {
      n = m;
      since = Date.now();
    } else if (ok(n) && Date.now() - since >= stableMs) return n;
    if (Date.now() > end) return n;
  }
}
