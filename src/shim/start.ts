/**
 * `<shim> … -id ID start`: containerd's request for a shim for task ID, run
 * with the bundle as working directory. As containerd's own shims do:
 *
 *   1. read the runtime options containerd writes on stdin (a protobuf Any;
 *      nothing when the task has none) for a ConfigPath;
 *   2. if the task's socket (address.ts) answers, a shim for it runs
 *      already: print that address;
 *   3. else start the long-lived shim (this binary without an action) in a
 *      new session (containerd's process group and signals are not its own),
 *      stdout and stderr on the bundle's `log` FIFO (containerd copies what
 *      arrives there into its own log), and wait until it has bound the
 *      socket: it says `READY` (or `ERROR <why>`) on a pipe given as its fd 3;
 *   4. write `<bundle>/address`, print `unix://<socket>` and exit 0.
 *
 * containerd reads this process's stdout and stderr (one pipe) to EOF, so
 * the long-lived shim must not inherit them. Unlike Go shims, the
 * long-lived shim binds the socket itself: `start` then needs no native
 * code, and it runs once per container.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { configPathFromOptions } from '../protocol/runtime-options.js';
import { socketAnswers, socketPathFor, toAddress, writeAddressFile } from './address.js';
import { OPTIONS_CONFIG_ENV, type ShimFlags } from './flags.js';

/** How long the long-lived shim may take to bind its socket. */
const READY_TIMEOUT_MS = 30_000;

function readOptionsConfig(): string | undefined {
  if (process.stdin.isTTY) return undefined;
  let data: Buffer;
  try {
    data = fs.readFileSync(0);
  } catch {
    return undefined;
  }
  return configPathFromOptions(data);
}

function openLog(bundle: string): number {
  try {
    return fs.openSync(path.join(bundle, 'log'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return fs.openSync('/dev/null', 'w');
  }
}

/** The first line on `pipe`: resolves on READY, rejects on ERROR, EOF, exit or timeout. */
function readyLine(pipe: Readable, child: ReturnType<typeof spawn>): Promise<void> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err: Error | null) => {
      clearTimeout(timer);
      pipe.destroy();
      if (err) reject(err);
      else resolve();
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
      done(line === 'READY' ? null : new Error(line.replace(/^ERROR /, '')));
    });
    pipe.on('end', () => done(new Error('shim exited before it was ready (see containerd log)')));
    child.on('error', (err) => done(err));
  });
}

export async function start(flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const optionsConfig = readOptionsConfig();
  const socketPath = socketPathFor(flags.address, flags.namespace, flags.id);
  const address = toAddress(socketPath);
  if (!(await socketAnswers(socketPath))) {
    const logFd = openLog(bundle);
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(
        process.execPath,
        [
          ...process.execArgv,
          // This very script (the bundle's entry, or the built module under tests).
          process.argv[1]!,
          '-namespace',
          flags.namespace,
          '-id',
          flags.id,
          '-address',
          flags.address,
          '-publish-binary',
          flags.publishBinary,
          '-socket',
          address,
          ...(flags.debug ? ['-debug'] : []),
        ],
        {
          cwd: bundle,
          detached: true,
          stdio: ['ignore', logFd, logFd, 'pipe'],
          env: { ...process.env, [OPTIONS_CONFIG_ENV]: optionsConfig ?? '' },
        },
      );
    } finally {
      fs.closeSync(logFd);
    }
    try {
      await readyLine(child.stdio[3] as Readable, child);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    child.unref();
  }
  writeAddressFile(bundle, address);
  process.stdout.write(address);
}
