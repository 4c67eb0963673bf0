/**
 * Running a process inside a container's root filesystem, with its own
 * mount, UTS, IPC and PID namespaces, its user and its hostname: what runc
 * (or Kata's rustjail) does between fork and exec, done here with a short
 * chain of util-linux tools, because the agent runs on Node, which can
 * neither fork nor unshare a mount namespace in its multi-threaded process.
 *
 * The init process of a container (CreateContainer/StartContainer):
 *
 *   [nsenter --net=<file>]                   a pod sandbox in the loopback guest: the pod's network (CNI's)
 *   [nsenter -t <sandbox P1> -i -u [-p] [-n]]  a pod's container: the namespaces it shares with its sandbox
 *   unshare -m [-u -i -p -n]                 new namespaces (the PID one for its children)
 *    └ P0: sh -c WAIT_SCRIPT                  starts P1 and waits for it
 *       └ P1: sh -c INIT_SCRIPT               PID 1 of the new PID namespace; in the new mount namespace:
 *          proc on <root>/proc, a tmpfs /dev with null zero full random urandom tty ptmx and the
 *          fd/stdin/stdout/stderr links, the agent's devpts bound on /dev/pts, a tmpfs /dev/shm;
 *          the spec's extra mounts (container-mounts.ts; a mount point missing from the fresh
 *          /dev, such as a pod's /dev/termination-log, is made there); the hostname; reports its host pid on
 *          fd 3; then exec:
 *      setpriv --regid G --groups …          gid and supplementary groups (still uid 0, so…)
 *      [setsid -c]                            terminal mode: a new session with the pty as controlling tty
 *      unshare --root <root> --wd <cwd> -S U  …chroot and chdir can still happen; then setuid; then exec
 *      <args>                                 the container's process, as P1 (PID 1 inside)
 *
 * An exec process (ExecProcess) joins the init's namespaces instead:
 *
 *   nsenter -t <P1> -m -u -i -p               forks into the container's PID namespace
 *    └ sh -c EXEC_SCRIPT                      reports its host pid on fd 3, then the same setpriv … unshare --root … chain
 *
 * Why these tools: they are util-linux (present wherever the agent runs:
 * on the host for the loopback guest, and through the host root shared into
 * a QEMU guest), the whole chain is a handful of execs (a few ms), and
 * every step before the final exec runs from the agent's filesystem, so the
 * image needs nothing but the program it runs. chroot, not pivot_root: the
 * last step must both change the root and exec, which `unshare --root`
 * does; the container is isolated by the VM, not by the chroot.
 *
 * The process the agent spawns ("P0": the shell above, or nsenter, which
 * forks into the PID namespace) stays outside and waits for P1, then exits
 * with P1's status (the shell as `exit 128+signal`, nsenter by re-raising
 * the signal): the agent's exit reporting keeps working on P0. (Not
 * `unshare --fork`: it exits 1 instead of 137 when its child dies of
 * SIGKILL.) Signals must reach P1 itself, so P1 reports its host pid (from
 * its /proc/self/stat, read before it enters the container's root) on a
 * pipe the agent gives as fd 3, once the container is set up; the agent
 * then holds a pidfd for P1 (`IsolatedProcess`), and the start is complete.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { closeQuietly, makePipe, pidfdOpen, pidfdSignal } from '../../../native-bindings/index.js';
import type { PreparedMount } from './container-mounts.js';
import { isDirInRoot, resolveCommandInRoot } from './root-path.js';

/**
 * Where a container's namespaces come from: new, the agent's own ('guest'),
 * joined from the process with this host pid (a pod's sandbox;
 * pod-namespaces.ts), or, for the network, a namespace file to join.
 */
export interface ContainerNamespaces {
  ipc?: 'new' | 'guest' | number;
  uts?: 'new' | 'guest' | number;
  pid?: 'new' | 'guest' | number;
  net?: 'new' | 'guest' | number | { path: string };
}

export interface ContainerRootOptions {
  /** The container's root filesystem, as the agent sees it. */
  root: string;
  /** Init only: the hostname (empty: keep the guest's). */
  hostname?: string;
  /** The process's user (default root, no supplementary groups). */
  user?: { uid: number; gid: number; additionalGids?: readonly number[] };
  /** Exec: the host pid of the container's init (P1), whose namespaces the process joins. */
  joinPid?: number;
  /** Where the agent keeps the /dev template (links and empty dirs copied into each container's /dev). */
  runtimeDir: string;
  /** Init only: where its IPC, UTS, PID and network namespaces come from (default: new, and the guest's network). */
  namespaces?: ContainerNamespaces;
  /** Init only: the container's extra mounts, their mount points made (container-mounts.ts); mounted in order after /proc and /dev. */
  mounts?: readonly PreparedMount[];
}

