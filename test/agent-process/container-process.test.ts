/**
 * The launcher with real processes and real sockets (non-terminal mode).
 * Each stream is a socketpair: the launcher owns one end, the test reads or
 * writes the other, as the host side of a vsock connection would.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnContainerProcess } from '../../src/agent/process/index.js';
import {
  alive,
  collect,
  openFds,
  readSlowly,
  sha256,
  sleep,
  streamPair,
  until,
  untilText,
  writer,
} from './helpers.js';

const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'agent-process-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts `args` with three stream sockets; returns the process and the test ends. */
async function run(args: string[], extra: { drainTimeoutMs?: number; paused?: boolean } = {}) {
  const sin = streamPair();
  const sout = streamPair();
  const serr = streamPair();
  const proc = await spawnContainerProcess({
    args,
    stdinFd: sin.agent,
    stdoutFd: sout.agent,
    stderrFd: serr.agent,
    ...(extra.drainTimeoutMs !== undefined ? { drainTimeoutMs: extra.drainTimeoutMs } : {}),
  });
  const out = collect(sout.test, { paused: !!extra.paused });
  const err = collect(serr.test);
  const input = writer(sin.test);
  return { proc, out, err, input };
}

describe('byte-exact transfers', () => {
  it('moves 64 MiB through stdout (SHA-256)', async () => {
    const data = randomBytes(64 * MiB);
    const file = join(dir, 'out.bin');
    writeFileSync(file, data);
    const { proc, out, input } = await run(['cat', file]);
    input.end();
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status).toEqual({ status: 0, code: 0 });
    expect(got.bytes).toBe(data.length);
    expect(got.sha256).toBe(sha256(data));
  });

  it('moves 64 MiB through stdin (SHA-256 computed by the child)', async () => {
    const data = randomBytes(64 * MiB);
    const { proc, out, input } = await run(['sha256sum']);
    input.end(data);
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(got.text.split(' ')[0]).toBe(sha256(data));
  });

  it('round-trips 64 MiB stdin → cat → stdout unchanged', async () => {
    const data = randomBytes(64 * MiB);
    const { proc, out, input } = await run(['cat']);
    input.end(data);
    const [, got] = await Promise.all([proc.wait(), out.done]);
    expect(got.bytes).toBe(data.length);
    expect(got.sha256).toBe(sha256(data));
  });

  it('keeps stdout and stderr apart', async () => {
    const { proc, out, err, input } = await run([
      'sh',
      '-c',
      'echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 5',
    ]);
    input.end();
    const [status, o, e] = await Promise.all([proc.wait(), out.done, err.done]);
    expect(status).toEqual({ status: 5, code: 5 });
    expect(o.text).toBe('out1\nout2\n');
    expect(e.text).toBe('err1\nerr2\n');
  });
});

