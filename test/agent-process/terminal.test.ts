/**
 * Terminal mode with real ptys, real processes and real sockets, through both
 * ways of giving the child its controlling terminal (setsid(1) and the Node
 * trampoline).
 */
import { describe, expect, it } from 'vitest';
import type { CttyMethod } from '../../src/agent/process/index.js';
import { spawnContainerProcess } from '../../src/agent/process/index.js';
import { collect, openFds, streamPair, unCRLF, until, untilText, writer } from './helpers.js';

async function runTty(
  ctty: CttyMethod,
  args: string[],
  size: { rows: number; cols: number } | null = { rows: 24, cols: 80 },
) {
  const sin = streamPair();
  const sout = streamPair();
  const proc = await spawnContainerProcess({
    args,
    terminal: true,
    ctty,
    ...(size ?? {}),
    stdinFd: sin.agent,
    stdoutFd: sout.agent,
  });
  return { proc, out: collect(sout.test), input: writer(sin.test) };
}

describe.each(['setsid', 'node'] as const)('terminal mode via %s', (ctty) => {
  it('runs on a pty that is its controlling terminal, in its own session', async () => {
    const { proc, out, input } = await runTty(ctty, [
      'sh',
      '-c',
      'tty; echo via-dev-tty > /dev/tty; cut -d" " -f1,5,6,7 /proc/$$/stat',
    ]);
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    const lines = unCRLF(got.text).split('\n');
    expect(lines[0]).toMatch(/^\/dev\/pts\/\d+$/);
    expect(lines[0]).toBe(proc.ptyName);
    expect(lines[1]).toBe('via-dev-tty'); // opening /dev/tty needs a controlling terminal
    const [pid, pgrp, sid, ttyNr] = lines[2]!.split(' ').map(Number);
    expect(pid).toBe(proc.pid);
    expect(pgrp).toBe(proc.pid);
    expect(sid).toBe(proc.pid);
    expect(ttyNr).not.toBe(0);
    input.destroy();
    await proc.drained;
  });

  it('shows the window size given at start and after resize()', async () => {
    const { proc, out, input } = await runTty(ctty, ['sh', '-c', 'stty size; read x; stty size'], {
      rows: 33,
      cols: 101,
    });
    await untilText(out, /33 101\r\n/);
    proc.resize(50, 132);
    input.write('go\n');
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    // "go" is the terminal's echo of what we typed.
    expect(unCRLF(got.text)).toBe('33 101\ngo\n50 132\n');
    input.destroy();
  });

  it('delivers SIGWINCH to the foreground process on resize', async () => {
    const { proc, out, input } = await runTty(ctty, [
      'sh',
      '-c',
      'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.02; done',
    ]);
    await untilText(out, /ready/);
    proc.resize(40, 120);
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(unCRLF(got.text)).toBe('ready\n40 120\n');
    input.destroy();
  });

  it('merges stderr into the one output stream', async () => {
    const { proc, out, input } = await runTty(ctty, [
      'sh',
      '-c',
      'echo out; echo err >&2; echo out2; exit 2',
    ]);
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(2);
    expect(unCRLF(got.text)).toBe('out\nerr\nout2\n');
    expect(proc.stderrPipe).toBeNull();
    input.destroy();
  });

  it('turns stdin EOF into the terminal EOF character (complete and partial last line)', async () => {
    for (const [sent, lines] of [
      ['one\ntwo\n', ['one', 'one', 'two', 'two']],
      ['partial', ['partialpartial']],
    ] as const) {
      const { proc, out, input } = await runTty(ctty, ['sh', '-c', 'cat; echo "<EOF>"']);
      input.end(sent);
      const [status, got] = await Promise.all([proc.wait(), out.done]);
      expect(status.status).toBe(0);
      // Each line twice: the terminal's echo and cat's output, interleaved as timing has it.
      const text = unCRLF(got.text);
      expect(text.endsWith('<EOF>\n')).toBe(true);
      expect(text.slice(0, -'<EOF>\n'.length).split('\n').filter(Boolean).sort()).toEqual(lines);
    }
  });

  it('closeStdin() on the stream ends input after what was sent', async () => {
    const { proc, out, input } = await runTty(ctty, ['sh', '-c', 'stty -echo; echo ready; wc -l']);
    await untilText(out, /ready/);
    await new Promise<void>((r) => input.write('a\nb\nc\n', () => r()));
    proc.closeStdin();
    const [status, got] = await Promise.all([proc.wait(), out.done]);
    expect(status.status).toBe(0);
    expect(unCRLF(got.text).trim().split('\n').pop()?.trim()).toBe('3');
    input.destroy();
  });

  it('delivers all output written just before exit, then the status', async () => {
    // 2 Mi lines of "y\n" become "y\r\n" on the terminal: 6 MiB.
    const { proc, out, input } = await runTty(ctty, ['sh', '-c', 'yes | head -c 4194304; exit 6']);
    const status = await proc.wait();
    expect(status.status).toBe(6);
    const got = await out.done;
    expect(got.bytes).toBe(6 << 20);
    input.destroy();
  });

  it('runs with default signal dispositions; signals give 128+n', async () => {
    const a = await runTty(ctty, ['grep', '-E', '^Sig(Blk|Ign)', '/proc/self/status']);
    await a.proc.wait();
    expect(unCRLF((await a.out.done).text)).toBe('SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n');
    const b = await runTty(ctty, ['sh', '-c', 'echo ready; exec sleep 100']);
    await untilText(b.out, /ready/);
    expect(b.proc.signal('SIGTERM')).toBe(true);
    expect(await b.proc.wait()).toEqual({ status: 143, code: null, signal: 'SIGTERM' });
    a.input.destroy();
    b.input.destroy();
  });

  it('hangs up the terminal (SIGHUP) when the output stream peer goes away', async () => {
    const { proc, out, input } = await runTty(ctty, ['sh', '-c', 'while :; do echo tick; sleep 0.02; done']);
    await untilText(out, /tick/);
    out.socket.destroy();
    // The next tick the pump writes fails (EPIPE): the launcher closes the
    // pty master, and the session leader gets SIGHUP, as when an ssh link drops.
    expect(await proc.wait()).toEqual({ status: 129, code: null, signal: 'SIGHUP' });
    proc.resize(30, 90); // no terminal any more: a no-op, not an error
    input.destroy();
    await proc.drained;
  });

  it('serves the terminal over RPC pipes when no stream fd is given', async () => {
    const proc = await spawnContainerProcess({
      args: ['sh', '-c', 'stty -echo; echo ready; cat; echo done'],
      terminal: true,
      ctty,
    });
    expect(proc.stdoutPipe && proc.stdinPipe).toBeTruthy();
    let text = '';
    proc.stdoutPipe!.on('data', (d: Buffer) => {
      text += d.toString();
    });
    const ended = new Promise((r) => proc.stdoutPipe!.on('end', r));
    await until(() => text.includes('ready'));
    proc.stdinPipe!.write('hello\n');
    proc.closeStdin();
    expect((await proc.wait()).status).toBe(0);
    await ended;
    expect(unCRLF(text)).toBe('ready\nhello\ndone\n');
    await proc.drained;
  });

  it('rejects a missing command with ENOENT before starting anything', async () => {
    const sout = streamPair();
    await expect(
      spawnContainerProcess({ args: ['no-such-command-here'], terminal: true, ctty, stdoutFd: sout.agent }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    await collect(sout.test).done;
  });

  it('leaks no fd over 10 runs', async () => {
    const warm = await runTty(ctty, ['true']);
    await Promise.all([warm.proc.drained, warm.out.done]);
    warm.input.destroy();
    const before = await openFds();
    for (let i = 0; i < 10; i++) {
      const { proc, out, input } = await runTty(ctty, ['sh', '-c', `echo ${i}`]);
      input.end();
      const [status, got] = await Promise.all([proc.wait(), out.done]);
      expect(status.status).toBe(0);
      expect(unCRLF(got.text)).toBe(`${i}\n`);
      await proc.drained;
    }
    expect(await openFds()).toBe(before);
  });
});

describe('terminal mode options', () => {
  it('refuses a stderr stream (stderr port must be 0) and closes what it was given', async () => {
    const sout = streamPair();
    const serr = streamPair();
    await expect(
      spawnContainerProcess({ args: ['true'], terminal: true, stdoutFd: sout.agent, stderrFd: serr.agent }),
    ).rejects.toThrow(/stderr/);
    await collect(sout.test).done;
    await collect(serr.test).done;
  });

  it('resize() without a terminal is an error', async () => {
    const proc = await spawnContainerProcess({ args: ['true'] });
    expect(() => proc.resize(10, 10)).toThrow(/no terminal/);
    proc.stdoutPipe!.resume();
    proc.stderrPipe!.resume();
    await proc.wait();
  });
});
