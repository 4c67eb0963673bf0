// The backend A/B's summary (ab-report.ts) from boot records built by hand:
// medians with min–max over good boots only, per direction; round-trip
// percentiles per boot then their median; CPU per GiB; per-128 MiB counts
// from the guest's tracepoints; the baseline is the first backend that is
// not ours; failed boots are listed with their kept logs, not averaged in.
import { describe, expect, it } from 'vitest';
import { renderAbMarkdown, summarizeAb } from '../../src/bench/backend-ab/ab-report.js';
import type { BootRecord, TransferRecord } from '../../src/bench/backend-ab/backend-ab.js';

const MiB = 1 << 20;

function transfer(dir: 'g2h' | 'h2g', mibps: number, backendCpu = 0.064): TransferRecord {
  return {
    dir,
    connections: 1,
    mibps,
    cpu: { backend: backendCpu, qemu: 0.5 },
    load: 2,
    interrupts: { 'virtio1-virtqueues': 100 },
    trace: {
      toHost: { '5': { packets: 1024, bytes: 64 * MiB } },
      fromHost: { '6': { packets: 256, bytes: 0 } },
    },
  };
}

function boot(backend: string, round: number, g2h: number[], h2g: number[], rtt: number[]): BootRecord {
  return {
    backend,
    round,
    ok: true,
    transfers: [...g2h.map((v) => transfer('g2h', v)), ...h2g.map((v) => transfer('h2g', v))],
    rtt,
  };
}

describe('summarizeAb', () => {
  const boots: BootRecord[] = [
    boot('passfd-broker', 0, [100, 120], [80, 90], [500, 600, 700]),
    boot('ref', 0, [50, 60], [70, 75], [600, 700, 800]),
    boot('passfd-broker', 1, [110, 130], [85, 95], [400, 500, 600]),
    boot('ref', 1, [55, 65], [72, 74], [700, 800, 900]),
    {
      backend: 'ref',
      round: 2,
      ok: false,
      error: 'no progress within 30 s',
      logs: '/tmp/x.log',
      transfers: [transfer('g2h', 1)],
      rtt: [],
    },
  ];
  const s = summarizeAb(boots, 64 * MiB);

  it('takes medians over good boots only, each direction apart, against the first other backend', () => {
    expect(s.baseline).toBe('ref');
    expect(s.good).toEqual({ 'passfd-broker': 2, ref: 2 });
    const row = (m: string) => s.rows.find((r) => r.metric === m)!;
    expect(row('guest → host throughput').cells['passfd-broker']).toEqual({
      median: 115,
      min: 100,
      max: 130,
      n: 4,
    });
    expect(row('guest → host throughput').cells.ref).toEqual({ median: 57.5, min: 50, max: 65, n: 4 });
    expect(row('host → guest throughput').cells.ref!.median).toBe(73);
    expect(row('64 B round trip p50').cells['passfd-broker']).toMatchObject({ median: 550, n: 2 });
    // 0.064 CPU s over 64 MiB = 1.024 s/GiB; 100 interrupts per 64 MiB = 200 per 128 MiB.
    expect(row('g→h CPU: backend').cells.ref!.median).toBeCloseTo(1.024, 6);
    expect(row('g→h guest virtio interrupts').cells.ref!.median).toBe(200);
    expect(row('g→h guest RW packets').cells.ref!.median).toBe(2048);
    expect(row('g→h mean RW payload').cells.ref!.median).toBe(64);
    expect(row('g→h credit updates (receiver → sender)').cells.ref!.median).toBe(512);
    // No vmm metrics in these records: no vmm rows.
    expect(s.rows.some((r) => r.metric.includes('vmm:'))).toBe(false);
  });

  it('lists the failed boot with its logs, and renders ratios to the baseline', () => {
    expect(s.failures).toEqual([
      { backend: 'ref', round: 2, error: 'no progress within 30 s', logs: '/tmp/x.log' },
    ]);
    const md = renderAbMarkdown(s);
    expect(md).toMatch(/\| metric \| unit \| passfd-broker \| ref \| passfd-broker\/ref \|/);
    expect(md).toMatch(
      /\| guest → host throughput \| MiB\/s \| 115 \(100–130\) \| 57\.5 \(50\.0–65\.0\) \| 2\.00× \|/,
    );
    expect(md).toMatch(/failed boot: ref, round 3: no progress within 30 s \(logs: \/tmp\/x\.log\)/);
  });
});
