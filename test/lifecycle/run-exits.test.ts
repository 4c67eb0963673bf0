/**
 * Every way `run` ends leaves nothing behind, checked with real signals and
 * a private $TMPDIR per test (the sweeps then touch only this test's
 * directories):
 *  - Ctrl-C on a real terminal (util-linux `script`): the line discipline
 *    sends SIGINT to the foreground group, which holds `run` and nobody
 *    else; `run` forwards it, the process dies of it, `run` exits 130;
 *  - kill -9 of `run`: the `vmm`, the `agent` and the container's processes
 *    end, and the private directories are removed by the last one out;
 *  - kill -9 of the `agent`: the container's processes (a background child
 *    too) end, `run` fails promptly and cleans up;
 *  - `run … | head -n 2`: the process gets SIGPIPE (EPIPE when it ignores
 *    it), `run` dies of SIGPIPE (141 in $PIPESTATUS) without a stack trace;
 *  - a directory left by a dead owner is swept by the next `run`, one whose
 *    owner lives (or that has no record) is not.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUARDIAN_TITLE } from '../../src/agent/guardian.js';
import { Captured, CLI, exited, spawnCli, stopAll } from '../support/cli.js';
import {
  alive,
  cmdline,
  descendants,
  groupOf,
  isolatedTmp,
  privateDirs,
  until,
  untilGone,
} from './support.js';

afterAll(async () => {
  await stopAll();
});

/** The `vmm` and `agent` children of `runPid` once both are up, and the container's processes under the agent. */
async function stackOf(runPid: number, containerProcesses: number) {
  let vmm = 0;
  let agent = 0;
  await until(() => {
    for (const p of descendants(runPid)) {
      const c = cmdline(p);
      if (c.includes(' vmm ')) vmm = p;
      if (c.includes(' agent ')) agent = p;
    }
    return (
      vmm > 0 &&
      agent > 0 &&
      descendants(agent).filter((p) => !cmdline(p).includes(GUARDIAN_TITLE)).length >= containerProcesses
    );
  }, 'the vmm, the agent and the container processes');
  return { vmm, agent, all: descendants(runPid) };
}

