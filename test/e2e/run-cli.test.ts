/**
 * Pins down the `run` command end to end (its own embedded vmm + agent per
 * invocation): exit codes and deaths by signal as a shell reports them,
 * stdout and stderr kept apart without a terminal, stdin to EOF, the RPC-copy
 * path, SIGTERM forwarded to the process, and `--tty` through a real
 * terminal (util-linux `script`): a /dev/pts device, its size, interactive
 * input and the exit code.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { Captured, CLI, exited, spawnCli, stopAll } from '../support/cli.js';
import { waitUntil, withTimeout } from './support.js';

afterAll(async () => {
  await stopAll();
});

async function run(args: string[], input?: string) {
  const child = spawnCli(['run', ...args]);
  const out = new Captured(child.stdout);
  const err = new Captured(child.stderr);
  child.stdin!.on('error', () => {});
  child.stdin!.end(input ?? '');
  const { code, signal } = await exited(child, 30_000);
  return { code, signal, stdout: out.text, stderr: err.text };
}

/** `script -qfec <cmd> /dev/null`: runs `cmd` on a fresh pseudo-terminal. */
async function inTerminal(cmd: string, input: string) {
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new Captured(child.stdout);
  child.stdin.on('error', () => {});
  child.stdin.end(input);
  const { code, signal } = await exited(child, 30_000);
  return { code, signal, output: out.text };
}

describe('run', () => {
  it.each([
    ['true', 0],
    ['exit 3', 3],
    ['kill -TERM $$', 143],
    ['kill -KILL $$', 137],
    ['kill -34 $$', 162], // SIGRTMIN: real-time signals have no name in Node
    ['kill -64 $$', 192], // SIGRTMAX
  ])('sh -c %j exits %i', async (script, status) => {
    const r = await run(['--', 'sh', '-c', script]);
    expect(r.code).toBe(status);
  });

  it.each([
    [['nosuchcmd'], 127, 'cannot start nosuchcmd: executable file not found in $PATH'],
    [['./nosuchcmd'], 127, 'cannot start ./nosuchcmd: no such file or directory'],
    [['/etc/passwd'], 126, 'cannot start /etc/passwd: permission denied'],
    [['--tty', '--', 'nosuchcmd'], 127, 'cannot start nosuchcmd: executable file not found in $PATH'],
  ])('%j exits %i, as a shell would, saying why', async (args, status, message) => {
    const r = await run(args[0] === '--tty' ? args : ['--', ...args]);
    expect(r.code).toBe(status);
    expect(r.stderr).toBe(`passfd-broker: ${message}\n`);
  });

  it('--cwd that does not exist blames the directory, not the command', async () => {
    const r = await run(['--cwd', '/nonexistent', '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'passfd-broker: cannot start true: working directory /nonexistent: no such directory\n',
    );
  });

  it.each(['passfd', 'rpc'])('--io %s: stdin to EOF, stdout and stderr apart, exit 3', async (io) => {
    const r = await run(['--io', io, '--', 'sh', '-c', 'cat; echo done >&2; exit 3'], 'hello');
    expect(r).toMatchObject({ code: 3, stdout: 'hello', stderr: 'done\n' });
  });

  it("the command does not inherit the agent's supervision variables (NOTIFY_SOCKET, PASSFD_LOG)", async () => {
    const r = await run(['--log-level', 'info', '--', 'env']);
    expect(r.code).toBe(0);
    const names = r.stdout.split('\n').map((line) => line.split('=')[0]);
    expect(names).toContain('PATH'); // still the caller's environment otherwise
    expect(names).not.toContain('NOTIFY_SOCKET');
    expect(names).not.toContain('PASSFD_LOG');
  });

  it('stderr never lands on stdout (interleaved writes)', async () => {
    const r = await run(['--', 'sh', '-c', 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('out1\nout2\nout3\nout4\nout5\n');
    expect(r.stderr).toBe('err1\nerr2\nerr3\nerr4\nerr5\n');
  });

  it('SIGTERM to run is forwarded to the process: 143, quickly', async () => {
    // The loopback guest's processes are host processes: the pid printed is the sleep's.
    const child = spawnCli(['run', '--', 'sh', '-c', 'echo pid=$$; exec sleep 30']);
    const out = new Captured(child.stdout);
    child.stdin!.on('error', () => {});
    const pid = Number((await out.waitFor(/pid=(\d+)\n/, 20_000))[1]);
    const t0 = Date.now();
    child.kill('SIGTERM');
    const r = await exited(child, 10_000);
    expect(r).toEqual({ code: 143, signal: null });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(fs.existsSync(`/proc/${pid}`), 'the sleep is gone').toBe(false);
  });

  it('the agent killed under a running command: run names it, exits 1, and leaves nothing', async () => {
    const child = spawnCli(['run', '--', 'sh', '-c', 'echo pid=$$; exec sleep 30']);
    const out = new Captured(child.stdout);
    const err = new Captured(child.stderr);
    child.stdin!.on('error', () => {});
    const pid = Number((await out.waitFor(/pid=(\d+)\n/, 20_000))[1]);
    // run's children are the vmm and the agent (the loopback guest's processes are host ones).
    const children = fs
      .readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')
      .trim()
      .split(' ')
      .map(Number);
    const agent = children.find(
      (c) => fs.readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0')[2] === 'agent',
    );
    expect(agent, `run's children: ${children}`).toBeDefined();
    process.kill(agent!, 'SIGKILL');
    const r = await exited(child, 15_000);
    expect(r).toEqual({ code: 1, signal: null });
    expect(err.text).toBe(
      `passfd-broker: the agent (pid ${agent}) was killed by SIGKILL while the command ran\n`,
    );
    // The container's process ends with its agent (the guardian kills its group), the vmm with run.
    // A zombie is dead (its reaper's business, not ours); a vanished one is gone.
    const alive = (p: number) => {
      try {
        return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (const p of [pid, ...children]) await waitUntil(() => !alive(p), 5000, `process ${p} gone`);
  });

  // util-linux `script` (Debian's essential bsdutils) gives `run` a real terminal; if it is
  // missing these tests fail rather than skip.
  describe('--tty through a real terminal (script)', () => {
    it('the process sees a /dev/pts terminal with the outer size', async () => {
      const r = await inTerminal(
        `stty rows 33 cols 99; '${process.execPath}' '${CLI}' run --tty -- sh -c 'tty; stty size; exit 6'`,
        '',
      );
      expect(r.output, r.output).toMatch(/\/dev\/pts\/\d+\r*\n/);
      // script(1) may write a NUL at its stdin's EOF, echoed as "^@" anywhere in the output.
      expect(r.output, r.output).toMatch(/(?:^|\^@)33 99\r*\n/m);
      expect(r.code).toBe(6);
    });

    it('interactive input reaches the shell; its exit code is the run exit code', async () => {
      const r = await withTimeout(
        inTerminal(`'${process.execPath}' '${CLI}' run --tty -- sh`, 'echo hi-$((1+1))\nexit 5\n'),
        30_000,
        'interactive run',
      );
      // The echoed input shows "hi-$((1+1))"; only the shell's output has "hi-2".
      expect(r.output).toMatch(/hi-2/);
      expect(r.code).toBe(5);
    });
  });
});
