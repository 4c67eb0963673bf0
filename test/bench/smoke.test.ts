/**
 * Real runs of the built CLI: `bench --quick` with two scenarios and small
 * sizes, and the start-up scenario alone. Checks shape, not speed: both
 * paths are present with positive figures and the files exist. Speed is for
 * the benchmark to measure, not for a test to assert.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, exited, stopAll, tmpDir } from '../support/cli.js';

afterAll(stopAll);

/** `passfd-broker bench --json <args>`: its parsed report, once it exited 0 with no failed run. */
async function bench(args: string[]) {
  const child = spawn(process.execPath, [CLI, 'bench', '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PASSFD_LOG: 'warn' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const { code } = await exited(child, 90_000);
  expect(code, stderr).toBe(0);
  const report = JSON.parse(stdout);
  expect(report.errors, stderr).toEqual([]);
  return report;
}

describe('passfd-broker bench (built CLI)', () => {
  it('runs both IO paths and writes JSON, Markdown and SVG', async () => {
    const out = tmpDir('passfd-bench-smoke-');
    const prof = path.join(out, 'profiles');
    const report = await bench([
      '--quick',
      '--scenarios',
      'throughput,latency',
      '--bytes',
      '8MiB',
      '--reps',
      '1',
      '--trips',
      '200',
      '--out',
      out,
      '--cpu-prof',
      prof,
    ]);
    const row = (key: string) => report.summary.find((r: { key: string }) => r.key === key);
    for (const key of ['stdout.mibps', 'stdin.mibps', 'rtt.p50', 'rtt.p99']) {
      expect(row(key), key).toBeDefined();
      expect(row(key).passfd, key).toBeGreaterThan(0);
      expect(row(key).rpc, key).toBeGreaterThan(0);
      expect(row(key).ratio, key).toBeGreaterThan(0);
    }
    const paths = new Set(report.runs.map((r: { path: string }) => r.path));
    expect(paths).toEqual(new Set(['passfd', 'rpc']));
    // The untimed warm-up ran (nothing failed) and is in no figure.
    expect(report.errors).toEqual([]);
    expect(report.runs.some((r: { scenario: string }) => r.scenario === 'warm-up')).toBe(false);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).summary).toHaveLength(
      report.summary.length,
    );
    expect(fs.readFileSync(path.join(out, 'results.md'), 'utf8')).toContain('| stdout throughput |');
    expect(fs.readFileSync(path.join(out, 'chart.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    // One profile per child (vmm, agent), written as each exits; the device's
    // packet handling shows in one, the agent's splice pump in the other.
    const profiles = fs.readdirSync(prof).filter((f) => f.endsWith('.cpuprofile'));
    expect(profiles).toHaveLength(2);
    const functions = profiles.map(
      (f) =>
        new Set(
          (
            JSON.parse(fs.readFileSync(path.join(prof, f), 'utf8')) as {
              nodes: { callFrame: { functionName: string } }[];
            }
          ).nodes.map((n) => n.callFrame.functionName),
        ),
    );
    expect(functions.some((fns) => fns.has('handlePacket'))).toBe(true);
    expect(functions.some((fns) => fns.has('spliceFd'))).toBe(true);
    fs.rmSync(out, { recursive: true, force: true });
  }, 120_000);

  it('the start-up scenario alone: every CLI probe beside node -e 0, no stack started', async () => {
    const report = await bench(['--scenarios', 'startup', '--startups', '2']);
    expect(report.summary).toEqual([]);
    expect(report.runs).toEqual([]);
    const rows = report.startup as {
      key: string;
      until: string;
      wallP50Ms: number;
      cpuP50Ms: number;
      vsNode: number;
      n: number;
    }[];
    expect(rows.map((r) => [r.key, r.until])).toEqual([
      ['node', 'exit'],
      ['help', 'exit'],
      ['run', 'exit'],
      ['vmm', 'ready'],
      ['agent', 'ready'],
    ]);
    for (const r of rows) {
      expect(r.n, r.key).toBe(2);
      expect(r.wallP50Ms, r.key).toBeGreaterThan(0);
      expect(r.cpuP50Ms, r.key).toBeGreaterThanOrEqual(0);
    }
    expect(rows[0]!.vsNode).toBe(1);
  }, 120_000);

  it("the soak scenario alone: the vmm's RSS and fds through a storm, held connections and release", async () => {
    const report = await bench(['--scenarios', 'soak', '--soak-cycles', '600', '--soak-held', '100']);
    expect(report.errors).toEqual([]);
    const s = report.soak as {
      cycles: number;
      held: number;
      baseline: { rssMiB: number; fds: number };
      holding: { rssMiB: number; fds: number };
      after: { rssMiB: number; fds: number };
      stormPeakMiB: number;
      perConnectionFds: number;
      leftFds: number;
    };
    expect([s.cycles, s.held]).toEqual([600, 100]);
    expect(s.baseline.rssMiB).toBeGreaterThan(10);
    expect(s.stormPeakMiB).toBeGreaterThanOrEqual(s.baseline.rssMiB);
    // An idle CONNECT stream costs the loopback vmm its client socket and the guest-side socketpair end.
    expect(s.perConnectionFds).toBe(2);
    expect(s.holding.fds - s.baseline.fds).toBe(200);
    expect(s.leftFds, JSON.stringify(s)).toBe(0);
  }, 180_000);
});