describe('run: every exit leaves nothing behind', () => {
  it('Ctrl-C on a terminal reaches only run, which forwards it: exit 130, everything gone', async () => {
    const { tmp, env } = isolatedTmp();
    const marker = `ctrl-c-${process.pid}`;
    const term = spawn(
      'script',
      ['-qfec', `'${process.execPath}' '${CLI}' run -- sh -c 'echo ${marker}; exec sleep 60'`, '/dev/null'],
      { stdio: ['pipe', 'pipe', 'pipe'], env },
    );
    const out = new Captured(term.stdout);
    await out.waitFor(new RegExp(marker), 20_000);
    const runPid = descendants(term.pid!).find((p) => cmdline(p).includes(' run -- sh'))!;
    const stack = await stackOf(runPid, 1);
    // Their own sessions: the terminal's SIGINT is not for them.
    for (const p of [stack.vmm, stack.agent]) expect(groupOf(p).sid).toBe(p);
    term.stdin!.write('\x03');
    const { code } = await exited(term, 20_000);
    expect(code, out.text).toBe(130);
    expect(out.text).not.toMatch(/ttrpc|Error/);
    await untilGone([runPid, ...stack.all]);
    expect(privateDirs(tmp)).toEqual([]);
  });

  it('kill -9 of run: vmm, agent and the container processes end; the private directories go', async () => {
    const { tmp, env } = isolatedTmp();
    const run = spawnCli(['run', '--', 'sh', '-c', 'sleep 100 & echo ready; exec sleep 61'], { env });
    await new Captured(run.stdout).waitFor(/ready/, 20_000);
    const stack = await stackOf(run.pid!, 2);
    expect(privateDirs(tmp).length).toBe(2); // the stack's and the FIFOs'
    // Private: directories 0700, every socket (notify sockets too) and FIFO 0600.
    for (const d of privateDirs(tmp)) {
      expect(fs.statSync(d).mode & 0o777, d).toBe(0o700);
      for (const f of fs.readdirSync(d, { recursive: true }) as string[]) {
        const st = fs.statSync(path.join(d, f));
        if (st.isSocket() || st.isFIFO()) expect(st.mode & 0o777, f).toBe(0o600);
      }
    }
    run.kill('SIGKILL');
    await untilGone(stack.all);
    await until(() => privateDirs(tmp).length === 0, 'the private directories removed');
  });

  it('kill -9 of the agent: the container processes end (a background child too), run fails and cleans up', async () => {
    const { tmp, env } = isolatedTmp();
    const run = spawnCli(['run', '--', 'sh', '-c', 'sleep 100 & echo ready; exec sleep 62'], { env });
    const err = new Captured(run.stderr);
    await new Captured(run.stdout).waitFor(/ready/, 20_000);
    const stack = await stackOf(run.pid!, 2);
    const containers = descendants(stack.agent).filter((p) => cmdline(p).startsWith('sleep'));
    expect(containers).toHaveLength(2);
    process.kill(stack.agent, 'SIGKILL');
    await untilGone(containers);
    const { code } = await exited(run, 20_000);
    expect(code).toBe(1);
    expect(err.text).toMatch(/^passfd-broker: .+\n$/);
    await untilGone(stack.all);
    expect(privateDirs(tmp)).toEqual([]);
  });

  describe.each(['passfd', 'rpc'])('`run --io %s -- seq 1000000 | head -n 2`', (io) => {
    it('prints two lines, exits 141 (SIGPIPE) like a pipeline member, no stack trace, nothing left', async () => {
      const { tmp, env } = isolatedTmp();
      const r = spawnSync(
        'bash',
        [
          '-c',
          `'${process.execPath}' '${CLI}' run --io ${io} -- seq 1000000 | head -n 2; echo "ps=\${PIPESTATUS[*]}"`,
        ],
        { env, encoding: 'utf8', timeout: 60_000 },
      );
      expect(r.stdout).toBe('1\n2\nps=141 0\n');
      expect(r.stderr).toBe('');
      await until(() => privateDirs(tmp).length === 0, 'the private directories removed');
      expect(findProcessesUsing(tmp)).toEqual([]);
    });
  });

  it('a process that ignores SIGPIPE sees EPIPE on its write, as with a closed pipe', async () => {
    const { env } = isolatedTmp();
    const r = spawnSync(
      'bash',
      [
        '-c',
        `'${process.execPath}' '${CLI}' run -- sh -c 'trap "" PIPE; seq 1000000; echo "seq-status $?" >&2' | head -n 1; echo "ps=\${PIPESTATUS[*]}"`,
      ],
      { env, encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.stdout).toBe('1\nps=141 0\n');
    expect(r.stderr).toMatch(/seq: write error: Broken pipe\n/);
    expect(r.stderr).toMatch(/seq-status 1\n/);
  });

  it('the next run sweeps directories whose owner is provably gone, and only those', async () => {
    const { tmp, env } = isolatedTmp();
    const gone = spawnSync('true');
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const pidns = fs.readlinkSync('/proc/self/ns/pid');
    const ownStart = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19]!;
    const make = (name: string, owner: object | null) => {
      const d = path.join(tmp, name);
      fs.mkdirSync(d, { mode: 0o700 });
      fs.writeFileSync(path.join(d, 'leftover'), 'x');
      if (owner) fs.writeFileSync(path.join(d, '.owner'), JSON.stringify(owner));
      return d;
    };
    const dead = make('passfd-run-dead', { pid: gone.pid, start: '1', boot, pidns });
    const otherBoot = make('passfd-fifos-oldboot', { pid: process.pid, start: ownStart, boot: 'x', pidns });
    const reused = make('passfd-bench-reused', { pid: process.pid, start: '1', boot, pidns });
    const live = make('passfd-run-live', { pid: process.pid, start: ownStart, boot, pidns });
    const foreignNs = make('passfd-vm-ns', { pid: gone.pid, start: '1', boot, pidns: 'pid:[1]' });
    const unowned = make('passfd-run-norecord', null);
    const r = spawnCli(['run', '--', 'true'], { env });
    expect((await exited(r)).code).toBe(0);
    for (const d of [dead, otherBoot, reused]) expect(fs.existsSync(d), d).toBe(false);
    for (const d of [live, foreignNs, unowned]) expect(fs.existsSync(d), d).toBe(true);
  });
});

/** Processes whose command line mentions `dir` (a vmm or agent of a stack under it). */
function findProcessesUsing(dir: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => alive(p) && cmdline(p).includes(dir));
}
