/**
 * Pins down that running processes does not leak: after 200 runs in a row
 * (broker.start + closeStdin + wait of `true` / `echo x`, on both IO paths)
 * through one vmm + agent, their fd counts are back to the baseline taken
 * after a warm-up, the agent has no child process left, and once the broker
 * has closed its agent connection the vmm's SIGUSR2 dump shows 0 device and
 * 0 guest connections.
 *
 * The vmm and agent here are the same CLI roles `startEmbeddedStack` starts,
 * spawned by the test itself so that the vmm's log (the SIGUSR2 dump) can be
 * read: the embedded stack hands its children this process's stderr.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker/broker.js';
import { createLogger } from '../../src/util/log.js';
import {
  Captured,
  fdCount,
  fdsSettle,
  spawnCli,
  startVmm,
  stopAll,
  stopChild,
  tmpDir,
  type Vmm,
} from '../support/cli.js';
import { childPids, e2eConfig, makeFifos, removeFifos, waitUntil } from './support.js';

let vmm: Vmm;
let agentPid: number;
let stopAgent: () => Promise<unknown>;

beforeAll(async () => {
  vmm = await startVmm();
  const agent = spawnCli(['agent', '--guest-dir', vmm.guestDir], {
    env: { ...process.env, PASSFD_LOG: 'info' },
  });
  await new Captured(agent.stderr).waitFor(/agent ready/);
  agentPid = agent.pid!;
  stopAgent = () => stopChild(agent);
});

afterAll(async () => {
  await stopAgent?.();
  await stopAll();
  if (vmm) fs.rmSync(vmm.dir, { recursive: true, force: true });
});

/** SIGUSR2 the vmm; resolves the connection counts of the dump it logs. */
async function dumpCounts(): Promise<{ device: number; guest: number }> {
  const seen = (vmm.log.text.match(/guest connections \(\d+\)/g) ?? []).length;
  vmm.child.kill('SIGUSR2');
  // The (seen+1)-th "guest connections (N)" line ends this dump.
  await vmm.log.waitFor(new RegExp(`(?:guest connections \\(\\d+\\)[\\s\\S]*?){${seen + 1}}`), 5000);
  const device = [...vmm.log.text.matchAll(/device connections \((\d+)\)/g)].at(-1)!;
  const guest = [...vmm.log.text.matchAll(/guest connections \((\d+)\)/g)].at(-1)!;
  return { device: Number(device[1]), guest: Number(guest[1]) };
}

describe.each([
  { name: 'passfd', passfd: true },
  { name: 'rpc', passfd: false },
])('200 runs over $name', ({ passfd }) => {
  it('leave no fds, no child processes, no connections behind', { timeout: 120_000 }, async () => {
    const config = e2eConfig(passfd);
    const broker = new Broker({ hvsockPath: vmm.hvsock, config, log: createLogger('e2e-broker') });
    const dir = tmpDir('passfd-leaks-');
    let n = 0;
    const once = async () => {
      const id = `leak-${passfd ? 'p' : 'r'}-${n++}`;
      const fifos = makeFifos(dir, id);
      const proc = await broker.start({
        containerId: id,
        args: n % 2 ? ['true'] : ['echo', 'x'],
        fifos,
      });
      await proc.closeStdin();
      expect(await proc.wait()).toBe(0);
      removeFifos(fifos);
    };
    for (let i = 0; i < 10; i++) await once();
    const base = { vmm: fdCount(vmm.pid), agent: fdCount(agentPid) };
    for (let i = 0; i < 200; i++) await once();
    expect(await fdsSettle(vmm.pid, base.vmm), 'vmm fds').toBeLessThanOrEqual(base.vmm);
    expect(await fdsSettle(agentPid, base.agent), 'agent fds').toBeLessThanOrEqual(base.agent);
    await waitUntil(() => childPids(agentPid).length === 0, 5000, 'agent children to go').catch(() => {});
    expect(childPids(agentPid), 'agent child processes').toEqual([]);

    await broker.close();
    let counts = await dumpCounts();
    const end = Date.now() + 5000;
    while ((counts.device !== 0 || counts.guest !== 0) && Date.now() < end) counts = await dumpCounts();
    expect(counts).toEqual({ device: 0, guest: 0 });
    expect(fdCount(vmm.pid)).toBeLessThan(base.vmm);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
