/**
 * The typed configuration of passfd-broker: what `config.toml` may say, each
 * key's default, and the rule a value must satisfy.
 *
 * Layout follows Kata Containers' `configuration.toml`: `[runtime]` for the
 * host-side runtime (here: the broker), `[hypervisor]` for the VMM (here: the
 * hybrid-vsock device), `[agent]` for the guest agent and how the runtime
 * reaches it. Field names are the TOML keys themselves (snake_case, as in
 * Kata's runtime-rs), so `config.runtime.passfd_listener_port`, the TOML key
 * and every error message spell the same name.
 *
 * This file is pure data: defaults and per-key rules. Parsing, unknown-key
 * detection and the error messages live in `load.ts`. `config.toml.example`
 * at the repository root documents every key for users; a test keeps it equal
 * to the defaults below.
 *
 * Every value here comes from TOML, so integers arrive as `bigint` (smol-toml
 * is asked for that) and floats as `number`: a port written `1027.0` is
 * rejected instead of being silently truncated.
 */

/** Largest usable vsock port: 2^32-1 is VMADDR_PORT_ANY. */
export const MAX_VSOCK_PORT = 0xffff_fffe;
/** Smallest guest CID: 0 = hypervisor, 1 = local loopback, 2 = host. */
export const MIN_GUEST_CID = 3;
/** Largest guest CID: 2^32-1 is VMADDR_CID_ANY. */
export const MAX_GUEST_CID = 0xffff_fffe;
/** `sockaddr_un.sun_path` is 108 bytes on Linux; a path needs one for its NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;
/**
 * ttrpc (containerd/ttrpc) refuses messages over 4 MiB; a WriteStdin /
 * ReadStdout chunk is carried inside a protobuf request inside a ttrpc frame,
 * so 64 KiB are kept for that envelope.
 */
export const MAX_RPC_CHUNK_SIZE = 4 * 1024 * 1024 - 64 * 1024;
/** Upper bound for millisecond timeouts: ten minutes. */
export const MAX_TIMEOUT_MS = 600_000;

/** `[runtime]`: the host-side runtime (the broker). */
export interface RuntimeConfig {
  /**
   * Pass the container's stdio FIFOs to the VMM as fds (true) instead of
   * copying every chunk of IO through `WriteStdin`/`ReadStdout` ttrpc calls
   * (false, the "RPC-copy" path). Needs a hybrid-vsock device with passfd
   * support (Dragonball, or this project's device). Default true.
   */
  use_passfd_io: boolean;
  /**
   * Guest vsock port on which the agent accepts passfd IO streams. Kata's
   * default is 1027. Must differ from `agent_port`. Default 1027.
   */
  passfd_listener_port: number;
  /** Guest vsock port of the agent's ttrpc service (Kata: 1024). Default 1024. */
  agent_port: number;
  /**
   * How long the agent waits for a passfd stream that a CreateContainer /
   * ExecProcess request names but the listener has not accepted yet (the
   * accept race). Event-driven, not polled. Default 10000 ms.
   */
  agent_stream_wait_ms: number;
  /**
   * Bytes per `WriteStdin` / `ReadStdout` / `ReadStderr` request on the
   * RPC-copy path. 32768 is what Kata's Go runtime uses. Default 32768.
   */
  rpc_chunk_size: number;
  /**
   * containerd shim: how long (seconds) a warm spare shim waits for the next
   * container's `start` before it exits; 0: no spare. A spare has Node's
   * start-up and the shim's modules behind it, which takes ~150 ms off each
   * container's start. Default 0.
   */
  shim_spare_idle_s: number;
}

