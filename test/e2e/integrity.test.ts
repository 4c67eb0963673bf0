/**
 * Pins down byte-exact stdio through the whole stack (broker → vmm device →
 * loopback guest → agent → process), on both IO paths: stdin, stdout and
 * stderr each, then all three at once, compared by SHA-256.
 *
 * Sizes: stdin and stdout carry 1 GiB each on both paths (the project's
 * integrity bar: SHA-256 of at least 1 GiB each way). stderr and the all-three test use 256 MiB per stream on passfd. On the RPC-copy path every 32 KiB
 * chunk is a ttrpc request through the broker and the agent (it was also
 * superlinear in the transfer size before 98e2324: 64 MiB of stdout took
 * 15 s), so 64 MiB per stream there: still thousands of requests, every
 * buffer on the way filled and drained many times, at a fraction of the time.
 */

import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type E2e, endStdin, finishSession, IO_PATHS, Pattern, startE2e, startSession } from './support.js';

describe.each(IO_PATHS)('integrity over $name', ({ passfd }) => {
  const blocks = passfd ? 256 : 64;
  const gib = 1024;
  let e: E2e;
  let a: Pattern;
  let b: Pattern;
  beforeAll(async () => {
    e = await startE2e(passfd);
    a = new Pattern(e.dir, 'a');
    b = new Pattern(e.dir, 'b');
  });
  afterAll(async () => {
    await e?.stop();
  });

  it(`stdin: ${gib} MiB, SHA-256 exact`, { timeout: 240_000 }, async () => {
    const s = await startSession(e, ['sha256sum'], { keepText: true });
    const wrote = await endStdin(s, a.chunks(gib));
    expect(wrote.bytes).toBe(a.size(gib));
    expect(await s.proc.wait()).toBe(0);
    await s.stdout.done;
    expect(s.stdout.text).toBe(`${a.hash(gib)}  -\n`);
    finishSession(s);
  });

  it(`stdout: ${gib} MiB, SHA-256 exact`, { timeout: 240_000 }, async () => {
    const s = await startSession(e, ['sh', '-c', a.shell(gib)]);
    await endStdin(s);
    expect(await s.proc.wait()).toBe(0);
    const out = await s.stdout.done;
    expect(out.bytes).toBe(a.size(gib));
    expect(out.hash).toBe(a.hash(gib));
    expect((await s.stderr!.done).bytes).toBe(0);
    finishSession(s);
  });

  it(`stderr: ${blocks} MiB, SHA-256 exact`, { timeout: 120_000 }, async () => {
    const s = await startSession(e, ['sh', '-c', `{ ${a.shell(blocks)}; } >&2`]);
    await endStdin(s);
    expect(await s.proc.wait()).toBe(0);
    const err = await s.stderr!.done;
    expect(err.bytes).toBe(a.size(blocks));
    expect(err.hash).toBe(a.hash(blocks));
    expect((await s.stdout.done).bytes).toBe(0);
    finishSession(s);
  });

  it(`stdin, stdout and stderr at once: ${blocks} MiB each`, { timeout: 180_000 }, async () => {
    const hashFile = path.join(e.dir, `stdin-${e.nextId()}.sha`);
    const script = `( ${a.shell(blocks)} ) & ( ${b.shell(blocks)} ) >&2 & sha256sum > '${hashFile}'; wait`;
    const s = await startSession(e, ['sh', '-c', script]);
    const [wrote, status, out, err] = await Promise.all([
      endStdin(s, b.chunks(blocks)),
      s.proc.wait(),
      s.stdout.done,
      s.stderr!.done,
    ]);
    expect(status).toBe(0);
    expect(wrote.bytes).toBe(b.size(blocks));
    expect(fs.readFileSync(hashFile, 'utf8')).toBe(`${b.hash(blocks)}  -\n`);
    expect(out).toEqual({ bytes: a.size(blocks), hash: a.hash(blocks) });
    expect(err).toEqual({ bytes: b.size(blocks), hash: b.hash(blocks) });
    finishSession(s);
  });
});
