/**
 * Pins down that on the passfd path the broker is out of the data path: the
 * broker lives in this test process, and while this process's event loop is
 * blocked (a 2 s busy loop) in the middle of a transfer whose FIFO end is
 * held by ANOTHER process, bytes keep flowing, in both directions.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited } from '../support/cli.js';
import {
  type E2e,
  fileSize,
  MiB,
  makeFifos,
  Pattern,
  removeFifos,
  sha256Hex,
  startE2e,
  waitUntil,
} from './support.js';

/** Blocks this process's event loop for `ms`; returns `probe()` sampled at the start and the end. */
function blockEventLoop(ms: number, probe: () => number): { start: number; end: number } {
  const start = probe();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy: no I/O callback, no timer, no promise job of this process runs
  }
  return { start, end: probe() };
}

function sh(script: string): ChildProcess {
  return spawn('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'] });
}

describe('passfd: the broker is not on the data path', () => {
  let e: E2e;
  let pat: Pattern;
  // ~1 MiB per 30 ms: a transfer of several seconds, so the block falls in its middle.
  const blocks = 160;
  beforeAll(async () => {
    e = await startE2e(true);
    pat = new Pattern(e.dir, 'p');
  });
  afterAll(async () => {
    await e?.stop();
  });

  it('stdout keeps flowing into another process while the broker is blocked', {
    timeout: 60_000,
  }, async () => {
    const id = e.nextId();
    const fifos = makeFifos(e.dir, id);
    const proc = await e.broker.start({
      containerId: id,
      args: ['sh', '-c', pat.shell(blocks, { pause: '0.03' })],
      fifos,
    });
    const out = path.join(e.dir, `${id}.out`);
    const reader = sh(`cat '${fifos.stdout}' > '${out}'`);
    await proc.closeStdin();
    await waitUntil(() => fileSize(out) >= 8 * MiB, 20_000, 'output reaching 8 MiB');
    const during = blockEventLoop(2000, () => fileSize(out));
    const grew = during.end - during.start;
    expect(grew, `bytes that reached the reader while the broker was blocked: ${grew}`).toBeGreaterThan(
      4 * MiB,
    );
    expect(await proc.wait()).toBe(0);
    expect(await exited(reader)).toEqual({ code: 0, signal: null });
    expect(fileSize(out)).toBe(pat.size(blocks));
    expect(sha256Hex(fs.readFileSync(out))).toBe(pat.hash(blocks));
    removeFifos(fifos);
  });

  it('stdin keeps flowing from another process while the broker is blocked', {
    timeout: 60_000,
  }, async () => {
    const id = e.nextId();
    const fifos = makeFifos(e.dir, id);
    const out = path.join(e.dir, `${id}.in`);
    const proc = await e.broker.start({ containerId: id, args: ['sh', '-c', `cat > '${out}'`], fifos });
    const writer = sh(`{ ${pat.shell(blocks, { pause: '0.03' })}; } > '${fifos.stdin}'`);
    await waitUntil(() => fileSize(out) >= 8 * MiB, 20_000, 'input reaching 8 MiB');
    const during = blockEventLoop(2000, () => fileSize(out));
    const grew = during.end - during.start;
    expect(grew, `bytes that reached the process while the broker was blocked: ${grew}`).toBeGreaterThan(
      4 * MiB,
    );
    expect(await exited(writer)).toEqual({ code: 0, signal: null });
    await proc.closeStdin();
    expect(await proc.wait()).toBe(0);
    expect(fileSize(out)).toBe(pat.size(blocks));
    expect(sha256Hex(fs.readFileSync(out))).toBe(pat.hash(blocks));
    removeFifos(fifos);
  });
});