describe('exit vs. output', () => {
  it('reports the exit only after the last of 10 MiB written just before it is in the stream', async () => {
    const sin = streamPair();
    const sout = streamPair();
    const proc = await spawnContainerProcess({
      args: ['sh', '-c', 'head -c 10485760 /dev/zero; exit 3'],
      stdinFd: sin.agent,
      stdoutFd: sout.agent,
    });
    writer(sin.test).end();
    proc.stderrPipe!.resume();
    let reported = false;
    const waited = proc.wait().then((st) => {
      reported = true;
      return st;
    });
    // A slow reader in paused mode: Node keeps at most its high-water mark
    // buffered, so each read() takes a few tens of KiB: under 8 MB/s at one
    // read per 10 ms. The writer is always far ahead: when it exits, its
    // 1 MiB pipe is about full.
    const sock = new net.Socket({ fd: sout.test, readable: true, writable: false });
    let received = 0;
    const take = () => {
      for (let chunk = sock.read(); chunk; chunk = sock.read()) received += (chunk as Buffer).length;
    };
    const slow = setInterval(take, 10);
    await until(() => proc.hasExited, 20_000, 'process exit');
    clearInterval(slow);
    // Then the reader stops altogether. Over 1 MiB is still in flight (the reader
    // took under 9 of the 10), more than the socket buffer (~200 KiB) can hold, so
    // part of it is still in the pipe: whatever the launcher does on the exit has
    // run by the next macrotask, and it must not have reported the exit.
    expect(received).toBeLessThan(9 * MiB);
    await new Promise((r) => setImmediate(r));
    expect(reported).toBe(false);
    const ended = new Promise((r) => sock.on('end', r));
    sock.on('data', (d: Buffer) => {
      received += d.length;
    });
    const status = await waited;
    expect(status).toEqual({ status: 3, code: 3 });
    // By now the pump has shut the stream down: the rest arrives without the agent.
    await ended;
    expect(received).toBe(10 * MiB);
    await proc.drained;
  });

  it('waits a bounded time for output held open by a background child, then reports; late output still flows', async () => {
    const { proc, out, input } = await run(
      ['sh', '-c', 'echo early; (sleep 2; echo late; sleep 30) & echo $! ; exit 7'],
      { drainTimeoutMs: 200 },
    );
    input.end();
    const t0 = Date.now();
    const status = await proc.wait();
    const waitedMs = Date.now() - t0;
    expect(status.status).toBe(7);
    expect(waitedMs).toBeGreaterThanOrEqual(150);
    // Bounded by the drain timeout, not by the background child's output (2 s
    // away; the margin is for a loaded machine, the order is what matters).
    expect(out.textSoFar()).not.toContain('late');
    expect(waitedMs).toBeLessThan(1900);
    await untilText(out, /late\n/);
    const bgPid = Number(out.textSoFar().split('\n')[1]);
    expect(alive(bgPid)).toBe(true);
    // The group outlives its leader: one signal reaches the background child.
    expect(proc.signal('SIGKILL', { group: true })).toBe(true);
    const got = await out.done;
    expect(got.text).toBe(`early\n${bgPid}\nlate\n`);
    await proc.drained;
    await until(() => !alive(bgPid), 5000, 'background child gone');
  });

  it('with drainTimeoutMs Infinity waits for EOF like Kata', async () => {
    const { proc, out, input } = await run(['sh', '-c', '(sleep 0.4; echo late) & exit 0'], {
      drainTimeoutMs: Number.POSITIVE_INFINITY,
    });
    input.end();
    const t0 = Date.now();
    await proc.wait();
    // Resolved only once the background child closed the pipe, 400 ms on.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
    expect((await out.done).text).toBe('late\n');
  });
});

