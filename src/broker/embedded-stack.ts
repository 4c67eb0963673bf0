/**
 * The embedded stack `run` and `bench` start when no VMM is given: a `vmm`
 * process (hybrid-vsock device + loopback guest) and an `agent` process in
 * that guest, as child processes of this one, in a private directory.
 *
 * Each is started with src/util/ready-child.ts (ready on its sd_notify
 * READY=1); children log warnings to our stderr.
 *
 * Lifetimes. Each child leads its own session, so a terminal's Ctrl-C
 * reaches only us (`run` forwards it to the container process), and gets
 * SIGTERM when we die, even by kill -9 (ready-child.ts, util/lifeline.ts); a
 * child that ends because we died removes our private directory on its way
 * out (util/private-dir.ts), and so does the next `run` if nobody could.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { makePrivateDir } from '../util/private-dir.js';
import { startReady, stopChild } from '../util/ready-child.js';

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

/**
 * The `agent` command line for a loopback guest in `guestDir`, from the
 * configuration; the agent waits up to `standinWaitMs` for the stand-in, so
 * it can start together with whatever serves it (a vmm here, the containerd
 * shim's own device there).
 */
export function loopbackAgentArgs(
  config: Config,
  guestDir: string,
  standinWaitMs: number,
  extra: readonly string[] = [],
): string[] {
  const rt = config.runtime;
  return [
    'agent',
    '--guest-dir',
    guestDir,
    '--standin-wait-ms',
    String(standinWaitMs),
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
  const dir = makePrivateDir('passfd-run-');
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const guestDir = path.join(dir, 'guest');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 20_000;
  const cid = String(opts.config.hypervisor.guest_cid);
  // Both start at once: the agent waits, event-driven, for the vmm's stand-in socket
  // (agent --standin-wait-ms), so start-up costs the slower of the two, not their sum.
  const giveUp = new AbortController();
  const starting = [
    startReady(
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
      { nodeArgs: opts.nodeArgs, signal: giveUp.signal },
    ),
    startReady(
      loopbackAgentArgs(opts.config, guestDir, timeout, opts.agentArgs),
      dir,
      'agent',
      level,
      timeout,
      { nodeArgs: opts.nodeArgs, signal: giveUp.signal },
    ),
  ];
  // The first failure ends the other start too (an agent would otherwise wait for a vmm that died).
  for (const p of starting) p.catch((err: Error) => giveUp.abort(err));
  const results = await Promise.allSettled(starting);
  const [vmm, agent] = results.map((r) => (r.status === 'fulfilled' ? r.value : null));
  if (!vmm || !agent) {
    for (const c of [agent, vmm]) {
      if (!c) continue;
      await stopChild(c.child);
      c.closeNotify();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    // The first failure, not the abort it caused in the other start.
    throw giveUp.signal.reason;
  }
  return {
    dir,
    hvsockPath,
    guestDir,
    vmm: vmm.child,
    agent: agent.child,
    stop: async () => {
      await stopChild(agent.child);
      await stopChild(vmm.child);
      agent.closeNotify();
      vmm.closeNotify();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
