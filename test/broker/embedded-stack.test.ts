// The embedded stack starts its vmm and agent at the same time, the agent
// waiting (event-driven) for the vmm's stand-in socket; a child that fails
// ends the other's start at once (no wait for a bound), and nothing is left
// running or on disk. Real CLI children from dist/.

import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startEmbeddedStack } from '../../src/broker/embedded-stack.js';
import { defaultConfig } from '../../src/config/schema.js';
import { startReady, stopChild } from '../../src/util/ready-child.js';
import { tmpDir } from '../support/cli.js';

/** This process's live children (pid → command line): what a start left running. */
function ourChildren(): Map<number, string> {
  const out = new Map<number, string>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    const text = fs.readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim();
    for (const pid of text ? text.split(/\s+/).map(Number) : []) {
      try {
        out.set(pid, fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

describe('embedded stack start', () => {
  it('an agent started before its vmm waits for the stand-in and both reach READY', async () => {
    const dir = tmpDir('passfd-stack-order-');
    const guestDir = path.join(dir, 'guest');
    const agent = startReady(
      ['agent', '--guest-dir', guestDir, '--standin-wait-ms', '20000'],
      dir,
      'agent',
      'warn',
      20_000,
    );
    const vmm = await startReady(
      ['vmm', '--hvsock', path.join(dir, 'h.sock'), '--guest-dir', guestDir],
      dir,
      'vmm',
      'warn',
      20_000,
    );
    const a = await agent;
    await stopChild(a.child);
    await stopChild(vmm.child);
    a.closeNotify();
    vmm.closeNotify();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('without --standin-wait-ms an agent with no vmm fails at once, naming the socket', async () => {
    const dir = tmpDir('passfd-stack-novmm-');
    let stderr = '';
    const err = await startReady(
      ['agent', '--guest-dir', path.join(dir, 'guest')],
      dir,
      'agent',
      'warn',
      20_000,
      {
        onStderr: (d) => {
          stderr += d.toString();
        },
      },
    ).catch((e: unknown) => e);
    expect((err as Error).message).toBe('agent exited before it was ready (exit 1)');
    expect(stderr).toContain(
      `vsock stand-in at ${path.join(dir, 'guest', 'vsock.sock')}: ENOENT (is the vmm running?)`,
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a child that fails ends the whole start: the error is its own, nothing keeps running', async () => {
    const before = ourChildren();
    const t0 = performance.now();
    const err = await startEmbeddedStack({
      config: defaultConfig(),
      agentArgs: ['--no-such-flag'],
      startTimeoutMs: 60_000,
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('agent exited before it was ready (exit 1)');
    // Not a speed assertion: the vmm's start was abandoned, not waited out to its 60 s bound.
    expect(performance.now() - t0).toBeLessThan(30_000);
    const left = [...ourChildren()].filter(([pid]) => !before.has(pid));
    expect(left).toEqual([]);
  });
});