describe('what the child sees', () => {
  it('gets pipes: /dev/stdout can be reopened, /proc/self/fd/1 is a pipe', async () => {
    const { proc, out, input } = await run([
      'sh',
      '-c',
      'readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; echo via-dev-stdout > /dev/stdout; cat /proc/self/fd/0 > /dev/stdout',
    ]);
    input.end('via-proc-fd-0\n');
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    const lines = got.text.split('\n');
    for (const l of lines.slice(0, 3)) expect(l).toMatch(/^pipe:\[\d+\]$/);
    expect(lines.slice(3)).toEqual(['via-dev-stdout', 'via-proc-fd-0', '']);
  });

  it('gets blocking fds: no O_NONBLOCK in fdinfo, and 16 MiB written fast to a slow reader never hits EAGAIN', async () => {
    const flags = await run(['sh', '-c', 'for fd in 0 1 2; do grep flags /proc/self/fdinfo/$fd; done']);
    flags.input.end();
    const text = (await flags.out.done).text;
    const octal = [...text.matchAll(/flags:\s+(\d+)/g)].map((m) => Number.parseInt(m[1]!, 8));
    expect(octal).toHaveLength(3);
    for (const f of octal) expect(f & 0o4000).toBe(0);

    const script =
      "const fs=require('fs');const b=Buffer.alloc(1<<20,97);" +
      'for(let i=0;i<16;i++){let o=0;while(o<b.length)o+=fs.writeSync(1,b,o,b.length-o);}' +
      "fs.writeSync(2,'wrote all\\n');";
    const { proc, out, err, input } = await run([process.execPath, '-e', script], { paused: true });
    input.end();
    // A slow reader: nothing for a while, then small sips.
    await sleep(300);
    const stopSipping = readSlowly(out);
    await until(() => out.received > 4 * MiB, 20_000, 'slow reading');
    stopSipping();
    out.socket.resume();
    const [status, o, e] = await Promise.all([proc.wait(), out.done, err.done]);
    expect(e.text).toBe('wrote all\n');
    expect(status.status).toBe(0);
    expect(o.bytes).toBe(16 * MiB);
  });

  it('sees stdin EOF when the stream ends, right after the last byte', async () => {
    const { proc, out, input } = await run(['sh', '-c', 'cat; echo EOF-SEEN']);
    input.write('line1\n');
    await untilText(out, /line1\n/);
    input.end('line2');
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(got.text).toBe('line1\nline2EOF-SEEN\n');
  });

  it('closeStdin() on a stream delivers what was already sent, then EOF', async () => {
    const { proc, out, input } = await run(['sh', '-c', 'wc -c; echo closed']);
    const data = randomBytes(3 * MiB);
    await new Promise<void>((r) => input.write(data, () => r()));
    // The host side stays open; the RPC says stdin is done.
    await until(() => true);
    proc.closeStdin();
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(got.text).toBe(`${data.length}\nclosed\n`);
    input.destroy();
  });

  it('survives a child that closes its stdin early (EPIPE): stream closed, no crash', async () => {
    const { proc, out, input } = await run(['sh', '-c', 'exec 0<&-; sleep 0.3; echo still-here']);
    const chunk = Buffer.alloc(MiB, 1);
    let writeError: Error | null = null;
    input.on('error', (e) => {
      writeError = e;
    });
    for (let i = 0; i < 8 && !input.destroyed; i++) input.write(chunk);
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(got.text).toBe('still-here\n');
    await until(() => writeError !== null || input.destroyed, 5000, 'stdin stream closed by the agent');
    await proc.drained;
  });

  it('runs with signals at default disposition and unblocked', async () => {
    const { proc, out, input } = await run(['grep', '-E', '^Sig(Blk|Ign)', '/proc/self/status']);
    input.end();
    await proc.wait();
    expect((await out.done).text).toBe('SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n');
  });

  it('lets a writer to a closed pipe die of SIGPIPE, as in a shell', async () => {
    const { proc, err, input } = await run([
      'sh',
      '-c',
      '(yes; echo "yes-status $?" >&2) | head -c1 >/dev/null',
    ]);
    input.end();
    await proc.wait();
    expect((await err.done).text).toBe('yes-status 141\n');
  });

  it('gives SIGPIPE to the process when the stdout stream peer goes away', async () => {
    const { proc, out, input } = await run(['yes']);
    input.end();
    await until(() => out.received > 0);
    out.socket.destroy();
    const status = await proc.wait();
    expect(status).toEqual({ status: 141, code: null, signal: 'SIGPIPE' });
    await proc.drained;
  });
});

describe('signals', () => {
  it('SIGTERM gives 128+15, SIGKILL 128+9', async () => {
    const a = await run(['sleep', '100']);
    expect(a.proc.signal('SIGTERM')).toBe(true);
    expect(await a.proc.wait()).toEqual({ status: 143, code: null, signal: 'SIGTERM' });
    const b = await run(['sleep', '100']);
    expect(b.proc.signal(9)).toBe(true);
    expect(await b.proc.wait()).toEqual({ status: 137, code: null, signal: 'SIGKILL' });
    expect(b.proc.signal(9)).toBe(false);
    a.input.destroy();
    b.input.destroy();
    await Promise.all([a.proc.drained, b.proc.drained]);
  });

  it('real-time signals give 128+n too (SIGRTMIN 34 → 162, SIGRTMAX 64 → 192)', async () => {
    for (const [sig, status] of [
      [34, 162],
      [64, 192],
    ] as const) {
      const { proc, input } = await run(['sh', '-c', `kill -${sig} $$`]);
      input.end();
      expect(await proc.wait()).toEqual({ status, code: null });
      await proc.drained;
    }
  });

  it('signals the whole process group on request', async () => {
    const { proc, out, input } = await run(['sh', '-c', 'sleep 100 & echo $!; wait']);
    await untilText(out, /^\d+\n/);
    const bg = Number(out.textSoFar().trim());
    expect(alive(bg)).toBe(true);
    proc.signal('SIGTERM', { group: true });
    expect((await proc.wait()).status).toBe(143);
    await out.done; // EOF: the background sleep, which held stdout, is gone too
    await until(() => !alive(bg), 5000, 'background sleep gone');
    input.destroy();
    await proc.drained;
  });

  it('makes the process a session and group leader', async () => {
    const { proc, out, input } = await run(['sh', '-c', 'cut -d" " -f1,5,6 /proc/$$/stat']);
    input.end();
    await proc.wait();
    const [pid, pgrp, sid] = (await out.done).text.trim().split(' ').map(Number);
    expect(pgrp).toBe(pid);
    expect(sid).toBe(pid);
  });
});

