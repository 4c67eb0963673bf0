import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuSecondsBetween, parseProcStat, readCpuTicks, snapshot } from '../../src/bench/proc-cpu.js';
import { clockTicksPerSecond } from '../../src/util/proc-stat.js';

describe('/proc/<pid>/stat', () => {
  it('parses a line whose comm holds spaces and parentheses', () => {
    // Fields 14..17 (utime stime cutime cstime) = 11 22 33 44.
    const line = '1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 5 100 10';
    expect(parseProcStat(line)).toEqual({ self: 33, children: 77 });
    expect(() => parseProcStat('garbage')).toThrow();
  });

  it("reads this test process's own CPU and sees it grow under load", () => {
    const text = fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8');
    const parsed = parseProcStat(text);
    expect(parsed.self).toBeGreaterThanOrEqual(0);
    const before = readCpuTicks(process.pid);
    const hz = clockTicksPerSecond();
    expect(hz).toBeGreaterThan(0);
    // Burn at least 5 ticks of CPU, bounded in time.
    const end = Date.now() + 2000;
    let x = 0;
    while (readCpuTicks('self').self - before.self < 5 && Date.now() < end)
      for (let i = 0; i < 1e5; i++) x += i;
    expect(x).toBeGreaterThan(0);
    expect(readCpuTicks(process.pid).self - before.self).toBeGreaterThanOrEqual(5);
  });

  it('attributes deltas per role in seconds', () => {
    const a = snapshot({ broker: 'self', vmm: process.pid, agent: process.pid });
    const b = {
      broker: { self: a.broker.self + 100, children: a.broker.children + 50 },
      vmm: { self: a.vmm.self + 200, children: a.vmm.children },
      agent: { self: a.agent.self + 10, children: a.agent.children + 20 },
    };
    expect(cpuSecondsBetween(a, b, 100)).toEqual({
      broker: 1,
      vmm: 2,
      agent: 0.1,
      workload: 0.2,
      fifoClient: 0.5,
    });
  });
});
