/**
 * `passfd-broker bench --scenarios containerd` at a tiny size: the scenario
 * runs end to end against its own private containerd (the shim and runc,
 * side by side), reports every figure it should, and leaves nothing
 * behind. Speed itself is not asserted here (bench measures it).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../support/cli.js';
import { requireContainerd } from './support.js';

describe('bench --scenarios containerd', () => {
  it('measures passfd against runc and writes its report', () => {
    requireContainerd();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-bench-ctr-'));
    try {
      const run = spawnSync(
        process.execPath,
        [
          CLI,
          'bench',
          '--scenarios',
          'containerd',
          '--bytes',
          '8MiB',
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
      expect(run.stdout).toContain('io.containerd.passfd.v2');
      const report = JSON.parse(fs.readFileSync(path.join(out, 'containerd.json'), 'utf8'));
      // A failed measurement fails the run (exit 1), and is named in the report.
      expect(run.status, run.stderr).toBe(report.errors.length > 0 ? 1 : 0);
      const metrics = report.rows.map((r: { metric: string }) => r.metric);
      expect(metrics).toEqual(
        expect.arrayContaining([
          'ctr run --rm … true, p50',
          'ctr run --rm … true, p90',
          'ctr run --rm … true, p50, warm spare shims',
        ]),
      );
      expect(report.samples.passfd.startMs).toHaveLength(2);
      expect(report.samples.runc.startMs).toHaveLength(2);
      expect(report.samples.passfd.startSpareMs).toHaveLength(2);
      // Each transfer either measured or named in errors (ctr 1.6.20 can lose a stream's tail; see README).
      for (const rt of ['passfd', 'runc'])
        for (const dir of ['stdout', 'stdin']) {
          const measured = report.samples[rt][`${dir}MiBps`].length;
          const failed = report.errors.filter((e: string) => e.startsWith(`${dir} ${rt}:`)).length;
          expect(measured + failed).toBe(1);
        }
      expect(fs.readFileSync(path.join(out, 'containerd.md'), 'utf8')).toContain('| metric |');
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 320_000);
});
