/**
 * The embedded stack `run` and `bench` start when no VMM is given: a `vmm`
 * process (hybrid-vsock device + loopback guest) and an `agent` process in
 * that guest, as child processes of this one, in a private directory.
 *
 * Each is started with src/util/ready-child.ts (ready on its sd_notify
 * READY=1); children log warnings to our stderr.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { type ReadyChild, startReady, stopChild } from '../util/ready-child.js';

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
}

export async function startEmbeddedStack(opts: StackOptions): Promise<EmbeddedStack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-run-'));
  const hvsockPath = path.join(dir, 'hvsock.sock');
  const guestDir = path.join(dir, 'guest');
  const level = opts.logLevel ?? 'warn';
  const timeout = opts.startTimeoutMs ?? 20_000;
  const rt = opts.config.runtime;
  const cid = String(opts.config.hypervisor.guest_cid);
  let vmm: ReadyChild | null = null;
  try {
    vmm = await startReady(
      ['vmm', '--hvsock', hvsockPath, '--guest-dir', guestDir, '--guest-cid', cid],
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
