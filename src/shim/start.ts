/**
 * `<shim> … -id ID start`: containerd's request for a shim for task ID, run
 * with the bundle as working directory, the runtime options (a protobuf Any,
 * or nothing) on stdin. Its stdout and stderr are one pipe that containerd
 * reads to EOF, and what it prints on success is the shim's address.
 *
 * `start` is on every container's critical path, so the work is done by the
 * long-lived shim itself, launched with `PASSFD_SHIM_LAUNCH=1` and the same
 * arguments (serve.ts, "launched by start"): it reads the options, finds the
 * task's socket (address.ts), answers with the address of a shim that
 * already serves it, or binds it, writes `<bundle>/address` and carries on
 * serving. It reports on fd 3, one line: `READY unix://<socket>` or
 * `ERROR <why>`, then closes fd 3.
 *
 * The launcher is the package's shell wrapper (bin/containerd-shim-passfd-v2),
 * so `start` costs no Node start-up of its own; this module is the same
 * launcher for a shim run as `node containerd-shim-passfd-v2.js … start`:
 * the long-lived shim in a new session (containerd's process group and
 * signals are not its own), stdin passed through, stdout and stderr on the
 * bundle's `log` FIFO (containerd copies what arrives there into its log),
 * never on containerd's pipe.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { LAUNCH_ENV, type ShimFlags } from './flags.js';

/** How long the long-lived shim may take to bind its socket. */
const READY_TIMEOUT_MS = 30_000;

function openLog(bundle: string): number {
  try {
    return fs.openSync(path.join(bundle, 'log'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return fs.openSync('/dev/null', 'w');
  }
}

/** The shim's line on `pipe`: resolves with the address on READY, rejects on ERROR, EOF, exit or timeout. */
function readyLine(pipe: Readable, child: ReturnType<typeof spawn>): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err: Error | null, address = '') => {
      clearTimeout(timer);
      pipe.destroy();
      if (err) reject(err);
      else resolve(address);
    };
    const timer = setTimeout(
      () => done(new Error(`shim not ready within ${READY_TIMEOUT_MS} ms`)),
      READY_TIMEOUT_MS,
    );
    pipe.on('data', (b: Buffer) => {
      text += b.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      const line = text.slice(0, nl);
      if (line.startsWith('READY ')) done(null, line.slice('READY '.length));
      else done(new Error(line.replace(/^ERROR /, '')));
    });
    pipe.on('end', () => done(new Error('shim exited before it was ready (see containerd log)')));
    child.on('error', (err) => done(err));
  });
}

export async function start(_flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const logFd = openLog(bundle);
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(
      process.execPath,
      // This very script (the bundle's entry, or the built module under tests), same arguments.
      [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)],
      {
        cwd: bundle,
        detached: true,
        stdio: [0, logFd, logFd, 'pipe'],
        env: { ...process.env, [LAUNCH_ENV]: '1' },
      },
    );
  } finally {
    fs.closeSync(logFd);
  }
  let address: string;
  try {
    address = await readyLine(child.stdio[3] as Readable, child);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  child.unref();
  process.stdout.write(address);
}
