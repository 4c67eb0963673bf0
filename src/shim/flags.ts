/**
 * The shim's command line, as containerd writes it and Go's `flag` package
 * (which every containerd shim uses) reads it:
 *
 *   <shim> -namespace N -address <grpc sock> -publish-binary <containerd>
 *          -id ID [-bundle B] [-debug] [-socket S] start|delete
 *
 * Flags take one or two dashes and `-name value` or `-name=value`; boolean
 * flags (`-debug`, `-v`) take no value (`-debug=false` is allowed). Parsing
 * stops at the first argument that is not a flag (the action) or at `--`.
 * An unknown flag is an error, as in Go. Pure.
 */

export type ShimAction = 'start' | 'delete' | 'serve' | 'spare';

/**
 * Not a flag: set (to `1`) by the launcher of `start` (the shell wrapper, or
 * start.ts) for the long-lived shim it starts with `start`'s own arguments,
 * which then does `start`'s work itself (serve.ts).
 */
export const LAUNCH_ENV = 'PASSFD_SHIM_LAUNCH';

export interface ShimFlags {
  namespace: string;
  id: string;
  /** containerd's gRPC socket (`-address`). */
  address: string;
  /** containerd's binary (`-publish-binary`), for publishing events the way Go shims once did. */
  publishBinary: string;
  /** `-bundle`: given to `delete`; otherwise the bundle is the working directory. */
  bundle: string;
  /** `-socket`: the address to serve, for a long-lived shim started by hand (a launched one computes it). */
  socket: string;
  debug: boolean;
  version: boolean;
  /** `start`, `delete`, or none: the long-lived shim process. */
  action: ShimAction;
}

const STRING_FLAGS = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
} as const;
const BOOL_FLAGS = { debug: 'debug', v: 'version' } as const;

export class FlagError extends Error {
  override readonly name = 'FlagError';
}

/** Parses argv (without node and the script). Throws FlagError like Go's flag package would exit 2. */
export function parseShimFlags(argv: readonly string[]): ShimFlags {
  const flags: ShimFlags = {
    namespace: '',
    id: '',
    address: '',
    publishBinary: 'containerd',
    bundle: '',
    socket: '',
    debug: false,
    version: false,
    action: 'serve',
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    if (Object.hasOwn(BOOL_FLAGS, name)) {
      const key = BOOL_FLAGS[name as keyof typeof BOOL_FLAGS];
      if (inline === undefined || inline === 'true' || inline === '1') flags[key] = true;
      else if (inline === 'false' || inline === '0') flags[key] = false;
      else throw new FlagError(`invalid boolean value "${inline}" for -${name}`);
    } else if (Object.hasOwn(STRING_FLAGS, name)) {
      const key = STRING_FLAGS[name as keyof typeof STRING_FLAGS];
      let value = inline;
      if (value === undefined) {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
        value = argv[++i]!;
      }
      flags[key] = value;
    } else {
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
  }
  const action = argv[i];
  if (action === 'start' || action === 'delete' || action === 'spare') flags.action = action;
  else if (action !== undefined) throw new FlagError(`unknown action "${action}" (want start or delete)`);
  return flags;
}
