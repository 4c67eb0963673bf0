/**
 * `passfd-broker run [--tty] -- <cmd> [args…]`: the end-to-end job.
 *
 * Plays containerd + `ctr run` around the broker: creates containerd-style
 * FIFOs (`<dir>/<id>-stdin`, `-stdout`, `-stderr`) in a private directory,
 * starts the embedded stack (a `vmm` with its loopback guest and an `agent`
 * in it) unless `--hvsock` names a running device, runs the command through
 * the broker, copies this terminal's stdin/stdout/stderr to and from the
 * FIFOs as `ctr` does, forwards SIGINT/SIGTERM/SIGHUP to the process, and exits
 * with its exit code (128+signal when a signal killed it). Every child and
 * file it made is removed on the way out. `--vm qemu` runs the agent and the
 * command in a QEMU guest instead (`--accel`, `--cpus`, `--memory` size it).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type Command, Option } from 'commander';
import type { BrokeredProcess } from '../broker/broker.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../util/log.js';
import { type VmFlags, vmSpecFrom, withKvmHint, withVmFlags } from './options.js';

interface RunOptions extends VmFlags {
  config?: string;
  tty: boolean;
  hvsock?: string;
  io?: 'passfd' | 'rpc';
  cwd?: string;
  env: string[];
}

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

function collect(value: string, prev: string[]): string[] {
  return [...prev, value];
}

export function registerRun(program: Command): void {
  withVmFlags(
    program
      .command('run')
      .description('run a command with its stdio through passfd (embedded VMM + agent unless --hvsock)')
      .option('--config <toml>', 'configuration file (see config.toml.example)')
      .option('-t, --tty', 'allocate a terminal (interactive shell)', false)
      .option(
        '--hvsock <path>',
        'use a running device (and its agent) instead of starting the embedded stack',
      )
      .addOption(
        new Option(
          '--io <path>',
          'IO path: passfd (default, from config) or rpc (the RPC-copy baseline)',
        ).choices(['passfd', 'rpc']),
      ),
  )
    .option('--cwd <dir>', 'working directory of the command')
    .option('-e, --env <KEY=value>', 'environment variable for the command (repeatable)', collect, [])
    .argument('<cmd...>', 'the command and its arguments (after --)')
    .action(async (cmd: string[], opts: RunOptions) => {
      const code = await runCommand(cmd, opts);
      // process.exit() drops writes still queued for a pipe: flush stdout and stderr first.
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((r) => s.write('', r))));
      process.exit(code);
    });
}

async function runCommand(cmd: string[], opts: RunOptions): Promise<number> {
  const log = createLogger('run');
  const vm = vmSpecFrom(opts);
  if (vm && opts.hvsock) throw new Error('--vm and --hvsock exclude each other');
  const { loadConfig } = await import('../config/load.js');
  const config: Config = loadConfig(opts.config);
  if (opts.io) config.runtime.use_passfd_io = opts.io === 'passfd';
  const hvsock = vm ? undefined : (opts.hvsock ?? (config.hypervisor.hvsock_path || undefined));
  let stack: { hvsockPath: string; stop(): Promise<void> } | null = null;
  const fifoDir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-fifos-'));
  const cleanup: (() => void | Promise<void>)[] = [
    () => fs.rmSync(fifoDir, { recursive: true, force: true }),
  ];
  let brokerModule: Promise<typeof import('../broker/broker.js')> | null = null;
  // The broker's modules load while the stack's processes start, but only once they
  // are spawned: evaluating those modules holds the event loop for tens of ms.
  const loadBroker = <T>(starting: Promise<T>): Promise<T> => {
    brokerModule = import('../broker/broker.js');
    return starting;
  };
  try {
    if (!hvsock) {
      stack = vm
        ? await loadBroker(
            (await import('../vm/vm-stack.js')).startVmStack({
              config,
              accel: vm.accel,
              cpus: vm.cpus,
              memoryMiB: vm.memoryMiB,
              // KVM boots in seconds where it works and fails or hangs where it does not: a minute.
              ...(vm.accel === 'kvm' ? { startTimeoutMs: 60_000 } : {}),
            }),
          ).catch((err: Error) => {
            throw withKvmHint(err, vm);
          })
        : await loadBroker((await import('../broker/embedded-stack.js')).startEmbeddedStack({ config }));
      const s = stack;
      cleanup.unshift(() => s.stop());
    }
    const id = randomBytes(8).toString('hex');
    const fifos = {
      stdin: path.join(fifoDir, `${id}-stdin`),
      stdout: path.join(fifoDir, `${id}-stdout`),
      stderr: opts.tty ? undefined : path.join(fifoDir, `${id}-stderr`),
    };
    // One mkfifo for all of them: each exec from this (large) process costs milliseconds.
    execFileSync('mkfifo', ['-m', '600', ...Object.values(fifos).filter((f) => f !== undefined)]);

    const { Broker } = await (brokerModule ?? import('../broker/broker.js'));
    const broker = new Broker({ hvsockPath: hvsock ?? stack!.hvsockPath, config, log });
    cleanup.unshift(() => broker.close());
    const tty = opts.tty && process.stdout.isTTY ? process.stdout : null;
    const proc = await broker.start({
      containerId: id,
      args: cmd,
      env: opts.env.length > 0 || opts.tty ? [...defaultEnv(opts.tty), ...opts.env] : undefined,
      cwd: opts.cwd,
      terminal: opts.tty,
      ...(tty ? { rows: tty.rows, cols: tty.columns } : {}),
      fifos,
    });
    return await attach(proc, fifos, opts.tty);
  } finally {
    for (const step of cleanup) await step();
  }
}

function defaultEnv(tty: boolean): string[] {
  const env = [
    `PATH=${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
    `HOME=${process.env.HOME ?? '/'}`,
  ];
  if (tty) env.push(`TERM=${process.env.TERM ?? 'xterm'}`);
  return env;
}

/**
 * What `ctr` does with the FIFOs: our stdin into `-stdin` (then CloseStdin at
 * EOF), `-stdout`/`-stderr` to our stdout/stderr. Resolves the exit code once
 * the process is gone and everything it wrote has been printed.
 */
