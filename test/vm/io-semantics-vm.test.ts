/**
 * The IO semantics of test/e2e/io-semantics.test.ts, in a real QEMU guest
 * (one guest for the file, both IO paths on it: ./support.ts), plus what only
 * a real guest can show:
 * - CloseStdin after writing: `cat` sees EOF and every byte comes back (repeated);
 * - exit 7 right after ~8 MiB of output: when wait() resolves, every byte is
 *   in the stdout FIFO and its writers are gone (EOF, not "try again");
 * - a stalled stdout reader: the process blocks (its progress, reported on
 *   stderr, stops), nothing is lost, and a second container on the same
 *   guest completes during the stall;
 * - the agent moves AF_VSOCK → the process's stdin pipe with splice(2), and
 *   its stdout pipe → AF_VSOCK in 64 KiB packets: on this 6.1 guest splice
 *   into AF_VSOCK would send one ≤ 4 KiB packet per pipe page, so the agent
 *   relays stdout with read/write there (output-relay.ts). Observed with the
 *   guest kernel's ftrace syscall and vsock events (guest/splice-probe.mjs),
 *   every byte and every packet accounted for.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { spliceBatchesPages } from '../../src/agent/process/output-relay.js';
import { findGuestKernel } from '../../src/vm/guest-kernel.js';
import {
  drainNow,
  endStdin,
  finishSession,
  IO_PATHS,
  MiB,
  O_NONBLOCK,
  O_RDONLY,
  Pattern,
  sha256Hex,
  startSession,
  waitUntil,
  writeAndClose,
} from '../e2e/support.js';
import { useSharedVm } from './support.js';

const shared = useSharedVm();
const e = shared.e;
let pat: Pattern;

beforeAll(() => {
  pat = new Pattern(shared.dir, 'p');
});

/** `blocks` pattern blocks on stdout, the number of blocks written so far on stderr after each. */
function patternWithProgress(blocks: number): string {
  return `i=0; while [ $i -lt ${blocks} ]; do cat '${pat.file}'; echo $i; i=$((i+1)); echo $i >&2; done`;
}