/** `[hypervisor]`: the VMM and its hybrid-vsock device. */
export interface HypervisorConfig {
  /**
   * Path of the hybrid-vsock Unix socket the device listens on and the broker
   * connects to (Dragonball/Firecracker `uds_path`). Empty (the default) means
   * "not configured": the `run` command creates a private one in a temporary
   * directory. Guest-initiated connections to host port P go to the socket
   * `<path>_<P>`, which needs up to 11 more bytes than the path itself.
   */
  hvsock_path: string;
  /** The guest's vsock context id (the host is 2). Default 3. */
  guest_cid: number;
  /**
   * The guest the containerd shim gives each container (a sandbox):
   * "loopback" (the `vmm` process plays the guest kernel, the agent runs
   * on the host, as `run` does) or "qemu" (a QEMU guest, as `run --vm
   * qemu` boots it). Default "loopback".
   */
  guest: GuestKind;
  /** QEMU guests: the accelerator, "tcg" (software, works everywhere) or "kvm". Default "tcg". */
  accel: 'tcg' | 'kvm';
  /** QEMU guests: virtual CPUs (Kata's default_vcpus). Default 1. */
  default_vcpus: number;
  /** QEMU guests: memory in MiB (Kata's default_memory). Default 1024. */
  default_memory: number;
  /** QEMU guests: the QEMU binary, a path or a name looked up in PATH (Kata's `path`). Default "qemu-system-x86_64". */
  qemu_path: string;
  /**
   * QEMU guests: the kernel to boot, a vmlinuz path (Kata's `kernel`).
   * Default "": the newest `/boot/vmlinuz-<ver>` that has a
   * `/lib/modules/<ver>`. The guest's initramfs is built from this kernel's
   * modules (src/vm/guest-kernel.ts says which).
   */
  kernel: string;
  /**
   * QEMU guests: the module tree of `kernel` (the directory holding its
   * `modules.dep`). Default "": `/lib/modules/<ver>`, `<ver>` being what
   * follows `vmlinuz-` in the kernel's file name.
   */
  kernel_modules: string;
  /**
   * Uids allowed to connect to the device's sockets (hybrid-vsock, the
   * loopback guest's vsock.sock, vhost-user) besides the device's own uid
   * and root, which are always allowed; checked with SO_PEERCRED on every
   * connection. The same list decides whose `<hvsock_path>_<P>` listener a
   * guest may reach. Default [] (only the device's own uid and root).
   */
  allowed_uids: number[];
  /** Gids allowed the same way (the peer's effective gid or a supplementary group). Default []. */
  allowed_gids: number[];
  /**
   * Host ports a guest may connect to (bridged to `<hvsock_path>_<P>`):
   * "any" (Firecracker's convention: a port is open when an allowed user
   * listens on its socket) or a list of ports; [] refuses every
   * guest-initiated connection. Default "any".
   */
  guest_connect_ports: number[] | 'any';
  /**
   * Clients of the hybrid-vsock socket (and of the loopback guest's
   * stand-in) that have connected but not yet sent their request, held at
   * once; more wait in the socket's backlog. Bounds the fds a crowd of idle
   * clients can take from the device. Default 256.
   */
  max_waiting_clients: number;
  /**
   * vhost-user: accept guest memory that cannot be sealed against
   * shrinking (e.g. QEMU's memory-backend-file). A front-end that then
   * truncates it crashes the vmm (SIGBUS); only for front-ends you trust.
   * Default false (`vmm --allow-unsealed-memory` turns it on too).
   */
  allow_unsealed_memory: boolean;
}

export const GUEST_KINDS = ['loopback', 'qemu'] as const;
export type GuestKind = (typeof GUEST_KINDS)[number];

/** `[agent]`: how the runtime reaches the guest agent. */
export interface AgentConfig {
  /**
   * How long the broker keeps trying to reach the agent (a `CONNECT
   * <agent_port>` over the hybrid-vsock socket, retried while the guest boots)
   * before giving up. Default 5000 ms.
   */
  dial_timeout_ms: number;
}

export interface Config {
  runtime: RuntimeConfig;
  hypervisor: HypervisorConfig;
  agent: AgentConfig;
}

export type SectionName = keyof Config;

/** Outcome of checking one value: the typed value, or why it is rejected. */
export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

/** One key: its default and the rule its TOML value must satisfy. */
export interface KeyRule<T> {
  readonly default: T;
  /** Checks a parsed TOML value (integers are bigint, floats number). */
  readonly check: (value: unknown) => Checked<T>;
}

/** One rule per key of every section; the compiler keeps it in step with `Config`. */
export type Schema = {
  readonly [S in SectionName]: { readonly [K in keyof Config[S]]: KeyRule<Config[S][K]> };
};

function boolean(def: boolean): KeyRule<boolean> {
  return {
    default: def,
    check: (v) =>
      typeof v === 'boolean'
        ? { ok: true, value: v }
        : { ok: false, reason: 'must be a boolean (true or false)' },
  };
}

/** A TOML integer (not a float, not a string) in `min..max`; `what` names it in the reason. */
function integer(def: number, min: number, max: number, what: string): KeyRule<number> {
  const reason = `must be an integer ${what} in ${min}..${max}`;
  return {
    default: def,
    check: (v) =>
      typeof v === 'bigint' && v >= BigInt(min) && v <= BigInt(max)
        ? { ok: true, value: Number(v) }
        : { ok: false, reason },
  };
}

