/** Option parsers shared by subcommands: commander calls them and shows their errors. */
import fs from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { parseBytes } from '../bench/options.js';
import { MAX_VSOCK_PORT } from '../config/schema.js';
import { isOrphaned } from '../util/lifeline.js';
import { LOG_LEVELS, type LogLevel, parseLevel } from '../util/log.js';

/** A canonical decimal u32, or null. */
function u32(value: string): number | null {
  return /^(0|[1-9][0-9]{0,9})$/.test(value) && Number(value) <= 0xffff_ffff ? Number(value) : null;
}

/** A vsock port: 1..4294967294 (4294967295 is VMADDR_PORT_ANY), as in the configuration. */
export function parsePort(value: string): number {
  const n = u32(value);
  if (n === null || n < 1 || n > MAX_VSOCK_PORT) {
    throw new InvalidArgumentError(
      `must be a vsock port (1..${MAX_VSOCK_PORT}; ${MAX_VSOCK_PORT + 1} is VMADDR_PORT_ANY)`,
    );
  }
  return n;
}

export function parseCid(value: string): number {
  const n = u32(value);
  if (n === null || n < 3 || n >= 0xffff_ffff)
    throw new InvalidArgumentError('must be a guest CID (3..4294967294)');
  return n;
}

/** A log level given as text (`PASSFD_LOG`; `--log-level` is a commander choice of the same list). */
export function parseLogLevel(value: string): LogLevel {
  const level = parseLevel(value);
  if (!level) throw new InvalidArgumentError(`must be one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

/**
 * A value from the environment, parsed by one of the parsers above; an
 * invalid one is an error that names the variable:
 * "AGENT_PASSFD_LISTENER_PORT=abc: must be a vsock port (...)".
 */
export function fromEnv<T>(name: string, parse: (value: string) => T): T | undefined {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  try {
    return parse(value);
  } catch (err) {
    throw new Error(`${name}=${value}: ${(err as Error).message}`);
  }
}

/** The signals a terminal or a supervisor sends to end a foreground job: `run` and `bench` handle them. */
export const TERMINAL_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs `stop` once on SIGINT/SIGTERM, then exits 0. A process whose parent
 * is gone (the SIGTERM was its parent-death signal, util/lifeline.ts) is the
 * last one out: it also removes the private directories its dead parent
 * left behind (util/private-dir.ts).
 */
export function onTermination(stop: () => Promise<void> | void): void {
  let stopping = false;
  const handler = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    Promise.resolve(stop()).then(
      async () => {
        if (isOrphaned()) (await import('../util/private-dir.js')).sweepStalePrivateDirs();
        process.exit(0);
      },
      (err: Error) => {
        process.stderr.write(`passfd-broker: while stopping on ${sig}: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/** A byte size ("256KiB", "1MiB", "65536"), 1 B to 4 GiB - 1. */
export function parseSize(value: string): number {
  let n: number;
  try {
    n = parseBytes(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (n > 0xffff_ffff) throw new InvalidArgumentError('must be under 4 GiB');
  return n;
}

export function parseMs(value: string): number {
  if (!/^[0-9]{1,9}$/.test(value)) throw new InvalidArgumentError('must be a whole number of milliseconds');
  return Number(value);
}

/**
 * The real-guest flags `run` and `bench` share: `--vm qemu` and the QEMU
 * guest's `--accel`, `--cpus`, `--memory`. `--vm` and `--accel` are
 * commander choices, the numbers commander argument parsers (a bad value
 * exits non-zero with commander's message); `vmSpecFrom` checks the
 * combination before anything starts.
 */
export const ACCELS = ['tcg', 'kvm'] as const;
export type Accel = (typeof ACCELS)[number];

export interface VmFlags {
  vm?: 'qemu';
  accel?: Accel;
  cpus?: number;
  memory?: number;
}

/** A QEMU guest with every setting resolved. */
export interface VmSpec {
  accel: Accel;
  cpus: number;
  memoryMiB: number;
}

/** QEMU's defaults in this project (src/vm/qemu.ts): one vCPU, 1 GiB. */
export const VM_DEFAULTS: VmSpec = { accel: 'tcg', cpus: 1, memoryMiB: 1024 };
/** The `pc` machine's vCPU limit. */
export const MAX_VM_CPUS = 255;
/** The smallest guest accepted: 128 MiB boots the kernel, the initramfs and the Node agent (checked; less is not supported). */
export const MIN_VM_MEMORY_MIB = 128;

function positiveInt(value: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(value)) throw new InvalidArgumentError('must be a positive integer');
  return Number(value);
}

export function parseCpus(value: string): number {
  const n = positiveInt(value);
  if (n > MAX_VM_CPUS) throw new InvalidArgumentError(`must be at most ${MAX_VM_CPUS} (QEMU pc machine)`);
  return n;
}

export function parseMemoryMiB(value: string): number {
  const n = positiveInt(value);
  if (n < MIN_VM_MEMORY_MIB)
    throw new InvalidArgumentError(
      `must be at least ${MIN_VM_MEMORY_MIB} (MiB, for the guest kernel, initramfs and Node agent)`,
    );
  return n;
}

/** Help text of the VM flags, shared by `run` and `bench`. */
export const VM_FLAG_HELP = {
  vm: 'run the agent and the command(s) inside a real VM: qemu (QEMU guest, vhost-user-vsock; see --accel)',
  accel:
    'with --vm qemu: tcg (default; software emulation, works everywhere) or kvm (hardware; needs /dev/kvm, and fails or hangs at guest boot on some machines, e.g. under nested virtualisation)',
  cpus: `with --vm qemu: guest vCPUs (default ${VM_DEFAULTS.cpus})`,
  memory: `with --vm qemu: guest memory in MiB (default ${VM_DEFAULTS.memoryMiB}, at least ${MIN_VM_MEMORY_MIB})`,
} as const;

/** Adds `--vm`, `--accel`, `--cpus` and `--memory` (the same on `run` and `bench`). */
export function withVmFlags(command: Command): Command {
  return command
    .addOption(new Option('--vm <kind>', VM_FLAG_HELP.vm).choices(['qemu']))
    .addOption(new Option('--accel <kind>', VM_FLAG_HELP.accel).choices(ACCELS))
    .option('--cpus <n>', VM_FLAG_HELP.cpus, parseCpus)
    .option('--memory <MiB>', VM_FLAG_HELP.memory, parseMemoryMiB);
}

/**
 * The QEMU guest the flags ask for, or null without `--vm`. Throws a clear
 * error for `--accel`/`--cpus`/`--memory` without `--vm qemu`, and for
 * `--accel kvm` without a usable /dev/kvm.
 */
export function vmSpecFrom(flags: VmFlags, kvmDevice = '/dev/kvm'): VmSpec | null {
  if (flags.vm === undefined) {
    const given = (['accel', 'cpus', 'memory'] as const).filter((k) => flags[k] !== undefined);
    if (given.length > 0)
      throw new Error(
        `${given.map((k) => `--${k}`).join(', ')} ${given.length > 1 ? 'require' : 'requires'} --vm qemu`,
      );
    return null;
  }
  const spec: VmSpec = {
    accel: flags.accel ?? VM_DEFAULTS.accel,
    cpus: flags.cpus ?? VM_DEFAULTS.cpus,
    memoryMiB: flags.memory ?? VM_DEFAULTS.memoryMiB,
  };
  if (spec.accel === 'kvm') {
    try {
      fs.accessSync(kvmDevice, fs.constants.R_OK | fs.constants.W_OK);
    } catch (err) {
      throw new Error(
        `--accel kvm needs ${kvmDevice} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); use --accel tcg`,
      );
    }
  }
  return spec;
}

/** With `--accel kvm`, a guest that did not start gets the likely reason appended. */
export function withKvmHint(err: Error, vm: VmSpec): Error {
  if (vm.accel !== 'kvm') return err;
  return new Error(
    `${err.message}\n--accel kvm: KVM fails or hangs at guest boot on some machines (e.g. nested virtualisation); --accel tcg works everywhere`,
  );
}
