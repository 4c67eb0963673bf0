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
import { type ChildProcess, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { BrokeredProcess } from '../broker/broker.js';
import type { Config } from '../config/schema.js';
import { chosenLogLevel, createLogger } from '../util/log.js';
import { makePrivateDir, sweepStalePrivateDirs } from '../util/private-dir.js';
import { TERMINAL_SIGNALS, type VmFlags, vmSpecFrom, withKvmHint, withVmFlags } from './options.js';
import { type AttachResult, attach, watchBrokenOutputs } from './run-attach.js';

interface RunOptions extends VmFlags {
  config?: string;
  tty: boolean;
  hvsock?: string;
  io?: 'passfd' | 'rpc';
  cwd?: string;
  env: string[];
}

/** `-e KEY=value` (repeatable): a variable for the command's environment. */
function collectEnv(value: string, prev: string[]): string[] {
  if (!/^[^=]+=/.test(value))
    throw new InvalidArgumentError(`must be KEY=value, not ${JSON.stringify(value)}`);
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
    .option('-e, --env <KEY=value>', 'environment variable for the command (repeatable)', collectEnv, [])
    .argument('<cmd...>', 'the command and its arguments (after --)')
    .action(async (cmd: string[], opts: RunOptions) => {
      const outputs = watchBrokenOutputs();
      const { status, brokenPipe } = await runCommand(cmd, opts);
      if (brokenPipe || outputs.broken)
        (await import('../../native-bindings/index.js')).exitBySignal(os.constants.signals.SIGPIPE);
      // process.exit() drops writes still queued for a pipe: flush stdout and stderr first.
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((r) => s.write('', r))));
      process.exit(status);
    });
}

async function runCommand(cmd: string[], opts: RunOptions): Promise<AttachResult> {
  const log = createLogger('run');
  const vm = vmSpecFrom(opts);
  if (vm && opts.hvsock) throw new Error('--vm and --hvsock exclude each other');
  const { loadConfig } = await import('../config/load.js');
  const config: Config = loadConfig(opts.config);
  if (opts.io) config.runtime.use_passfd_io = opts.io === 'passfd';
  const hvsock = vm ? undefined : (opts.hvsock ?? (config.hypervisor.hvsock_path || undefined));
  let stack: { hvsockPath: string; stop(): Promise<void> } | null = null;
  // The processes of the stack this run started, by name: when the command's
  // session breaks, the error names the one that died rather than the broken
  // connection alone.
  let stackProcesses: [string, ChildProcess][] = [];
  sweepStalePrivateDirs(); // what an earlier run killed with -9 could not remove
  const fifoDir = makePrivateDir('passfd-fifos-');
  const cleanup: (() => void | Promise<void>)[] = [
    () => fs.rmSync(fifoDir, { recursive: true, force: true }),
  ];
  // Until the process runs, a terminal signal ends the start-up: what exists is removed, exit 128+n.
  const untrap = trapSignals(async (sig) => {
    for (const step of cleanup) await Promise.resolve(step()).catch(() => {});
    process.exit(128 + os.constants.signals[sig]);
  });
  let brokerModule: Promise<typeof import('../broker/broker.js')> | null = null;
  // The broker's modules load while the stack's processes start, but only once they
  // are spawned: evaluating those modules holds the event loop for tens of ms.
  const loadBroker = <T>(starting: Promise<T>): Promise<T> => {
    brokerModule = import('../broker/broker.js');
    return starting;
  };
  const common = { config, configPath: opts.config, logLevel: chosenLogLevel() };
  try {
    if (!hvsock) {
      if (vm) {
        const started = await loadBroker(
          (await import('../vm/vm-stack.js')).startVmStack({
            ...common,
            accel: vm.accel,
            cpus: vm.cpus,
            memoryMiB: vm.memoryMiB,
            // KVM boots in seconds where it works and fails or hangs where it does not: a minute.
            ...(vm.accel === 'kvm' ? { startTimeoutMs: 60_000 } : {}),
          }),
        ).catch((err: Error) => {
          throw withKvmHint(err, vm);
        });
        stackProcesses = [
          ['QEMU', started.qemu.process],
          ['vmm', started.vmm],
        ];
        stack = started;
      } else {
        const started = await loadBroker(
          (await import('../broker/embedded-stack.js')).startEmbeddedStack(common),
        );
        stackProcesses = [
          ['agent', started.agent],
          ['vmm', started.vmm],
        ];
        stack = started;
      }
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

    const { Broker, notRunnableStatus } = await (brokerModule ?? import('../broker/broker.js'));
    const broker = new Broker({ hvsockPath: hvsock ?? stack!.hvsockPath, config, log });
    cleanup.unshift(() => broker.close());
    const tty = opts.tty && process.stdout.isTTY ? process.stdout : null;
    let proc: BrokeredProcess;
    try {
      proc = await broker.start({
        containerId: id,
        args: cmd,
        env: opts.env.length > 0 || opts.tty ? [...defaultEnv(opts.tty), ...opts.env] : undefined,
        cwd: opts.cwd,
        terminal: opts.tty,
        ...(tty ? { rows: tty.rows, cols: tty.columns } : {}),
        fifos,
      });
    } catch (err) {
      // A command that cannot run exits 127 or 126, as in a shell (and `docker run`).
      const status = notRunnableStatus(err);
      if (status === null) throw err;
      process.stderr.write(`passfd-broker: ${(err as Error).message}\n`);
      return { status, brokenPipe: false };
    }
    untrap(); // from here on, attach forwards them to the process
    return await attach(proc, fifos, opts.tty).catch(async (err: Error) => {
      throw (await diedMeanwhile(stackProcesses)) ?? err;
    });
  } finally {
    untrap();
    for (const step of cleanup) await step();
  }
}

/**
 * The first of `processes` that has died (or dies within a moment: its exit
 * event can come after the broken connection is noticed), as an error that
 * says so; null when they all live.
 */
async function diedMeanwhile(processes: [string, ChildProcess][]): Promise<Error | null> {
  const dead = () => processes.find(([, p]) => p.exitCode !== null || p.signalCode !== null);
  if (processes.length > 0 && !dead())
    await Promise.race([
      ...processes.map(([, p]) => once(p, 'exit')),
      new Promise((r) => setTimeout(r, 500).unref()),
    ]);
  const found = dead();
  if (!found) return null;
  const [name, p] = found;
  const how = p.signalCode ? `was killed by ${p.signalCode}` : `exited with status ${p.exitCode}`;
  return new Error(`the ${name} (pid ${p.pid}) ${how} while the command ran`);
}

/** Runs `onSignal` once for the first SIGINT/SIGTERM/SIGHUP; returns the function that stops listening. */
function trapSignals(onSignal: (sig: NodeJS.Signals) => void): () => void {
  let fired = false;
  const handler = (sig: NodeJS.Signals) => {
    if (fired) return;
    fired = true;
    onSignal(sig);
  };
  for (const sig of TERMINAL_SIGNALS) process.on(sig, handler);
  return () => {
    for (const sig of TERMINAL_SIGNALS) process.off(sig, handler);
  };
}

function defaultEnv(tty: boolean): string[] {
  const env = [
    `PATH=${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
    `HOME=${process.env.HOME ?? '/'}`,
  ];
  if (tty) env.push(`TERM=${process.env.TERM ?? 'xterm'}`);
  return env;
}