describe.each(IO_PATHS)('in the VM over $name', ({ name }) => {
  // Sizes around the FIFO's 64 KiB, the 64 KiB credit window, the agent's 1 MiB pipe, and one byte.
  const sizes = [1, 4096, 65_535, 65_536, 65_537, 300_000, MiB + 7];
  it(`CloseStdin after writing: cat sees EOF and returns every byte, ${sizes.length} times`, {
    timeout: 180_000,
  }, async () => {
    for (const [i, size] of sizes.entries()) {
      const data = randomBytes(size);
      const s = await startSession(e[name], ['cat']);
      const wrote = await endStdin(s, [data]);
      expect(wrote.bytes).toBe(size);
      // cat exits 0 only after reading EOF on its stdin.
      expect(await s.proc.wait(), `round ${i}`).toBe(0);
      expect(await s.stdout.done, `round ${i}, ${size} bytes`).toEqual({
        bytes: size,
        hash: sha256Hex(data),
      });
      expect((await s.stderr!.done).bytes).toBe(0);
      finishSession(s);
    }
  });

  it('exit 7 right after 8 MiB: when wait() resolves every byte is in the stdout FIFO', {
    timeout: 120_000,
  }, async () => {
    const blocks = 8;
    const total = pat.size(blocks);
    const s = await startSession(e[name], ['sh', '-c', `${pat.shell(blocks)}; exit 7`]);
    // Our own copy of the stream, in order: what the reader emits, then what the probe reads at the end.
    const hash = createHash('sha256');
    s.stdout.socket.on('data', (d: Buffer) => hash.update(d));
    // A second reader fd on the same FIFO, read synchronously at the moment wait() resolves.
    const probe = fs.openSync(s.fifos.stdout, O_RDONLY | O_NONBLOCK);
    await endStdin(s);
    const status = await s.proc.wait();
    // No await from here to the end of the loop: nothing else runs in this process meanwhile.
    const before = s.stdout.bytes + s.stdout.socket.readableLength;
    const { chunks: tail, bytes: left, eof } = drainNow(probe);
    fs.closeSync(probe);
    expect(status).toBe(7);
    expect(before + left).toBe(total);
    // Every writer of the FIFO (the broker's keeper, the device's fd / the RPC copier) is gone.
    expect(eof).toBe(true);
    await s.stdout.done;
    for (const b of tail) hash.update(b);
    expect(hash.digest('hex')).toBe(pat.hash(blocks));
    finishSession(s);
  });

  // Smaller on RPC: every chunk is a ttrpc request through this process, and TCG is slow.
  const blocks1 = name === 'passfd' ? 12 : 6;
  const size2 = name === 'passfd' ? 4 * MiB : MiB;
  it(`stalled reader: the process blocks, nothing lost, a second container moves ${size2 / MiB} MiB meanwhile`, {
    timeout: 180_000,
  }, async () => {
    const s1 = await startSession(e[name], ['sh', '-c', patternWithProgress(blocks1)], { keepText: true });
    await endStdin(s1);
    let exited1 = false;
    const wait1 = s1.proc.wait().then((st) => {
      exited1 = true;
      return st;
    });
    const progress = () => Number(s1.stderr!.text.trim().split('\n').at(-1) || 0);
    await s1.stdout.atLeast(MiB, 60_000);
    s1.stdout.socket.pause();
    const stallStart = Date.now();
    const bytesAtStall = s1.stdout.bytes;

    // Container 2 on the same guest and device, during the stall.
    const s2 = await startSession(e[name], ['head', '-c', String(size2), '/dev/zero']);
    await endStdin(s2);
    const [st2, out2] = await Promise.all([s2.proc.wait(), s2.stdout.done]);
    const done2 = Date.now() - stallStart;
    expect(st2).toBe(0);
    expect(out2).toEqual({ bytes: size2, hash: sha256Hex(Buffer.alloc(size2)) });
    finishSession(s2);

    // At least 2 s of not reading; over the last second of it, container 1 makes no progress.
    await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (Date.now() - stallStart)) + 1000));
    const p1 = progress();
    await new Promise((r) => setTimeout(r, 1000));
    const p2 = progress();
    expect(exited1, 'container 1 blocked, not finished').toBe(false);
    expect(p2, 'no progress while the reader is stalled').toBe(p1);
    expect(p2).toBeLessThan(blocks1);
    expect(s1.stdout.bytes, 'the paused reader took nothing').toBe(bytesAtStall);
    expect(done2, 'container 2 finished while container 1 was stalled').toBeLessThan(Date.now() - stallStart);

    s1.stdout.socket.resume();
    expect(await wait1).toBe(0);
    expect(await s1.stdout.done).toEqual({ bytes: pat.size(blocks1), hash: pat.hash(blocks1) });
    expect(progress()).toBe(blocks1);
    finishSession(s1);
  });
});