async function attach(
  proc: BrokeredProcess,
  fifos: { stdin: string; stdout: string; stderr: string | undefined },
  tty: boolean,
): Promise<number> {
  const outputs: Promise<void>[] = [];
  const pipeOut = (fifo: string, dest: NodeJS.WriteStream) => {
    const reader = new net.Socket({
      fd: fs.openSync(fifo, O_RDONLY | O_NONBLOCK),
      readable: true,
      writable: false,
    });
    outputs.push(
      new Promise((resolve) => {
        reader.on('data', (d: Buffer) => {
          if (!dest.write(d)) {
            reader.pause();
            dest.once('drain', () => reader.resume());
          }
        });
        reader.on('end', resolve);
        reader.on('error', () => resolve());
      }),
    );
    return reader;
  };
  const readers = [pipeOut(fifos.stdout, process.stdout)];
  if (fifos.stderr) readers.push(pipeOut(fifos.stderr, process.stderr));

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
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, forward);
  const onResize = () => {
    if (process.stdout.isTTY) proc.resize(process.stdout.rows, process.stdout.columns).catch(() => {});
  };
  if (tty) process.stdout.on('resize', onResize);

  try {
    const status = await proc.wait();
    // The keepers are released: the readers reach EOF once the FIFOs are empty.
    await Promise.all(outputs);
    return status;
  } finally {
    for (const s of signals) process.off(s, forward);
    process.stdout.off('resize', onResize);
    if (rawMode) stdin.setRawMode(false);
    stdin.unpipe(writer);
    stdin.destroy();
    writer.destroy();
    for (const r of readers) r.destroy();
  }
}
