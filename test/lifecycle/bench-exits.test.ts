/**
 * `bench` ends cleanly however it ends, with real signals and a private
 * $TMPDIR per test: Ctrl-C on a real terminal (`script`) gives the cursor
 * back, stops the stack, removes the temporary directories and exits 130;
 * kill -9 of `bench` leaves no `vmm`, `agent`, helper or directory behind;
 * a measurement that fails makes `bench` exit 1, with the table still
 * printed.
 */
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { Captured, CLI, exited, spawnCli, stopAll } from '../support/cli.js';
import { cmdline, descendants, isolatedTmp, privateDirs, until, untilGone } from './support.js';

afterAll(async () => {
  await stopAll();
});

const HIDE_CURSOR = '\x1b[?25l';
const SHOW_CURSOR = '\x1b[?25h';

/** Long enough to be interrupted mid-measurement: 8 GiB per transfer, one repetition. */
const LONG = ['--scenarios', 'throughput', '--bytes', '8GiB', '--reps', '1'];

async function measuring(benchPid: number): Promise<number[]> {
  await until(
    () => descendants(benchPid).some((p) => /^(dd|wc) /.test(cmdline(p))),
    'a measurement in flight',
    30_000,
  );
  return descendants(benchPid);
}

describe('bench: every exit leaves nothing behind', () => {
  it('Ctrl-C on a terminal: the cursor comes back, the stack and directories go, exit 130', async () => {
    const { tmp, env } = isolatedTmp();
    const term = spawn(
      'script',
      ['-qfec', `'${process.execPath}' '${CLI}' bench ${LONG.join(' ')}`, '/dev/null'],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        env,
      },
    );
    const out = new Captured(term.stdout);
    await out.waitFor(/bench \[/, 30_000); // the progress bar is up: the cursor is hidden
    const benchPid = descendants(term.pid!).find((p) => cmdline(p).includes(' bench '))!;
    const tree = await measuring(benchPid);
    term.stdin!.write('\x03');
    const { code } = await exited(term, 30_000);
    expect(code, out.text.slice(-500)).toBe(130);
    expect(out.text.lastIndexOf(SHOW_CURSOR)).toBeGreaterThan(out.text.lastIndexOf(HIDE_CURSOR));
    expect(out.text).toContain('interrupted by SIGINT');
    await untilGone([benchPid, ...tree]);
    expect(privateDirs(tmp)).toEqual([]);
  });

  it('kill -9 of bench: no vmm, agent, helper or directory is left', async () => {
    const { tmp, env } = isolatedTmp();
    const bench = spawnCli(['bench', '--no-progress', ...LONG], { env });
    const tree = await measuring(bench.pid!);
    expect(privateDirs(tmp).length).toBeGreaterThan(0);
    bench.kill('SIGKILL');
    await untilGone(tree);
    await until(() => privateDirs(tmp).length === 0, 'the private directories removed');
  });

  it('a failed measurement makes bench exit 1, with the table printed', async () => {
    const { env } = isolatedTmp();
    const bench = spawnCli(['bench', '--no-progress', '--timeout', '1', ...LONG], { env });
    const out = new Captured(bench.stdout);
    const err = new Captured(bench.stderr);
    const { code } = await exited(bench, 60_000);
    expect(code).toBe(1);
    expect(out.text).toMatch(/FAILED throughput passfd rep 0: stdout passfd: not done within 1000 ms/);
    expect(err.text).toMatch(/bench: 4 measurement\(s\) failed/);
  });
});