it('the guest agent splices AF_VSOCK → stdin pipe and sends stdout in large packets (ftrace in the guest)', {
  timeout: 180_000,
}, async () => {
  const outBytes = 4 * MiB;
  const inData = randomBytes(3 * MiB + 123);
  const probe = path.resolve(import.meta.dirname, 'guest/splice-probe.mjs');
  const s = await startSession(e.passfd, [process.execPath, probe, String(outBytes)], { keepText: true });
  // Stdin only once the probe traces: the agent would otherwise splice it before tracing starts.
  await waitUntil(() => s.stderr!.text.includes('SPLICE-PROBE-READY'), 120_000, 'probe ready in the guest');
  await writeAndClose(s.stdin, [inData]);
  await s.proc.closeStdin();
  const status = await s.proc.wait();
  const out = await s.stdout.done;
  await s.stderr!.done;
  const line = s.stderr!.text.split('\n').find((l) => l.startsWith('SPLICE-PROBE {'));
  expect(status, s.stderr!.text).toBe(0);
  expect(line, s.stderr!.text).toBeDefined();
  const r = JSON.parse(line!.slice('SPLICE-PROBE '.length)) as {
    kernel: string;
    agentCmdline: string;
    stdinPipe: string;
    stdoutPipe: string;
    stdin: { bytes: number; sha256: string };
    stdoutWritten: number;
    splicedFromStdout: number;
    fds: Record<string, { link: string | null; proto: string | null }>;
    groups: {
      fdIn: number;
      fdOut: number;
      flags: number;
      calls: number;
      bytes: number;
      errors: Record<string, number>;
    }[];
    txPackets: {
      port: number;
      count: number;
      bytes: number;
      upTo4k: number;
      upTo16k: number;
      upTo64k: number;
    }[];
    lostEvents: boolean;
  };
  const fd = (n: number) => r.fds[String(n)] ?? { link: null, proto: null };
  // The probe ran in the guest kernel, as the agent's child.
  expect(r.kernel).toBe(findGuestKernel().version);
  expect(r.agentCmdline).toMatch(/ agent --vsock/);
  expect(r.lostEvents).toBe(false);

  // Bytes: all of stdout reached the host exactly, all of stdin reached the process.
  const expected = Buffer.alloc(outBytes);
  for (let i = 0; i < outBytes; i++) expected[i] = i % 251;
  expect(out).toEqual({ bytes: outBytes, hash: sha256Hex(expected) });
  expect(r.stdin).toEqual({ bytes: inData.length, sha256: sha256Hex(inData) });

  // stdout: this kernel splices into AF_VSOCK page by page, so the agent copies instead (no splice
  // from the stdout pipe) and every RW packet the guest sent carries stdout: at least 16 KiB on
  // average (splice made 1025 packets of ≤ 4 KiB of these 4 MiB; the copy makes mostly 64 KiB ones).
  const EAGAIN = '11';
  expect(spliceBatchesPages(r.kernel)).toBe(false);
  expect(r.groups.filter((g) => fd(g.fdIn).link === r.stdoutPipe)).toEqual([]);
  const p = r.txPackets.find((c) => c.bytes === outBytes);
  expect(p, JSON.stringify(r.txPackets)).toBeDefined(); // the stdout connection (stderr is another)
  expect(p!.count, JSON.stringify(p)).toBeLessThanOrEqual(outBytes / (16 * 1024));

  // stdin: splice(AF_VSOCK socket → stdin pipe), every byte.
  const inGroups = r.groups.filter((g) => fd(g.fdOut).link === r.stdinPipe);
  expect(inGroups.length, JSON.stringify(r)).toBeGreaterThan(0);
  for (const g of inGroups) {
    expect(fd(g.fdIn).proto).toBe('AF_VSOCK');
    expect(Object.keys(g.errors).filter((k) => k !== EAGAIN)).toEqual([]);
  }
  expect(inGroups.reduce((x, g) => x + g.bytes, 0)).toBe(inData.length);
  const summary = (gs: typeof r.groups) =>
    `${gs.reduce((x, g) => x + g.bytes, 0)} bytes in ${gs.reduce((x, g) => x + g.calls, 0)} splice calls ` +
    `(${gs.reduce((x, g) => x + (g.errors[EAGAIN] ?? 0), 0)} EAGAIN)`;
  console.info(
    `guest ${r.kernel}: AF_VSOCK → stdin pipe ${summary(inGroups)}; ` +
      `stdout left in ${p!.count} RW packets (${p!.upTo4k} ≤ 4 KiB, ${p!.upTo16k} ≤ 16 KiB, ${p!.upTo64k} ≤ 64 KiB)`,
  );
  finishSession(s);
});
