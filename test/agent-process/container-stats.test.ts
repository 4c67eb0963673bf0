/**
 * StatsContainer's figures (src/agent/container-stats.ts) on real
 * processes: a shell with two children, found through the process tree
 * (no PID namespace of their own here), their CPU time, memory and tasks.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { containerPids, containerUsage, parseSmapsRollup } from '../../src/agent/container-stats.js';

const started: ChildProcess[] = [];
afterEach(() => {
  for (const c of started.splice(0)) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

/** `sh` with two `sleep` children, in its own process group; resolves once both children run. */
async function family(): Promise<number> {
  const sh = spawn('sh', ['-c', 'sleep 30 & sleep 30 & echo up; wait'], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  started.push(sh);
  await new Promise((resolve) => sh.stdout!.once('data', resolve));
  return sh.pid!;
}

describe('containerUsage', () => {
  it('counts a process and its descendants: tasks, CPU, memory under the machine’s', async () => {
    const root = await family();
    const pids = containerPids([root], null);
    expect(pids).toContain(root);
    expect(pids).toHaveLength(3);
    const u = containerUsage([root], null);
    expect(u.pids).toEqual(pids);
    expect(u.tasks).toBe(3n);
    expect(u.cpuNs.total).toBe(u.cpuNs.user + u.cpuNs.system);
    expect(u.memory.usage).toBeGreaterThan(0n);
    expect(u.memory.usage).toBe(u.memory.anon + u.memory.file);
    expect(u.memory.usage).toBeLessThan(64n << 20n); // a shell and two sleeps, not this test's Node
    const total = /^MemTotal:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))![1]!;
    expect(u.memory.limit).toBe(BigInt(total) * 1024n);
  });

  it('CPU time a process burnt is counted, in nanoseconds', async () => {
    const busy = spawn(
      'sh',
      ['-c', 'i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; echo done; sleep 30'],
      {
        detached: true,
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    started.push(busy);
    await new Promise((resolve) => busy.stdout!.once('data', resolve));
    const u = containerUsage([busy.pid!], null);
    expect(u.cpuNs.total).toBeGreaterThanOrEqual(10_000_000n); // at least one 10 ms tick
  });

  it('skips processes that are gone; no processes, no usage', () => {
    const u = containerUsage([2 ** 22 + 12345], null);
    expect(u).toMatchObject({ pids: [], tasks: 0n, cpuNs: { total: 0n }, memory: { usage: 0n } });
  });
});

describe('parseSmapsRollup', () => {
  it('takes Pss split into anonymous and file-backed; total only on old kernels; null without Pss', () => {
    const text = 'Rss:  900 kB\nPss:  600 kB\nPss_Anon:  400 kB\nPss_File:  150 kB\nPss_Shmem:  50 kB\n';
    expect(parseSmapsRollup(text)).toEqual({ anon: 400 * 1024, file: 200 * 1024 });
    expect(parseSmapsRollup('Rss:  900 kB\nPss:  600 kB\n')).toEqual({ anon: 600 * 1024, file: 0 });
    expect(parseSmapsRollup('')).toBeNull();
    expect(parseSmapsRollup(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))!.anon).toBeGreaterThan(0);
  });
});
