/**
 * `passfd-broker bench --scenarios cri` at a tiny size: the scenario runs
 * end to end against its own private containerd with the CRI plugin (the
 * shim on both IO paths and runc, side by side), reports every figure it
 * should, writes its report and leaves nothing behind. Speed itself is not
 * asserted here (bench measures it).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../support/cli.js';
import { requireContainerd } from './support.js';

describe('bench --scenarios cri', () => {
  it('measures pods on passfd, RPC-copy and runc and writes its report', () => {
    requireContainerd();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-bench-cri-'));
    const before = fs
      .readdirSync(os.tmpdir())
      .filter((f) => f.startsWith('pfd-ctrd-') || f.startsWith('passfd-bench-'));
    try {
      const run = spawnSync(
        process.execPath,
        [
          CLI,
          'bench',
          '--scenarios',
          'cri',
          '--bytes',
          '2MiB',
          '--reps',
          '1',
          '--starts',
          '2',
          '--no-progress',
          '--out',
          out,
        ],
        { encoding: 'utf8', timeout: 300_000 },
      );
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toContain('| log throughput (median) | MiB/s |');
      const report = JSON.parse(fs.readFileSync(path.join(out, 'cri.json'), 'utf8'));
      expect(report.errors).toEqual([]);
      expect(report.rows.map((r: { metric: string }) => r.metric)).toEqual([
        'log throughput (median)',
        'RunPodSandbox → ready, p50',
        'RunPodSandbox → ready, p90',
        'CreateContainer + StartContainer → running, p50',
        'CreateContainer + StartContainer → running, p90',
      ]);
      for (const h of ['passfd', 'passfd-rpc', 'runc']) {
        expect(report.samples[h].logMiBps).toHaveLength(1);
        expect(report.samples[h].podStartMs).toHaveLength(2);
        expect(report.samples[h].containerStartMs).toHaveLength(2);
      }
      expect(fs.readFileSync(path.join(out, 'cri.md'), 'utf8')).toContain(
        '| metric | unit | passfd | passfd-rpc | runc |',
      );
      // The private containerd and the bench's pod directories are gone.
      const after = fs
        .readdirSync(os.tmpdir())
        .filter((f) => f.startsWith('pfd-ctrd-') || f.startsWith('passfd-bench-'));
      expect(after.filter((f) => !before.includes(f))).toEqual([]);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 320_000);
});
