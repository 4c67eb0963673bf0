/**
 * Pins down the IO semantics a runtime relies on (README: "The agent and the
 * broker"), on both IO paths, through real FIFOs and a real stack:
 * - CloseStdin after writing: every byte is read, then EOF (repeated);
 * - exit vs. output: when wait() reports the exit, every output byte is
 *   already in the FIFO (nothing can arrive later: its writers are gone);
 * - backpressure: a reader that stops blocks the process, loses nothing, and
 *   another container on the same device keeps flowing meanwhile.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  drainNow,
  type E2e,
  endStdin,
  finishSession,
  HashingReader,
  IO_PATHS,
  MiB,
  makeFifos,
  O_NONBLOCK,
  O_RDONLY,
  openWriter,
  Pattern,
  removeFifos,
  sha256Hex,
  startE2e,
  startSession,
  writeAndClose,
} from './support.js';

describe.each(IO_PATHS)('IO semantics over $name', ({ passfd }) => {
  let e: E2e;
  let pat: Pattern;
  beforeAll(async () => {
    e = await startE2e(passfd);
    pat = new Pattern(e.dir, 'p');
  });
  afterAll(async () => {
    await e?.stop();
  });

  // passfd 100 runs; RPC 20 (each chunk is a request: slower, same code path every time).
  const rounds = passfd ? 100 : 20;
  it(`CloseStdin after writing: every byte then EOF, ${rounds} times`, { timeout: 120_000 }, async () => {
    for (let i = 0; i < rounds; i++) {
      // Sizes around the FIFO's 64 KiB capacity and the 64 KiB credit window, and one byte.
      const size = [1, 4096, 65_535, 65_536, 65_537, 300_000][i % 6]! + (i % 7);
      const data = randomBytes(size);
      const s = await startSession(e, ['sha256sum'], { keepText: true });
      await endStdin(s, [data]);
      expect(await s.proc.wait(), `round ${i}`).toBe(0);
      await s.stdout.done;
      expect(s.stdout.text, `round ${i}, ${size} bytes`).toBe(`${sha256Hex(data)}  -\n`);
      finishSession(s);
    }
  });

  it('exit 7 right after 10 MiB: when wait() resolves every byte is in the FIFO', async () => {
    const total = 10 * MiB;
    const s = await startSession(e, ['sh', '-c', `head -c ${total} /dev/urandom; exit 7`]);
    // A second reader fd on the same FIFO, read synchronously at the moment wait() resolves.
    const probe = fs.openSync(s.fifos.stdout, O_RDONLY | O_NONBLOCK);
    await endStdin(s);
    const status = await s.proc.wait();
    // No await between here and the end of the loop: nothing else runs in this process.
    const before = s.stdout.bytes + s.stdout.socket.readableLength;
    const { bytes: left, eof } = drainNow(probe);
    fs.closeSync(probe);
    expect(status).toBe(7);
    expect(before + left).toBe(total);
    // Every writer of the FIFO (keeper, device's fd) is gone: EOF, not "try again".
    expect(eof).toBe(true);
    s.stdout.socket.resume();
    await s.stdout.done;
    finishSession(s);
  });

  // Smaller on RPC: every chunk is a request through this process.
  const blocks1 = passfd ? 64 : 16;
  /**
   * What can be on its way between the process and this reader while it
   * stalls, with room to spare: the FIFO (1 MiB), the device's and the guest
   * stack's buffers (256 KiB of vsock credit each way, socket buffers), the
   * agent's stdout pipe (1 MiB) and splice pipe, on RPC-copy the broker's
   * copy and its socket buffers, and our own socket's buffer.
   */
  const IN_FLIGHT_BOUND = 8 * MiB;
  const size2 = passfd ? 32 * MiB : 8 * MiB;
  it(`stalled reader: process blocks, nothing lost, a second container moves ${size2 / MiB} MiB meanwhile`, {
    timeout: 90_000,
  }, async () => {
    const progress = path.join(e.dir, `progress-${e.nextId()}`);
    const s1 = await startSession(e, ['sh', '-c', pat.shell(blocks1, { progress })]);
    await endStdin(s1);
    let exited1 = false;
    const wait1 = s1.proc.wait().then((st) => {
      exited1 = true;
      return st;
    });
    await s1.stdout.atLeast(2 * MiB);
    s1.stdout.socket.pause();
    const readProgress = () => Number(fs.readFileSync(progress, 'utf8').trim() || 0);

    // Container 2 on the same device runs to completion while container 1 stalls.
    const s2 = await startSession(e, ['head', '-c', String(size2), '/dev/zero']);
    await endStdin(s2);
    const [st2, out2] = await Promise.all([s2.proc.wait(), s2.stdout.done]);
    expect(st2).toBe(0);
    expect(out2).toEqual({ bytes: size2, hash: sha256Hex(Buffer.alloc(size2)) });
    finishSession(s2);

    // Container 1 is blocked, shown by what it has written rather than by a clock:
    // at any moment, its finished blocks exceed what this process has taken from the
    // FIFO by no more than the buffers in between can hold, so it cannot have finished.
    const taken = s1.stdout.bytes + s1.stdout.socket.readableLength;
    const blocksWritten = readProgress();
    expect(pat.size(blocksWritten) - taken).toBeLessThanOrEqual(IN_FLIGHT_BOUND);
    expect(blocksWritten).toBeLessThan(blocks1);
    expect(exited1).toBe(false);

    s1.stdout.socket.resume();
    expect(await wait1).toBe(0);
    expect(await s1.stdout.done).toEqual({ bytes: pat.size(blocks1), hash: pat.hash(blocks1) });
    expect(readProgress()).toBe(blocks1);
    finishSession(s1);
  });

  it('ExecProcess in a running container: stdin to EOF, stdout, stderr, exit status', async () => {
    const init = await startSession(e, ['cat'], { keepText: true });
    const id = init.proc.spec.containerId;
    const fifos = makeFifos(e.dir, `${id}-exec1`);
    const proc = await e.broker.start({
      containerId: id,
      execId: 'exec1',
      args: ['sh', '-c', 'wc -c; echo to-stderr >&2; exit 2'],
      fifos,
    });
    const out = new HashingReader(fifos.stdout, true);
    const err = new HashingReader(fifos.stderr!, true);
    const data = randomBytes(200_000);
    await writeAndClose(openWriter(fifos.stdin), [data]);
    await proc.closeStdin();
    expect(await proc.wait()).toBe(2);
    await Promise.all([out.done, err.done]);
    expect(out.text.trim()).toBe('200000');
    expect(err.text).toBe('to-stderr\n');
    removeFifos(fifos);
    // The init process is still there and still has its own stdin.
    await endStdin(init, [Buffer.from('init-data')]);
    expect(await init.proc.wait()).toBe(0);
    await init.stdout.done;
    expect(init.stdout.text).toBe('init-data');
    finishSession(init);
  });

  it('the exit is reported only once the reader has taken the output (containerd closes its readers then)', async () => {
    const init = await startSession(e, ['cat'], { keepText: true });
    const id = init.proc.spec.containerId;
    const fifos = makeFifos(e.dir, `${id}-late`);
    // containerd's reader: open from the start, busy elsewhere for a while (it takes nothing yet).
    const idleReader = fs.openSync(fifos.stdout, O_RDONLY | O_NONBLOCK);
    const proc = await e.broker.start({
      containerId: id,
      execId: 'late',
      args: ['sh', '-c', 'head -c 600000 /dev/zero; exit 5'],
      fifos,
    });
    await writeAndClose(openWriter(fifos.stdin), []);
    let reported = false;
    const status = proc.wait().then((st) => {
      reported = true;
      return st;
    });
    // Nothing is taken yet: the output waits in the FIFO (the keeper grew it to 1 MiB), and so does the exit.
    await new Promise((r) => setTimeout(r, 400));
    expect(reported).toBe(false);
    const out = new HashingReader(fifos.stdout);
    fs.closeSync(idleReader);
    const err = new HashingReader(fifos.stderr!);
    expect(await status).toBe(5);
    expect((await out.done).bytes).toBe(600_000);
    await err.done;
    removeFifos(fifos);
    await endStdin(init, []);
    expect(await init.proc.wait()).toBe(0);
    finishSession(init);
  });

  it('an exec that exits with output still in its pipe: every byte reaches the FIFO, 5 times', async () => {
    // The exit is reported (WaitProcess answers) while the RPC copier is still reading: the
    // agent must keep serving ReadStdout/ReadStderr for the exited exec until they reach EOF.
    const init = await startSession(e, ['cat'], { keepText: true });
    const id = init.proc.spec.containerId;
    for (let i = 0; i < 5; i++) {
      const fifos = makeFifos(e.dir, `${id}-tail${i}`);
      const proc = await e.broker.start({
        containerId: id,
        execId: `tail${i}`,
        args: ['sh', '-c', 'head -c 3000000 /dev/zero; echo last-line; head -c 700000 /dev/zero >&2; exit 3'],
        fifos,
      });
      const out = new HashingReader(fifos.stdout, true);
      const err = new HashingReader(fifos.stderr!, true);
      await writeAndClose(openWriter(fifos.stdin), []);
      expect(await proc.wait(), `round ${i}`).toBe(3);
      const [o, r] = await Promise.all([out.done, err.done]);
      expect(o.bytes, `round ${i}: stdout`).toBe(3_000_000 + 'last-line\n'.length);
      expect(out.text.endsWith('last-line\n'), `round ${i}`).toBe(true);
      expect(r.bytes, `round ${i}: stderr`).toBe(700_000);
      removeFifos(fifos);
    }
    // Read to EOF and reported: the id is free again.
    const fifos = makeFifos(e.dir, `${id}-again`);
    const again = await e.broker.start({
      containerId: id,
      execId: 'tail0',
      args: ['sh', '-c', 'exit 6'],
      fifos,
    });
    const drained = [new HashingReader(fifos.stdout), new HashingReader(fifos.stderr!)].map((r) => r.done);
    await writeAndClose(openWriter(fifos.stdin), []);
    expect(await again.wait()).toBe(6);
    await Promise.all(drained);
    removeFifos(fifos);
    await endStdin(init, []);
    expect(await init.proc.wait()).toBe(0);
    finishSession(init);
  });
});
