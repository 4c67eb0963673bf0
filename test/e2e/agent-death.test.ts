/**
 * The agent dies (SIGKILL) while a process streams output, on both IO paths:
 * `wait()` rejects promptly instead of hanging, and the broker lets go of
 * the FIFOs, so containerd's readers see EOF (the passed copies are closed by
 * the device when the guest side resets, the keepers and RPC copiers by the
 * broker) and the broker process holds no fd of the session afterwards.
 * Each path gets its own stack: the test kills its agent.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { type E2e, finishSession, IO_PATHS, MiB, startE2e, startSession, withTimeout } from './support.js';

const openFds = () => fs.readdirSync('/proc/self/fd').length;

describe.each(IO_PATHS)('$name: the agent is killed mid-transfer', ({ passfd }) => {
  let e: E2e | null = null;
  afterEach(async () => {
    await e?.stop();
    e = null;
  });

  it('wait() rejects within seconds and the FIFO readers see EOF; no fd of the session is left', async () => {
    e = await startE2e(passfd);
    const before = openFds();
    const s = await startSession(e, ['sh', '-c', 'echo started >&2; exec yes passfd']);
    const waited = s.proc.wait().then(
      (status) => ({ status }),
      (err: Error) => ({ error: err.message, at: Date.now() }),
    );
    await s.stdout.atLeast(MiB, 20_000);
    const killedAt = Date.now();
    e.stack.agent.kill('SIGKILL');
    const r = (await withTimeout(waited, 15_000, 'wait() after the agent died')) as {
      status?: number;
      error?: string;
      at?: number;
    };
    expect(r.status, 'no exit status for a process whose agent died').toBeUndefined();
    expect(r.error).toMatch(/closed|reset|ECONNRESET|EPIPE/i);
    expect(r.at! - killedAt).toBeLessThan(10_000);
    const out = await withTimeout(s.stdout.done, 15_000, 'stdout EOF after the agent died');
    expect(out.bytes).toBeGreaterThanOrEqual(MiB);
    await withTimeout(s.stderr!.done, 15_000, 'stderr EOF after the agent died');
    finishSession(s);
    // The keepers, the RPC copiers' FIFO ends and the ttrpc connection are gone.
    await e.broker.close();
    expect(openFds()).toBeLessThanOrEqual(before);
  }, 60_000);
});
