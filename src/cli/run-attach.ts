/**
 * What `ctr` does with a running process's FIFOs, for `run`: our stdin into
 * `-stdin` (CloseStdin at its EOF), `-stdout`/`-stderr` to our stdout and
 * stderr, our terminal's signals and size to the process.
 *
 * Signals. SIGINT, SIGTERM and SIGHUP are forwarded to the process (a
 * terminal's Ctrl-C reaches only `run`: the `vmm` and `agent` lead sessions
 * of their own), and `run` then exits with the process's status, 130 for a
 * Ctrl-C that killed it, as `ctr` and `docker run` do.
 *
 * A closed output (`run … | head -n 2`). Writing to our stdout fails with
 * EPIPE (Node ignores SIGPIPE). Then, as for any member of a shell
 * pipeline: our reader of that FIFO and the broker's keeper go
 * (`outputGone`), so the process meets a closed pipe on its next write and
 * gets SIGPIPE (or EPIPE if it ignores it); once it has ended and everything
 * is cleaned up, `run` dies of SIGPIPE itself, which a shell reports as 141
 * and does not complain about. That is what `ctr` does too (a Go program
 * re-raises SIGPIPE for a write to fd 1 or 2) and what `seq` does in
 * `seq 1000000 | head -n 2`.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type { BrokeredProcess } from '../broker/broker.js';
import { TERMINAL_SIGNALS } from './options.js';

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

export interface AttachResult {
  /** The process's exit status (128+n for a signal). */
  status: number;
  /** Our stdout or stderr was closed by its reader (EPIPE): `run` should die of SIGPIPE. */
  brokenPipe: boolean;
}

/** Whether stdout or stderr has failed with EPIPE; listens from the first call on. */
export function watchBrokenOutputs(): { readonly broken: boolean } {
  const state = { broken: false };
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') state.broken = true;
    });
  }
  return state;
}

/**
 * Copies stdio between us and the FIFOs until the process has exited and
 * everything it wrote has been printed (see the module comment).
 */
export async function attach(
  proc: BrokeredProcess,
  fifos: { stdin: string; stdout: string; stderr: string | undefined },
  tty: boolean,
): Promise<AttachResult> {
  let brokenPipe = false;
  const outputs: Promise<void>[] = [];
  const pipeOut = (name: 'stdout' | 'stderr', fifo: string, dest: NodeJS.WriteStream) => {
    const reader = new net.Socket({
      fd: fs.openSync(fifo, O_RDONLY | O_NONBLOCK),
      readable: true,
      writable: false,
    });
    const onDestError = (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' || reader.destroyed) return;
      brokenPipe = true;
      reader.destroy();
      proc.outputGone(name).catch(() => {});
    };
    dest.on('error', onDestError);
    outputs.push(
      new Promise<void>((resolve) => {
        reader.on('data', (d: Buffer) => {
          if (!dest.write(d)) {
            reader.pause();
            dest.once('drain', () => reader.resume());
          }
        });
        reader.on('end', () => resolve());
        reader.on('close', () => resolve());
        reader.on('error', () => resolve());
      }).finally(() => dest.off('error', onDestError)),
    );
    return reader;
  };
  const readers = [pipeOut('stdout', fifos.stdout, process.stdout)];
  if (fifos.stderr) readers.push(pipeOut('stderr', fifos.stderr, process.stderr));

  const writer = new net.Socket({
    fd: fs.openSync(fifos.stdin, O_WRONLY | O_NONBLOCK),
    readable: false,
    writable: true,
  });
  writer.on('error', () => {});
  const stdin = process.stdin;
  const rawMode = tty && stdin.isTTY;
  if (rawMode) stdin.setRawMode(true);
  stdin.pipe(writer);
  stdin.on('end', () => {
    // containerd's writer is gone: drop the keeper too, so the process reads EOF after every byte.
    writer.end(() => {
      writer.destroy();
      proc.closeStdin().catch(() => {});
    });
  });
  stdin.on('error', () => stdin.emit('end'));

  const forward = (sig: NodeJS.Signals) => {
    proc.signal(os.constants.signals[sig]).catch(() => {});
  };
  for (const s of TERMINAL_SIGNALS) process.on(s, forward);
  const onResize = () => {
    if (process.stdout.isTTY) proc.resize(process.stdout.rows, process.stdout.columns).catch(() => {});
  };
  if (tty) process.stdout.on('resize', onResize);

  try {
    const status = await proc.wait();
    // The keepers are released: the readers reach EOF once the FIFOs are empty.
    await Promise.all(outputs);
    return { status, brokenPipe };
  } finally {
    for (const s of TERMINAL_SIGNALS) process.off(s, forward);
    process.stdout.off('resize', onResize);
    if (rawMode) stdin.setRawMode(false);
    stdin.unpipe(writer);
    stdin.destroy();
    writer.destroy();
    for (const r of readers) r.destroy();
  }
}
