/**
 * `bench --vm qemu` without a VM: the VM defaults and how explicit options
 * override them, the plan a VM run measures, the VM flags' parsers and
 * combination rules, and the report's QEMU roles and mode in every renderer.
 * The real guest run is in test/vm/bench-vm.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { chartData, chartSpec } from '../../src/bench/chart.js';
import { renderMarkdown } from '../../src/bench/markdown.js';
import { DEFAULT_SCENARIOS, defaultOptions } from '../../src/bench/options.js';
import { cpuSecondsBetween, snapshot } from '../../src/bench/proc-cpu.js';
import { cpuRoleLabels, describeMetric, summarize } from '../../src/bench/results.js';
import { plan } from '../../src/bench/runner.js';
import { renderTable } from '../../src/bench/terminal-table.js';
import { benchOptionsFrom } from '../../src/cli/bench.js';
import {
  MAX_VM_CPUS,
  MIN_VM_MEMORY_MIB,
  parseCpus,
  parseMemoryMiB,
  VM_DEFAULTS,
  vmSpecFrom,
  withKvmHint,
} from '../../src/cli/options.js';
import { tmpDir } from '../support/cli.js';
import { FIXED_RUNS, fixedReport } from './fixtures.js';

const MiB = 1024 * 1024;

describe('VM defaults', () => {
  it('a full VM run is sized for TCG: 64 MiB, 32 MiB per concurrency level, 1 and 4 containers, 5 reps', () => {
    expect(defaultOptions(false, 'qemu')).toEqual({
      // Every default scenario but the host CLI's start-up and the vmm's soak (both can be asked for by name).
      scenarios: DEFAULT_SCENARIOS.filter((s) => s !== 'startup' && s !== 'soak'),
      bytes: 64 * MiB,
      concurrencyBytes: 32 * MiB,
      concurrency: [1, 4],
      reps: 5,
      trips: 1000,
      setups: 10,
      startups: 20,
      soakCycles: 10_000,
      soakHeld: 1000,
      timeoutMs: 300_000,
    });
  });

  it('VM --quick is smaller still, and no VM size exceeds the loopback one', () => {
    const q = defaultOptions(true, 'qemu');
    expect(q).toMatchObject({ bytes: 16 * MiB, concurrencyBytes: 8 * MiB, concurrency: [1, 4], reps: 2 });
    const full = defaultOptions(false, 'qemu');
    for (const k of ['bytes', 'concurrencyBytes', 'reps', 'trips', 'setups'] as const)
      expect(q[k], k).toBeLessThanOrEqual(full[k]);
    // Sizes stay at or under loopback's; repetitions do not: small TCG transfers on a shared machine
    // need more of them for two runs' medians to agree (options.ts).
    for (const k of ['bytes', 'concurrencyBytes', 'trips', 'setups'] as const)
      expect(full[k], k).toBeLessThanOrEqual(defaultOptions(false)[k]);
    // Operations are slower in a TCG guest: the per-operation bound is longer than loopback --quick's.
    expect(q.timeoutMs).toBeGreaterThan(defaultOptions(true).timeoutMs);
  });

  it('loopback defaults are unchanged', () => {
    expect(defaultOptions(false)).toEqual(defaultOptions(false, 'loopback'));
    expect(defaultOptions(true).bytes).toBe(32 * MiB);
    expect(defaultOptions(false).bytes).toBe(1024 * MiB);
  });

  it('--vm qemu picks the VM defaults; explicit options override them', () => {
    const base = { quick: false, json: false, progress: false };
    expect(benchOptionsFrom({ ...base, vm: 'qemu' })).toEqual(defaultOptions(false, 'qemu'));
    expect(benchOptionsFrom({ ...base, quick: true, vm: 'qemu' })).toEqual(defaultOptions(true, 'qemu'));
    expect(benchOptionsFrom(base)).toEqual(defaultOptions(false));
    const o = benchOptionsFrom({
      ...base,
      quick: true,
      vm: 'qemu',
      bytes: '2MiB',
      concurrency: '1,2,8',
      reps: '1',
      trips: '50',
      setups: '3',
      timeout: '45',
      scenarios: 'throughput,setup',
    });
    expect(o).toMatchObject({
      bytes: 2 * MiB,
      // --bytes without --concurrency-bytes sets both, as in loopback mode.
      concurrencyBytes: 2 * MiB,
      concurrency: [1, 2, 8],
      reps: 1,
      trips: 50,
      setups: 3,
      timeoutMs: 45_000,
      scenarios: ['throughput', 'setup'],
    });
    expect(() => benchOptionsFrom({ ...base, vm: 'qemu', reps: '0' })).toThrow(
      /--reps must be a positive integer/,
    );
  });
});

describe('VM plan', () => {
  it('runs every scenario on both paths, alternating, with the host kernel ceiling', () => {
    const opts = defaultOptions(true, 'qemu');
    const steps = plan(opts);
    // First an untimed warm-up per path, then per rep: 1 ceiling + 2 × (stdout, stdin, latency,
    // setup, one per concurrency level).
    const perRep = 1 + 2 * (4 + opts.concurrency.length);
    expect(steps).toHaveLength(2 + opts.reps * perRep);
    expect(steps.slice(0, 2).map((s) => [s.scenario, s.path, s.warmup])).toEqual([
      ['warm-up', 'passfd', true],
      ['warm-up', 'rpc', true],
    ]);
    expect(steps.slice(2).some((s) => s.warmup)).toBe(false);
    expect(new Set(steps.map((s) => s.scenario))).toEqual(
      new Set(['warm-up', 'ceiling', 'throughput', 'latency', 'setup', 'concurrency']),
    );
    const ceiling = steps.filter((s) => s.scenario === 'ceiling');
    expect(ceiling.map((s) => s.path)).toEqual(Array(opts.reps).fill('kernel'));
    expect(ceiling[0]!.label).toMatch(/host/);
    const firstPaths = (rep: number) =>
      steps.filter((s) => s.rep === rep && s.path !== 'kernel' && !s.warmup)[0]!.path;
    expect(firstPaths(0)).toBe('passfd');
    expect(firstPaths(1)).toBe('rpc');
    expect(steps.filter((s) => s.scenario === 'concurrency').map((s) => s.label)).toContain(
      '4 containers passfd (rep 1)',
    );
  });
});

describe('VM flags', () => {
  it('parse positive integers, rejecting anything else with a reason', () => {
    expect(parseCpus('2')).toBe(2);
    expect(parseCpus(String(MAX_VM_CPUS))).toBe(MAX_VM_CPUS);
    expect(parseMemoryMiB('512')).toBe(512);
    expect(parseMemoryMiB(String(MIN_VM_MEMORY_MIB))).toBe(MIN_VM_MEMORY_MIB);
    for (const bad of ['0', '-1', '1.5', 'abc', '', ' 2', '2 ', '0x10', '1e3', '01'])
      expect(() => parseCpus(bad), bad).toThrow(/must be a positive integer/);
    expect(() => parseCpus(String(MAX_VM_CPUS + 1))).toThrow(/at most 255/);
    for (const bad of ['0', '-512', '512.5', '512M', '1GiB'])
      expect(() => parseMemoryMiB(bad), bad).toThrow(/must be a positive integer/);
    expect(() => parseMemoryMiB('64')).toThrow(/at least 128/);
    // commander turns these into "option '--cpus <n>' argument '0' is invalid. <reason>" and exit 1.
    expect(() => parseCpus('0')).toThrow(InvalidArgumentError);
  });

  it('without --vm: no VM; --accel/--cpus/--memory alone are an error naming the flags', () => {
    expect(vmSpecFrom({})).toBeNull();
    expect(() => vmSpecFrom({ cpus: 2 })).toThrow('--cpus requires --vm qemu');
    expect(() => vmSpecFrom({ accel: 'tcg', memory: 256 })).toThrow('--accel, --memory require --vm qemu');
  });

  it('--vm qemu resolves the defaults (tcg, 1 vCPU, 1024 MiB) and takes explicit values', () => {
    expect(vmSpecFrom({ vm: 'qemu' })).toEqual(VM_DEFAULTS);
    expect(VM_DEFAULTS).toEqual({ accel: 'tcg', cpus: 1, memoryMiB: 1024 });
    expect(vmSpecFrom({ vm: 'qemu', cpus: 2, memory: 256 })).toEqual({
      accel: 'tcg',
      cpus: 2,
      memoryMiB: 256,
    });
  });

  it('--accel kvm needs a usable KVM device, checked before anything starts', () => {
    const dir = tmpDir('passfd-vmflags-');
    const missing = path.join(dir, 'kvm');
    expect(() => vmSpecFrom({ vm: 'qemu', accel: 'kvm' }, missing)).toThrow(
      /--accel kvm needs .*kvm \(ENOENT\); use --accel tcg/,
    );
    // A regular file stands in for a device node the caller may open: the check is access(2) only.
    fs.writeFileSync(missing, '');
    expect(vmSpecFrom({ vm: 'qemu', accel: 'kvm' }, missing)).toMatchObject({ accel: 'kvm' });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a guest that did not start under KVM gets the hint to use TCG; under TCG the error is untouched', () => {
    const err = new Error('QEMU exited (134) before the agent was ready');
    expect(withKvmHint(err, { ...VM_DEFAULTS, accel: 'kvm' }).message).toMatch(
      /^QEMU exited \(134\) before the agent was ready\n--accel kvm: KVM fails or hangs .*--accel tcg works everywhere$/,
    );
    expect(withKvmHint(err, VM_DEFAULTS)).toBe(err);
  });
});

describe('report of a QEMU run', () => {
  const report = fixedReport('qemu');

  it('labels the CPU roles of a guest: vmm is the vhost-user device, qemu is kernel + agent + process', () => {
    expect(cpuRoleLabels('qemu')).toEqual({
      broker: 'broker (bench process)',
      vmm: 'vmm (vhost-user device)',
      qemu: 'qemu (guest: kernel + agent + process)',
      fifoClient: 'FIFO client (dd/wc)',
    });
    expect(cpuRoleLabels('loopback')).toHaveProperty('agent', 'agent');
    expect(describeMetric('stdin.cpu.qemu', 'qemu')?.label).toBe(
      'stdin: qemu (guest: kernel + agent + process)',
    );
    expect(describeMetric('stdin.cpu.vmm', 'qemu')?.label).toBe('stdin: vmm (vhost-user device)');
    expect(describeMetric('stdin.cpu.vmm')?.label).toBe('stdin: vmm (device + guest stack)');
    // Roles in data-path order: broker, vmm, qemu, FIFO client.
    const { rows } = summarize(
      [
        {
          scenario: 'throughput',
          path: 'passfd',
          rep: 0,
          metrics: {
            'stdout.cpu.fifoClient': 1,
            'stdout.cpu.qemu': 2,
            'stdout.cpu.vmm': 3,
            'stdout.cpu.broker': 4,
          },
        },
      ],
      'qemu',
    );
    expect(rows.map((r) => r.key)).toEqual([
      'stdout.cpu.broker',
      'stdout.cpu.vmm',
      'stdout.cpu.qemu',
      'stdout.cpu.fifoClient',
    ]);
  });

  it('measures broker, vmm, qemu and FIFO clients from /proc, and no agent or workload', () => {
    const a = snapshot({ broker: 'self', vmm: process.pid, qemu: process.pid });
    const b = {
      broker: { self: a.broker.self + 100, children: a.broker.children + 50 },
      vmm: { self: a.vmm.self + 200, children: a.vmm.children },
      qemu: { self: a.qemu.self + 300, children: a.qemu.children + 7 },
    };
    expect(cpuSecondsBetween(a, b, 100)).toEqual({ broker: 1, vmm: 2, qemu: 3, fifoClient: 0.5 });
  });

  it('Markdown states the mode, the guest, the boot time and that the ceiling is the host', () => {
    const md = renderMarkdown(report);
    expect(md).toContain('# passfd-broker bench: passfd vs RPC-copy in a QEMU guest');
    expect(md).toContain('Mode: **QEMU guest, TCG**: 1 vCPU, 1024 MiB, guest kernel 6.1.0-test-amd64');
    expect(md).toContain('21.5 s');
    expect(md).toContain('Kernel ceiling (host, not the guest:');
    expect(md).toContain('| stdout: qemu (guest: kernel + agent + process) | CPU s/GiB |');
    expect(md).not.toContain('| stdout: agent');
    const loop = renderMarkdown(fixedReport());
    expect(loop).toContain('Mode: **loopback**');
    expect(loop).not.toContain('QEMU');
  });

  it('the terminal table names the mode and the host ceiling', () => {
    const t = renderTable(report);
    expect(t.split('\n')[0]).toBe(
      'mode: QEMU guest (TCG, 1 vCPU, 1024 MiB, guest kernel 6.1.0-test-amd64, booted in 21.5 s)',
    );
    expect(t).toContain('kernel pipe-relay ceiling (measured on the host): 1100 MiB/s');
    expect(renderTable(fixedReport()).split('\n')[0]).toMatch(/^mode: loopback/);
  });

  it('the chart keeps the whole qemu role label and marks the ceiling as the host one', () => {
    const data = chartData(report);
    const roles = new Set(data.filter((d) => d.panel === 'cpu').map((d) => d.role));
    expect(roles).toContain('qemu (guest: kernel + agent + process)');
    expect(data.filter((d) => d.panel === 'cpu').map((d) => d.metric)).toContain('stdout passfd');
    expect(data).toContainEqual({
      panel: 'throughput',
      metric: 'stdout throughput',
      path: 'kernel ceiling (host)',
      value: 1100,
    });
    expect(JSON.stringify(chartSpec(report).title)).toContain('QEMU TCG guest (1 vCPU, 1024 MiB)');
  });

  it('the JSON report carries the mode, the guest and the role map', () => {
    expect(report.meta).toMatchObject({ mode: 'qemu', vm: { accel: 'tcg', cpus: 1, memoryMiB: 1024 } });
    expect(Object.keys(report.meta.roles)).toEqual(['broker', 'vmm', 'qemu', 'fifoClient']);
    expect(FIXED_RUNS.some((r) => 'stdout.cpu.qemu' in r.metrics)).toBe(false);
    expect(report.runs.some((r) => 'stdout.cpu.qemu' in r.metrics)).toBe(true);
  });
});
