/**
 * The embedded stack `run` and `bench` start when no VMM is given: a `vmm`
 * process (hybrid-vsock device + loopback guest) and an `agent` process in
 * that guest, as child processes of this one, in a private directory.
 *
 * Readiness is systemd's: each child gets its own $NOTIFY_SOCKET (a datagram
 * socket bound by us) and we wait for its READY=1, so nothing here polls for
 * socket files or parses logs. Children log warnings to our stderr; a child
 * that exits early fails the start with its exit status.
 *
 * Lifetimes. Each child leads its own session (`detached`), so a terminal's
 * Ctrl-C reaches only us (`run` forwards it to the container process), and
 * gets SIGTERM when we die (util/lifeline.ts), even by kill -9; a child that
 * ends because we died removes our private directory on its way out
 * (util/private-dir.ts), and so does the next `run` if nobody could.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { withPrivateUmask } from '../net/bind-private.js';
import { dieWithParent } from '../util/lifeline.js';
import { makePrivateDir } from '../util/private-dir.js';

export interface EmbeddedStack {
  dir: string;
  hvsockPath: string;
  guestDir: string;
  vmm: ChildProcess;
  agent: ChildProcess;
  stop(): Promise<void>;
}

export interface StackOptions {
  config: Config;
  /** The file `config` came from: the vmm reads its `[hypervisor]` access keys from it. */
  configPath?: string;
  /** Log level for the children (default warn). */
  logLevel?: string;
  /** Extra agent arguments (tests). */
  agentArgs?: string[];
  startTimeoutMs?: number;
  /** Extra node options for the children, e.g. `--cpu-prof --cpu-prof-dir=<dir>` (not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
}

interface DgramSocket {
  on(event: 'message', cb: (buf: Buffer) => void): void;
  on(event: 'error', cb: (err: Error) => void): void;
  bind(path: string): void;
  close(): void;
}

/**
 * The CLI the children run: beside this file once built; from TypeScript sources
 * (tests, examples under tsx) the built one in dist/, so children start fast.
 */
export const CLI_MAIN = import.meta.filename.endsWith('.ts')
  ? path.resolve(import.meta.dirname, '../../dist/src/cli/main.js')
  : path.resolve(import.meta.dirname, '../cli/main.js');

export interface ReadyChild {
  child: ChildProcess;
  /** Closes the notify socket; kept until the child is stopped so its STOPPING=1 has a receiver. */
  closeNotify(): void;
}

export interface StartReadyOptions {
  /** Node options before the CLI (e.g. `--cpu-prof`). */
  nodeArgs?: string[];
  /** Capture the child's stderr (default: it goes to ours). */
  onStderr?: (chunk: Buffer) => void;
}

/** Starts `passfd-broker <args>` and resolves once it has sent READY=1. */
export function startReady(
  args: string[],
  dir: string,
  name: string,
  logLevel: string,
  timeoutMs: number,
  opts: StartReadyOptions = {},
): Promise<ReadyChild> {
  const notifyPath = path.join(dir, `${name}.notify`);
  const unix = createRequire(import.meta.url)('unix-dgram') as { createSocket(t: 'unix_dgram'): DgramSocket };
  const sock = unix.createSocket('unix_dgram');
  return new Promise((resolve, reject) => {
    let child: ChildProcess | null = null;
    let settled = false;
    const closeNotify = () => {
      sock.close();
      fs.rmSync(notifyPath, { force: true });
    };
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child?.off('exit', onExit);
      if (err) {
        closeNotify();
        child?.kill('SIGKILL');
        reject(err);
      } else resolve({ child: child!, closeNotify });
    };
    const onExit = (code: number | null, sig: string | null) =>
      finish(new Error(`${name} exited before it was ready (${sig ?? `exit ${code}`})`));
    const timer = setTimeout(() => finish(new Error(`${name} not ready within ${timeoutMs} ms`)), timeoutMs);
    sock.on('message', (buf) => {
      if (buf.toString().split('\n').includes('READY=1')) finish(null);
    });
    sock.on('error', (err) => finish(err));
    // In a 0700 directory already; 0600 as well, like every socket we bind.
    withPrivateUmask(() => sock.bind(notifyPath));
    const cmd = dieWithParent(process.execPath, [...(opts.nodeArgs ?? []), CLI_MAIN, ...args], 'SIGTERM');
    child = spawn(cmd.file, cmd.args, {
      stdio: ['ignore', 'ignore', opts.onStderr ? 'pipe' : 'inherit'],
      env: { ...process.env, NOTIFY_SOCKET: notifyPath, PASSFD_LOG: logLevel },
      detached: true,
    });
    if (opts.onStderr) child.stderr!.on('data', opts.onStderr);
    child.on('error', (err) => finish(err));
    child.on('exit', onExit);
  });
}

export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export async function startEmbeddedStack(opts: StackOptions): Promise<EmbeddedStack> {
  const dir = makePrivateDir('passfd-run-');
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const guestDir = path.join(dir, 'guest');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 20_000;
  const rt = opts.config.runtime;
  const cid = String(opts.config.hypervisor.guest_cid);
  let vmm: ReadyChild | null = null;
  try {
    vmm = await startReady(
      [
        'vmm',
        '--hvsock',
        hvsockPath,
        '--guest-dir',
        guestDir,
        '--guest-cid',
        cid,
        ...(opts.configPath ? ['--config', opts.configPath] : []),
      ],
      dir,
      'vmm',
      level,
      timeout,
      { nodeArgs: opts.nodeArgs },
    );
    const agent = await startReady(
      [
        'agent',
        '--guest-dir',
        guestDir,
        '--passfd-port',
        String(rt.passfd_listener_port),
        '--agent-port',
        String(rt.agent_port),
        '--stream-wait-ms',
        String(rt.agent_stream_wait_ms),
        ...(opts.agentArgs ?? []),
      ],
      dir,
      'agent',
      level,
      timeout,
      { nodeArgs: opts.nodeArgs },
    );
    const v = vmm;
    return {
      dir,
      hvsockPath,
      guestDir,
      vmm: v.child,
      agent: agent.child,
      stop: async () => {
        await stopChild(agent.child);
        await stopChild(v.child);
        agent.closeNotify();
        v.closeNotify();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (vmm) {
      await stopChild(vmm.child);
      vmm.closeNotify();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