describe('RPC path (no stream fd)', () => {
  it('exposes the pipes as Node streams; closeStdin ends the child stdin', async () => {
    const proc = await spawnContainerProcess({
      args: ['sh', '-c', 'cat; echo err >&2; exit 4'],
    });
    expect(proc.stdinPipe && proc.stdoutPipe && proc.stderrPipe).toBeTruthy();
    const read = (s: NodeJS.ReadableStream) =>
      new Promise<string>((resolve) => {
        const parts: Buffer[] = [];
        s.on('data', (d: Buffer) => parts.push(d));
        s.on('end', () => resolve(Buffer.concat(parts).toString()));
      });
    const o = read(proc.stdoutPipe!);
    const e = read(proc.stderrPipe!);
    proc.stdinPipe!.write('via rpc\n');
    proc.closeStdin();
    expect(await proc.wait()).toEqual({ status: 4, code: 4 });
    expect(await o).toBe('via rpc\n');
    expect(await e).toBe('err\n');
    await proc.drained;
  });

  it('mixes: stdout on a stream, stderr and stdin over RPC', async () => {
    const sout = streamPair();
    const proc = await spawnContainerProcess({ args: ['sh', '-c', 'cat; echo e >&2'], stdoutFd: sout.agent });
    const out = collect(sout.test);
    expect(proc.stdoutPipe).toBeNull();
    proc.stdinPipe!.end('x\n');
    proc.stderrPipe!.resume();
    await proc.wait();
    expect((await out.done).text).toBe('x\n');
  });
});

describe('failures', () => {
  it('rejects a missing command with ENOENT and closes the stream fds it was given', async () => {
    const before = await openFds();
    const s = [streamPair(), streamPair(), streamPair()];
    await expect(
      spawnContainerProcess({
        args: ['/nonexistent/cmd'],
        stdinFd: s[0]!.agent,
        stdoutFd: s[1]!.agent,
        stderrFd: s[2]!.agent,
      }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    for (const p of s) {
      const c = collect(p.test);
      await c.done; // EOF: the agent end was closed
    }
    expect(await openFds()).toBe(before);
  });

  it('rejects a bad cwd and the same fd given twice', async () => {
    const a = streamPair();
    await expect(
      spawnContainerProcess({ args: ['true'], cwd: '/nonexistent', stdoutFd: a.agent }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    const b = streamPair();
    await expect(
      spawnContainerProcess({ args: ['true'], stdoutFd: b.agent, stderrFd: b.agent }),
    ).rejects.toThrow(/same fd/);
    await collect(a.test).done;
    await collect(b.test).done;
  });
});

describe('resources', () => {
  it('leaks no fd over 50 runs', async () => {
    // One warm-up run: first use loads lazily opened things (libc handles, ...).
    const warm = await run(['true']);
    warm.input.end();
    await Promise.all([warm.proc.drained, warm.out.done, warm.err.done]);
    const before = await openFds();
    for (let i = 0; i < 50; i++) {
      const { proc, out, err, input } = await run(['sh', '-c', `cat; echo ${i} >&2`]);
      input.end(`run ${i}\n`);
      const [status, o, e] = await Promise.all([proc.wait(), out.done, err.done]);
      expect(status.status).toBe(0);
      expect(o.text).toBe(`run ${i}\n`);
      expect(e.text).toBe(`${i}\n`);
      await proc.drained;
    }
    expect(await openFds()).toBe(before);
  });
});
