/**
 * containerd's side of the FIFOs, made cheap so it is never the bottleneck:
 * the bench process does not copy bulk bytes in JavaScript. Bulk readers and
 * writers are small child processes with the FIFO as their stdin/stdout:
 *
 *   - counter: `wc -c < fifo` reads to EOF and prints the byte count, so every
 *     transfer is checked for length (GNU wc reads a pipe at > 1.5 GB/s on a
 *     2-core VM, about as fast as `cat > /dev/null`);
 *   - zero writer: `dd if=/dev/zero bs=1M count=N iflag=count_bytes > fifo`
 *     (1 MiB writes, cheaper than `head -c`'s 8 KiB ones).
 *
 * Helpers are *gated*: the shell is spawned ahead of time and waits on its
 * stdin; `go()` releases it, so the fork/exec of the helper is not inside the
 * timed interval. Small outputs (a `wc -c` count coming back through the
 * stdout FIFO, a process's stderr) are read in-process with a non-blocking
 * net.Socket, as `run` does.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { FifoPaths } from '../broker/fifo-set.js';
import { dieWithParent } from '../util/lifeline.js';

export interface Helper {
  child: ChildProcess;
  /** Lets the gated shell go on (opens its FIFO, execs the tool). */
  go(): void;
  /** Exit code and stdout of the helper. */
  done: Promise<{ code: number | null; out: string; err: string }>;
  kill(): void;
}

export type StdioSpec = 'pipe' | 'ignore' | number;

export interface GateOptions {
  /** The tool's stdin (default: none). */
  stdin?: StdioSpec;
  /** The tool's stdout (default: a pipe collected into `out`). */
  stdout?: StdioSpec;
}

/**
 * Spawns `sh -c 'read _ <&3 || exit; exec 3<&-; exec <script>'` with `$1..`
 * = args: the gate is fd 3, so the tool's own stdin can be any fd. A gate
 * that closes without `go()` (the bench died) ends the helper, and so does
 * the bench's death later (SIGKILL, util/lifeline.ts): a `dd` blocked on a
 * FIFO nobody will open again must not outlive it.
 */
export function gatedShell(script: string, args: string[], opts: GateOptions = {}): Helper {
  const cmd = dieWithParent(
    'sh',
    ['-c', `read _ <&3 || exit 125; exec 3<&-; exec ${script}`, 'helper', ...args],
    'SIGKILL',
  );
  const child = spawn(cmd.file, cmd.args, {
    stdio: [opts.stdin ?? 'ignore', opts.stdout ?? 'pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const gate = child.stdio[3] as Writable | null;
  gate?.on('error', () => {});
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, out, err }));
    child.on('error', (e) => resolve({ code: -1, out, err: `${err}${e.message}` }));
  });
  return {
    child,
    go: () => gate?.end('\n'),
    done,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** `wc -c < fifo` (released at once: it only waits for bytes). */
export function spawnCounter(fifo: string): Helper {
  const h = gatedShell('wc -c < "$1"', [fifo]);
  h.go();
  return h;
}

/** Writes `bytes` zero bytes into `fifo` once `go()` is called. */
export function spawnZeroWriter(fifo: string, bytes: number): Helper {
  return gatedShell('dd if=/dev/zero bs=1M count="$2" iflag=count_bytes status=none > "$1"', [
    fifo,
    String(bytes),
  ]);
}

/** The byte count a counter printed, or throws with what it said instead. */
export async function counted(h: Helper): Promise<number> {
  const r = await h.done;
  const n = Number(r.out.trim());
  if (r.code !== 0 || !Number.isFinite(n) || r.out.trim() === '')
    throw new Error(`counter failed (exit ${r.code}): ${r.err.trim() || r.out.trim()}`);
  return n;
}

/** containerd-style FIFOs `<dir>/<id>-stdin|stdout|stderr`, made with one `mkfifo`. */
export function makeFifos(dir: string, id: string): Required<FifoPaths> {
  const fifos = {
    stdin: path.join(dir, `${id}-stdin`),
    stdout: path.join(dir, `${id}-stdout`),
    stderr: path.join(dir, `${id}-stderr`),
  };
  execFileSync('mkfifo', ['-m', '600', fifos.stdin, fifos.stdout, fifos.stderr]);
  return fifos;
}

export function removeFifos(fifos: FifoPaths): void {
  for (const f of [fifos.stdin, fifos.stdout, fifos.stderr]) if (f) fs.rmSync(f, { force: true });
}

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

/** Reads a FIFO's (small) output as text in-process until EOF. Open only once the broker's keeper holds it. */
export function collectText(fifo: string): { socket: net.Socket; text: Promise<string> } {
  const socket = new net.Socket({
    fd: fs.openSync(fifo, O_RDONLY | O_NONBLOCK),
    readable: true,
    writable: false,
  });
  let text = '';
  const done = new Promise<string>((resolve) => {
    socket.on('data', (d: Buffer) => {
      text += d.toString();
    });
    socket.on('end', () => resolve(text));
    socket.on('error', () => resolve(text));
    socket.on('close', () => resolve(text));
  });
  return { socket, text: done };
}

/** containerd's stdin writer end (non-blocking, as `run` opens it). */
export function openWriter(fifo: string): net.Socket {
  const s = new net.Socket({ fd: fs.openSync(fifo, O_WRONLY | O_NONBLOCK), readable: false, writable: true });
  s.on('error', () => {});
  return s;
}

/** containerd's stdout reader end as a socket (for the latency loop). */
export function openReader(fifo: string): net.Socket {
  return new net.Socket({ fd: fs.openSync(fifo, O_RDONLY | O_NONBLOCK), readable: true, writable: false });
}
