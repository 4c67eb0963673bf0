/**
 * The embedded stack `run` and `bench` start when no VMM is given: a `vmm`
 * process (hybrid-vsock device + loopback guest) and an `agent` process in
 * that guest, as child processes of this one, in a private directory.
 *
 * Readiness is systemd's: each child gets its own $NOTIFY_SOCKET (a datagram
 * socket bound by us) and we wait for its READY=1, so nothing here polls for
 * socket files or parses logs. Children log warnings to our stderr; a child
 * that exits early fails the start with its exit status.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config/schema.js';

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
  /** Log level for the children (default warn). */
  logLevel?: string;
  /** Extra agent arguments (tests). */
  agentArgs?: string[];
  startTimeoutMs?: number;
  /** Extra node options for the children, e.g. `--cpu-prof --cpu-prof-dir=<dir>` (not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
  /**
   * Start the agent together with the vmm (it waits for the vmm's guest
   * socket, `agent --wait-guest-ms`) instead of after it: the two Node
   * start-ups overlap. The containerd shim uses it; start-up is on every
   * container's path there.
   */
  parallel?: boolean;
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
  /** Give up: the child is killed and the start rejects. */
  signal?: AbortSignal;
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
    opts.signal?.addEventListener('abort', () => finish(new Error(`${name}: start abandoned`)), {
      once: true,
    });
    sock.on('message', (buf) => {
      if (buf.toString().split('\n').includes('READY=1')) finish(null);
    });
    sock.on('error', (err) => finish(err));
    sock.bind(notifyPath);
    child = spawn(process.execPath, [...(opts.nodeArgs ?? []), CLI_MAIN, ...args], {
      stdio: ['ignore', 'ignore', opts.onStderr ? 'pipe' : 'inherit'],
      env: { ...process.env, NOTIFY_SOCKET: notifyPath, PASSFD_LOG: logLevel },
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

/** The `agent` command line for a loopback guest in `guestDir`, from the configuration. */
export function loopbackAgentArgs(config: Config, guestDir: string, extra: readonly string[] = []): string[] {
  const rt = config.runtime;
  return [
    'agent',
    '--guest-dir',
    guestDir,
    '--passfd-port',
    String(rt.passfd_listener_port),
    '--agent-port',
    String(rt.agent_port),
    '--stream-wait-ms',
    String(rt.agent_stream_wait_ms),
    ...extra,
  ];
}

export async function startEmbeddedStack(opts: StackOptions): Promise<EmbeddedStack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-run-'));
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const guestDir = path.join(dir, 'guest');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 20_000;
  const cid = String(opts.config.hypervisor.guest_cid);
  let vmm: ReadyChild | null = null;
  const abandon = new AbortController();
  const startAgent = () =>
    startReady(
      loopbackAgentArgs(opts.config, guestDir, [
        ...(opts.parallel ? ['--wait-guest-ms', String(timeout)] : []),
        ...(opts.agentArgs ?? []),
      ]),
      dir,
      'agent',
      level,
      timeout,
      { nodeArgs: opts.nodeArgs, signal: abandon.signal },
    );
  let early: Promise<ReadyChild> | null = null;
  try {
    if (opts.parallel) {
      early = startAgent();
      early.catch(() => {}); // awaited below, after the vmm
    }
    vmm = await startReady(
      ['vmm', '--hvsock', hvsockPath, '--guest-dir', guestDir, '--guest-cid', cid],
      dir,
      'vmm',
      level,
      timeout,
      { nodeArgs: opts.nodeArgs },
    );
    const agent = await (early ?? startAgent());
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
    if (early) {
      abandon.abort();
      const a = await early.catch(() => null);
      if (a) {
        await stopChild(a.child);
        a.closeNotify();
      }
    }
    if (vmm) {
      await stopChild(vmm.child);
      vmm.closeNotify();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