const TOOLS = ['unshare', 'nsenter', 'setpriv', 'setsid', 'sh', 'mount', 'cp', 'mkdir', 'hostname'] as const;
type Tool = (typeof TOOLS)[number];
const SEARCH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

let tools: Record<Tool, string> | null = null;

/** Absolute paths of the tools the chain runs (looked up once); throws naming what is missing. */
export function isolationTools(): Record<Tool, string> {
  if (tools) return tools;
  const found: Partial<Record<Tool, string>> = {};
  const missing: string[] = [];
  for (const t of TOOLS) {
    const p = SEARCH.map((d) => path.join(d, t)).find((f) => {
      try {
        fs.accessSync(f, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (p) found[t] = p;
    else missing.push(t);
  }
  if (missing.length > 0) {
    throw new Error(
      `container root filesystems need ${missing.join(', ')} in the agent's filesystem (util-linux, coreutils, mount, hostname)`,
    );
  }
  tools = found as Record<Tool, string>;
  return tools;
}

/**
 * The setup handshake (SetupHandshake): reports the shell's host pid on fd 3 (/proc is still the
 * agent's procfs here, the container's is mounted on <root>/proc, so /proc/self is the host's view),
 * then waits on fd 4 until the agent holds a pidfd for it, so the pid cannot be gone (and reused)
 * before then. Done last, once the container is set up: StartContainer returns after it, and an
 * exec may join at once.
 */
const ANNOUNCE = 'read -r pid _ < /proc/self/stat; echo "$pid" >&3; exec 3>&-; read -r _ <&4; exec 4<&-';

/**
 * P0 of an init: $1 the shell, $2 INIT_SCRIPT, the rest its arguments. Starts P1 (fds 3 and 4 go to
 * it), waits, exits with its status. P1's stdin goes through fd 5: a background job's stdin is
 * /dev/null without job control, and dash ignores a plain `0<&0` there.
 */
const WAIT_SCRIPT = `sh=$1 init=$2
shift 2
exec 5<&0
"$sh" -c "$init" passfd-init "$@" <&5 5<&- &
exec 5<&- 4<&- 3>&-
wait $!
exit $?`;

/**
 * P1 in the new namespaces: $1 root, $2 hostname, $3 /dev template, $4-$7 mount cp mkdir hostname,
 * $8 the number of extra mounts, then 4 arguments per mount (container-mounts.ts: kind, source,
 * host path of the target, options), then the command.
 */
const INIT_SCRIPT = `set -e
r=$1 h=$2 t=$3 m=$4 c=$5 k=$6 n=$7 x=$8
shift 8
[ -d "$r/proc" ] && [ -d "$r/dev" ] || $k -p "$r/proc" "$r/dev"
$m -t proc -o nosuid,noexec,nodev proc "$r/proc"
$m -t tmpfs -o nosuid,strictatime,mode=755,size=65536k tmpfs "$r/dev"
$c -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/ptmx "$t/." "$r/dev/"
$m --bind /dev/pts "$r/dev/pts"
$m -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm "$r/dev/shm"
while [ "$x" -gt 0 ]; do
  if [ ! -e "$3" ]; then
    if [ "$1" = tmpfs ] || [ -d "$2" ]; then $k -p "$3"; else $k -p "\${3%/*}"; : >"$3"; fi
  fi
  case $1 in
  tmpfs) $m -t tmpfs -o "$4" tmpfs "$3" ;;
  *) $m "--$1" "$2" "$3"; [ -z "$4" ] || $m -o "remount,bind,$4" "$3" ;;
  esac
  shift 4
  x=$((x - 1))
done
[ -z "$h" ] || $n "$h"
${ANNOUNCE}
exec "$@"`;

/** Runs as the exec's process in the container's namespaces (before chroot): reports its host pid. */
const EXEC_SCRIPT = `set -e
${ANNOUNCE}
exec "$@"`;

/** `<runtimeDir>/container-dev`: the links and directories every container's /dev gets (made once). */
function devTemplate(runtimeDir: string): string {
  const dir = path.join(runtimeDir, 'container-dev');
  if (fs.existsSync(path.join(dir, 'stderr'))) return dir;
  const tmp = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, 'pts'), { recursive: true, mode: 0o755 });
  fs.mkdirSync(path.join(tmp, 'shm'), { mode: 0o1777 });
  fs.chmodSync(path.join(tmp, 'shm'), 0o1777);
  fs.symlinkSync('/proc/self/fd', path.join(tmp, 'fd'));
  ['stdin', 'stdout', 'stderr'].forEach((n, i) => {
    fs.symlinkSync(`/proc/self/fd/${i}`, path.join(tmp, n));
  });
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return dir;
}

/**
 * What can be checked from outside before anything runs: the working
 * directory and the command exist in the root. Throws an error with `code`
 * ENOENT or EACCES and a message in runc's words.
 */
export function checkInRoot(
  root: string,
  args: readonly string[],
  pathEnv: string | undefined,
  cwd: string,
): void {
  if (!isDirInRoot(root, cwd || '/')) {
    throw Object.assign(
      new Error(`chdir to cwd ("${cwd}") set in config.json failed: no such directory in the container`),
      // badCwd: the directory is the culprit, not the command (agent-service.ts tells them apart).
      { code: 'ENOENT', badCwd: cwd },
    );
  }
  try {
    resolveCommandInRoot(root, args[0]!, pathEnv, cwd || '/');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' ? 'permission denied' : 'executable file not found in $PATH';
    throw Object.assign(new Error(`exec: "${args[0]}": ${why}`), { code });
  }
}

const NS_FLAG = { uts: '-u', ipc: '-i', pid: '-p', net: '-n' } as const;

/**
 * The start of an init's chain: `nsenter` for namespaces it joins (from a
 * pid: the pod's sandbox; or a network namespace file; nsenter forks into
 * a joined PID namespace), then `unshare` with a new mount namespace (mounts
 * do not propagate back) and the new UTS, IPC, PID (for children) and
 * network namespaces asked for. Namespaces neither joined nor new are the
 * agent's.
 */
function namespaceSteps(c: ContainerRootOptions, t: Record<Tool, string>): string[] {
  const ns = { uts: 'new', ipc: 'new', pid: 'new', net: 'guest', ...c.namespaces } as const;
  const kinds = ['uts', 'ipc', 'pid', 'net'] as const;
  const steps: string[] = [];
  const joins = new Map<number, string[]>();
  for (const k of kinds) {
    const src = ns[k];
    if (typeof src === 'number') joins.set(src, [...(joins.get(src) ?? []), NS_FLAG[k]]);
  }
  if (typeof ns.net === 'object') steps.push(t.nsenter, `--net=${ns.net.path}`, '--');
  for (const [pid, flags] of joins) steps.push(t.nsenter, '-t', String(pid), ...flags, '--');
  const fresh = kinds.filter((k) => ns[k] === 'new').map((k) => NS_FLAG[k]);
  steps.push(t.unshare, '-m', ...fresh, '--propagation', 'private', '--');
  return steps;
}

export interface IsolatedCommand {
  file: string;
  argv: string[];
}

/**
 * Checks what can be checked from outside (the command and the working
 * directory exist in the root) and returns the chain to spawn. Throws an
 * error with `code` ENOENT/EACCES for a missing command, and a plain error
 * for a missing working directory.
 */
export function isolatedCommand(
  c: ContainerRootOptions,
  args: readonly string[],
  env: Record<string, string>,
  cwd: string,
  terminal: boolean,
): IsolatedCommand {
  const t = isolationTools();
  const inCwd = cwd || '/';
  checkInRoot(c.root, args, env.PATH, inCwd);
  const u = c.user ?? { uid: 0, gid: 0 };
  const groups = u.additionalGids ?? [];
  const final = [
    t.setpriv,
    '--regid',
    String(u.gid),
    ...(groups.length > 0 ? ['--groups', groups.join(',')] : ['--clear-groups']),
    '--',
    ...(terminal ? [t.setsid, '-c'] : []),
    t.unshare,
    '--root',
    c.root,
    '--wd',
    inCwd,
    ...(u.uid !== 0 ? ['-S', String(u.uid)] : []),
    '--',
    ...args,
  ];
  if (c.joinPid !== undefined) {
    return {
      file: t.nsenter,
      argv: [
        t.nsenter,
        '-t',
        String(c.joinPid),
        '-m',
        '-u',
        '-i',
        '-p',
        '--',
        t.sh,
        '-c',
        EXEC_SCRIPT,
        'passfd-exec',
        ...final,
      ],
    };
  }
  const mounts = c.mounts ?? [];
  // A UTS namespace it shares is named by whoever made it (the pod's sandbox).
  const hostname = c.namespaces?.uts === undefined || c.namespaces.uts === 'new' ? (c.hostname ?? '') : '';
  const setup = [
    c.root,
    hostname,
    devTemplate(c.runtimeDir),
    t.mount,
    t.cp,
    t.mkdir,
    t.hostname,
    String(mounts.length),
    ...mounts.flatMap((m) => [m.kind, m.source, m.target, m.options]),
  ];
  const steps = namespaceSteps(c, t);
  return {
    file: steps[0]!,
    argv: [...steps, t.sh, '-c', WAIT_SCRIPT, 'passfd-wait', t.sh, INIT_SCRIPT, ...setup, ...final],
  };
}

/** How long a chain may take to report P1's pid before the start counts as failed. */
export const ANNOUNCE_TIMEOUT_MS = 10_000;

/**
 * The agent's side of the setup handshake (see ANNOUNCE): two pipes, whose
 * ends `childFds` the chain gets as its fds 3 and 4. `complete` reads P1's
 * pid, opens its pidfd, then lets P1 go on. Rejects when the chain exits
 * first (its setup failed: the reason is on the process's stderr), or after
 * `timeoutMs`.
 */
export class SetupHandshake {
  /** [announce write end, ack read end]: the chain's fds 3 and 4. */
  readonly childFds: [number, number];
  private announce: number | null;
  private ack: number | null;

  constructor() {
    const [announceR, announceW] = makePipe(false);
    let ack: [number, number];
    try {
      ack = makePipe(false);
    } catch (err) {
      closeQuietly(announceR);
      closeQuietly(announceW);
      throw err;
    }
    this.announce = announceR;
    this.ack = ack[1];
    this.childFds = [announceW, ack[0]];
  }

  /** The child has its copies (or never will): the agent's must go, or P1 never sees EOF. */
  releaseChildEnds(): void {
    for (const fd of this.childFds) closeQuietly(fd);
  }

  async complete(exited: Promise<unknown>, timeoutMs = ANNOUNCE_TIMEOUT_MS): Promise<IsolatedProcess> {
    try {
      const fd = this.announce!;
      this.announce = null; // the reader owns it now
      const pid = await readPid(fd, exited, timeoutMs);
      const p = new IsolatedProcess(pid);
      fs.writeSync(this.ack!, 'go\n');
      return p;
    } finally {
      this.close();
    }
  }

  /** Lets go of the agent's ends (P1, if still waiting, reads EOF and gives up). */
  close(): void {
    closeQuietly(this.announce);
    closeQuietly(this.ack);
    this.announce = null;
    this.ack = null;
  }
}

function readPid(fd: number, exited: Promise<unknown>, timeoutMs: number): Promise<number> {
  const sock = new net.Socket({ fd, readable: true, writable: false });
  return new Promise<number>((resolve, reject) => {
    let text = '';
    const done = (err: Error | null, pid?: number) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(pid!);
    };
    const timer = setTimeout(
      () => done(new Error(`container setup did not finish within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('data', (b: Buffer) => {
      text += b.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      const pid = Number(text.slice(0, nl));
      if (Number.isInteger(pid) && pid > 0) done(null, pid);
      else done(new Error(`container setup reported a bad pid: ${JSON.stringify(text.slice(0, nl))}`));
    });
    sock.on('error', (err) => done(err));
    void exited.then(() =>
      done(new Error('container setup failed before the process started (see its stderr)')),
    );
  });
}

/**
 * P1 followed through a pidfd: signals reach the container's process
 * itself, never a recycled pid.
 */
export class IsolatedProcess {
  private pidfd: number | null;

  constructor(readonly pid: number) {
    this.pidfd = pidfdOpen(pid);
  }

  /** Sends `sig`; false when the process is gone. */
  signal(sig: number): boolean {
    return this.pidfd === null ? false : pidfdSignal(this.pidfd, sig);
  }

  /** True when `sig` has a handler installed (SigCgt in /proc/<pid>/status). */
  handles(sig: number): boolean {
    try {
      const status = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
      const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status);
      return m ? ((BigInt(`0x${m[1]}`) >> BigInt(sig - 1)) & 1n) === 1n : false;
    } catch {
      return false;
    }
  }

  close(): void {
    closeQuietly(this.pidfd);
    this.pidfd = null;
  }
}
