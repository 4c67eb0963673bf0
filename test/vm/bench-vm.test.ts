/**
 * `bench --vm qemu` and the VM flags on the built CLI against a real QEMU
 * guest (TCG). Kept small: one `bench --vm qemu --quick` with tiny sizes and
 * one repetition (both IO paths must produce figures in every scenario, and
 * the report must carry the guest's CPU roles and mode), and one `run --vm
 * qemu --cpus 2 --memory 256` whose guest reports those. Shape, not speed.
 * Needs `npm run build`; fails, never skips, when QEMU or the kernel is missing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { Captured, exited, spawnCli, stopAll, tmpDir } from '../support/cli.js';

afterAll(stopAll);

interface Row {
  key: string;
  passfd: number | null;
  rpc: number | null;
}

it('bench --vm qemu --quick: both paths measured in the guest, qemu CPU role, mode in every output', async () => {
  const out = tmpDir('passfd-bench-vm-');
  const child = spawnCli(
    [
      'bench',
      '--vm',
      'qemu',
      '--memory',
      '512',
      '--quick',
      '--bytes',
      '2MiB',
      '--concurrency',
      '1,2',
      '--reps',
      '1',
      '--trips',
      '50',
      '--setups',
      '3',
      '--json',
      '--no-progress',
      '--out',
      out,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PASSFD_LOG: 'warn' } },
  );
  const stdout = new Captured(child.stdout);
  const stderr = new Captured(child.stderr);
  const { code } = await exited(child, 300_000);
  expect(code, stderr.text).toBe(0);
  const report = JSON.parse(stdout.text);
  expect(report.errors, stderr.text).toEqual([]);
  expect(report.meta).toMatchObject({
    mode: 'qemu',
    vm: { accel: 'tcg', cpus: 1, memoryMiB: 512 },
    roles: { qemu: 'qemu (guest: kernel + agent + process)', vmm: 'vmm (vhost-user device)' },
  });
  expect(report.meta.vm.bootS).toBeGreaterThan(0);
  expect(report.meta.vm.guestKernel).toMatch(/\S/);
  expect(report.options).toMatchObject({ bytes: 2 * 1024 * 1024, concurrency: [1, 2], reps: 1 });

  const row = (key: string): Row => report.summary.find((r: Row) => r.key === key);
  const keys = [
    'stdout.mibps',
    'stdin.mibps',
    'rtt.p50',
    'setup.p50',
    'conc1.mibps',
    'conc2.mibps',
    'stdout.cpu.qemu',
    'stdin.cpu.qemu',
    'stdout.cpu.broker',
    'stdout.cpu.vmm',
  ];
  for (const key of keys) {
    expect(row(key), key).toBeDefined();
    expect(row(key).passfd, key).not.toBeNull();
    expect(row(key).rpc, key).not.toBeNull();
  }
  for (const key of keys.filter((k) => !k.includes('.cpu.'))) {
    expect(row(key).passfd, key).toBeGreaterThan(0);
    expect(row(key).rpc, key).toBeGreaterThan(0);
  }
  // Over 2 MiB a process moving bytes through an emulated guest spends at least a tick.
  expect(row('stdout.cpu.qemu').rpc).toBeGreaterThan(0);
  // The agent and the container process are inside QEMU: no host-side agent/workload roles.
  expect(report.summary.some((r: Row) => /\.cpu\.(agent|workload)$/.test(r.key))).toBe(false);
  expect(report.ceilingMiBps).toBeGreaterThan(0);
  expect(new Set(report.runs.map((r: { path: string }) => r.path))).toEqual(
    new Set(['passfd', 'rpc', 'kernel']),
  );

  const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
  expect(md).toContain('Mode: **QEMU guest, TCG**: 1 vCPU, 512 MiB');
  expect(md).toContain('| stdout: qemu (guest: kernel + agent + process) |');
  expect(fs.readFileSync(path.join(out, 'chart.svg'), 'utf8')).toContain('kernel ceiling (host)');
  fs.rmSync(out, { recursive: true, force: true });
}, 330_000);

it('run --vm qemu --cpus 2 --memory 256: the guest has 2 CPUs and 256 MiB', async () => {
  const child = spawnCli(
    [
      'run',
      '--vm',
      'qemu',
      '--cpus',
      '2',
      '--memory',
      '256',
      '--',
      'sh',
      '-c',
      'nproc; grep MemTotal /proc/meminfo',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PASSFD_LOG: 'warn' } },
  );
  const stdout = new Captured(child.stdout);
  const stderr = new Captured(child.stderr);
  const { code } = await exited(child, 240_000);
  expect(code, stderr.text).toBe(0);
  const m = /^(\d+)\nMemTotal:\s+(\d+) kB\n$/.exec(stdout.text);
  expect(m, stdout.text).not.toBeNull();
  expect(Number(m![1])).toBe(2);
  // What the kernel reports is the RAM minus what it reserved: under 256 MiB, well over 128.
  const kib = Number(m![2]);
  expect(kib).toBeLessThanOrEqual(256 * 1024);
  expect(kib).toBeGreaterThan(160 * 1024);
}, 270_000);