/** One of a fixed set of strings. */
function oneOf<T extends string>(def: T, values: readonly T[]): KeyRule<T> {
  const reason = `must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
  return {
    default: def,
    check: (v) =>
      typeof v === 'string' && (values as readonly string[]).includes(v)
        ? { ok: true, value: v as T }
        : { ok: false, reason },
  };
}

/** A non-empty string without NUL (a program name or path). */
function nonEmptyString(def: string, what: string): KeyRule<string> {
  return {
    default: def,
    check: (v) =>
      typeof v === 'string' && v !== '' && !v.includes('\0')
        ? { ok: true, value: v }
        : { ok: false, reason: `must be a non-empty string (${what})` },
  };
}

/** A file system path; empty is allowed and means "not set". */
function optionalPath(what: string): KeyRule<string> {
  return {
    default: '',
    check: (v) =>
      typeof v === 'string' && !v.includes('\0')
        ? { ok: true, value: v }
        : { ok: false, reason: `must be a string (${what}, or "" for the default)` },
  };
}

/** A Unix socket path; empty is allowed and means "not set". */
function socketPath(def: string): KeyRule<string> {
  return {
    default: def,
    check: (v) => {
      if (typeof v !== 'string') return { ok: false, reason: 'must be a string (a Unix socket path)' };
      if (v.includes('\0')) return { ok: false, reason: 'must not contain a NUL character' };
      const bytes = Buffer.byteLength(v, 'utf8');
      if (bytes > MAX_SOCKET_PATH_BYTES) {
        return {
          ok: false,
          reason: `must be at most ${MAX_SOCKET_PATH_BYTES} bytes (sun_path holds 108 with the NUL), is ${bytes}`,
        };
      }
      return { ok: true, value: v };
    },
  };
}

/** Largest uid/gid: (uid_t)-1 means "no change" to the kernel and is never a real id. */
export const MAX_ID = 0xffff_fffe;

/** A TOML array of integers in `min..max` (no duplicates needed, none refused); `what` names one element. */
function integerList(min: number, max: number, what: string): KeyRule<number[]> {
  const reason = `must be an array of integer ${what}s in ${min}..${max}`;
  return {
    default: [],
    check: (v) =>
      Array.isArray(v) && v.every((x) => typeof x === 'bigint' && x >= BigInt(min) && x <= BigInt(max))
        ? { ok: true, value: (v as bigint[]).map(Number) }
        : { ok: false, reason },
  };
}

/** "any", or an array of vsock ports. */
function portsOrAny(): KeyRule<number[] | 'any'> {
  const list = integerList(0, MAX_VSOCK_PORT, 'vsock port');
  return {
    default: 'any',
    check: (v) => {
      if (v === 'any') return { ok: true, value: 'any' };
      const checked = list.check(v);
      return checked.ok
        ? checked
        : { ok: false, reason: `must be "any" or an array of integer vsock ports in 0..${MAX_VSOCK_PORT}` };
    },
  };
}

export const SCHEMA: Schema = {
  runtime: {
    use_passfd_io: boolean(true),
    passfd_listener_port: integer(1027, 1, MAX_VSOCK_PORT, 'vsock port'),
    agent_port: integer(1024, 1, MAX_VSOCK_PORT, 'vsock port'),
    agent_stream_wait_ms: integer(10_000, 1, MAX_TIMEOUT_MS, 'number of milliseconds'),
    rpc_chunk_size: integer(32_768, 1, MAX_RPC_CHUNK_SIZE, 'number of bytes'),
    shim_spare_idle_s: integer(0, 0, 86_400, 'number of seconds'),
  },
  hypervisor: {
    hvsock_path: socketPath(''),
    guest_cid: integer(3, MIN_GUEST_CID, MAX_GUEST_CID, 'guest CID'),
    guest: oneOf<GuestKind>('loopback', GUEST_KINDS),
    accel: oneOf<'tcg' | 'kvm'>('tcg', ['tcg', 'kvm']),
    default_vcpus: integer(1, 1, 64, 'number of vCPUs'),
    default_memory: integer(1024, 128, 65536, 'number of MiB'),
    qemu_path: nonEmptyString('qemu-system-x86_64', 'a program name or path'),
    kernel: optionalPath('a vmlinuz path'),
    kernel_modules: optionalPath("the kernel's module directory"),
    allowed_uids: integerList(0, MAX_ID, 'uid'),
    allowed_gids: integerList(0, MAX_ID, 'gid'),
    guest_connect_ports: portsOrAny(),
    max_waiting_clients: integer(256, 1, 65_536, 'number of clients'),
    allow_unsealed_memory: boolean(false),
  },
  agent: {
    dial_timeout_ms: integer(5_000, 1, MAX_TIMEOUT_MS, 'number of milliseconds'),
  },
};

/** A rule across keys, checked after every key is valid on its own. */
export interface CrossRule {
  /** The key the error is reported against. */
  readonly section: SectionName;
  readonly key: string;
  /** Returns the reason the configuration is invalid, or undefined. */
  readonly check: (config: Config) => string | undefined;
}

export const CROSS_RULES: readonly CrossRule[] = [
  {
    section: 'runtime',
    key: 'passfd_listener_port',
    check: (c) =>
      c.runtime.passfd_listener_port === c.runtime.agent_port
        ? `must differ from runtime.agent_port (${c.runtime.agent_port}), where the agent serves ttrpc`
        : undefined,
  },
];

/** Section names in the order they are documented. */
export const SECTIONS = Object.keys(SCHEMA) as SectionName[];

/** A fresh, mutable configuration holding every default. */
export function defaultConfig(): Config {
  const out: Record<string, Record<string, unknown>> = {};
  for (const section of SECTIONS) {
    const rules: Record<string, KeyRule<unknown>> = SCHEMA[section];
    // Copies: a default array must not be shared between configurations.
    out[section] = Object.fromEntries(
      Object.entries(rules).map(([key, rule]) => [key, structuredClone(rule.default)]),
    );
  }
  return out as unknown as Config;
}

/** The defaults, frozen (use `defaultConfig()` for a copy to modify). */
export const DEFAULT_CONFIG: Readonly<{ [S in SectionName]: Readonly<Config[S]> }> = (() => {
  const c = defaultConfig();
  for (const section of SECTIONS) Object.freeze(c[section]);
  return Object.freeze(c);
})();
