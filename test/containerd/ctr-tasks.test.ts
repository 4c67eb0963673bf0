/**
 * Task lifecycle through containerd-shim-passfd-v2 with the real `ctr`, in
 * the loopback guest, on both IO paths: a terminal (`ctr run -t` under
 * `script`: the tty name, the exit code, `stty size` after a resize),
 * `ctr task exec` with its own stdio, `ctr run -d` then `ctr task attach`,
 * `ps`, `kill -s SIGKILL`, `ls`, `rm`, `c rm`, `task metrics`, the /tasks/* events, and the
 * shim SIGKILLed under a running task (containerd's `delete` must leave
 * nothing). Every test ends with a leak check of this containerd's
 * processes, mounts, tasks, sockets and files.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RUNTIME_PROCESS } from '../../src/bench/containerd.js';
import { IO_PATHS, MiB, ownProcesses, sha256, useCtrSuite } from './support.js';

const suite = useCtrSuite();

/** Collects a child's output; `until(re)` resolves once stdout matches. */
function watch(child: ChildProcess) {
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    closed,
    until: (re: RegExp, timeoutMs = 30_000) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${re} within ${timeoutMs} ms in: ${out} / ${err}`)),
          timeoutMs,
        );
        const check = () => {
          const m = out.match(re);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          } else waiters.push(check);
        };
        check();
      }),
  };
}

/** Resolves with the child's exit code, killing it (SIGKILL) after `timeoutMs`. */
async function bounded(w: ReturnType<typeof watch>, child: ChildProcess, timeoutMs = 60_000) {
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await w.closed;
  clearTimeout(timer);
  return code;
}

describe.each(IO_PATHS)('ctr tasks (%s)', (io) => {
  it('-t under script: the tty, the exit code, and stty size before and after a resize', async () => {
    const id = suite.id('tty');
    const ctr = ['ctr', ...suite.d.ctrArgs(), ...suite.runArgs(io, id, [], ['--rm', '-t'])];
    // ctr sizes the terminal right after Start; the process may run before that (with runc too):
    // wait (bounded) for the size, print it, wait for the resize, print it again.
    const inner = [
      'tty',
      'i=0; until [ "$(stty size 2>/dev/null)" = "30 100" ] || [ $i -ge 400 ]; do sleep 0.05; i=$((i+1)); done',
      'stty size',
      'i=0; while [ "$(stty size)" = "30 100" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done',
      'stty size',
      'exit 5',
    ].join('; ');
    const quoted = [...ctr, 'sh', '-c', inner].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    // script gives ctr a terminal: its own pty, whose name the shell prints first.
    const child = spawn('script', ['-qec', `tty; stty rows 30 cols 100; exec ${quoted}`, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const w = watch(child);
    const scriptPty = (await w.until(/^(\/dev\/pts\/\d+)\r?$/m))[1]!;
    await w.until(/30 100/);
    // Resize ctr's terminal: the kernel sends it SIGWINCH, it sends ResizePty, the agent TtyWinResize.
    execFileSync('stty', ['-F', scriptPty, 'rows', '40', 'cols', '120']);
    const code = await bounded(w, child);
    child.stdin!.destroy();
    const lines = w.out.split('\n').map((l) => l.replace(/\r+$/, ''));
    expect(code).toBe(5);
    expect(lines[1]).toMatch(/^\/dev\/pts\/\d+$/); // the container's own tty
    expect(lines[2]).toBe('30 100');
    expect(lines[3]).toBe('40 120');
  });

  it('ctr task exec runs a second process with its own stdio and exit code', async () => {
    const id = suite.id('exec');
    const r = await suite.d.ctr(suite.runArgs(io, id, ['sleep', '1000'], ['-d']), {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    const e = await suite.ctr([
      'task',
      'exec',
      '--exec-id',
      'e1',
      id,
      'sh',
      '-c',
      'echo exec-out; echo exec-err >&2; ps -o pid,comm; exit 4',
    ]);
    expect(e.code).toBe(4);
    expect(e.stderr).toBe('exec-err\n');
    expect(e.stdout).toMatch(/^exec-out\n/);
    // The same PID namespace: the container's init is PID 1 there (the exec's shell is not).
    expect(e.stdout).toMatch(/^\s*1 sleep$/m);
    expect(e.stdout).not.toMatch(/^\s*1 sh$/m);
    // An exec with stdin: 8 MiB through sha256sum.
    const data = randomBytes(8 * MiB);
    const child = suite.d.spawnCtr([
      'task',
      'exec',
      '--exec-id',
      'e2',
      id,
      'sh',
      '-c',
      'echo ready >&2; exec sha256sum',
    ]);
    const w = watch(child);
    child.stdin!.on('error', () => {});
    child.stderr!.once('data', () => child.stdin!.end(data));
    expect(await bounded(w, child)).toBe(0);
    expect(w.out).toBe(`${sha256(data)}  -\n`);
    expect((await suite.ctr(['task', 'kill', '-s', 'SIGKILL', id])).code).toBe(0);
    await suite.waitTask(id, 'STOPPED');
    expect((await suite.ctr(['task', 'rm', id])).code).toBe(0);
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });

  it('ctr task metrics: the container’s tasks, CPU time and memory (cgroup v2 metrics from the agent)', async () => {
    const id = suite.id('metrics');
    // A few tenths of a second of CPU in the shell, then two sleeps (the shell becomes one of them: same process, same CPU time).
    const burn =
      'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 1000 & echo burnt; exec sleep 1000';
    const r = await suite.d.ctr(suite.runArgs(io, id, ['sh', '-c', burn], ['-d']), { timeoutMs: 60_000 });
    expect(r.code).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    const metric = (text: string, name: string) => {
      const m = new RegExp(`^${name.replace('.', '\\.')}\\s+(\\d+)`, 'm').exec(text);
      return m ? Number(m[1]) : Number.NaN;
    };
    // Until the loop is over: two sleeps left.
    let out = '';
    const until = Date.now() + 60_000;
    for (;;) {
      const m = await suite.ctr(['task', 'metrics', id]);
      expect(m.code, m.stderr).toBe(0);
      out = m.stdout;
      if (metric(out, 'pids.current') === 2 || Date.now() > until) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(metric(out, 'pids.current'), out).toBe(2);
    const usage = metric(out, 'cpu.usage_usec');
    expect(usage, out).toBeGreaterThan(100_000); // the loop's CPU (~0.35 s here), kept across exec
    expect(metric(out, 'cpu.user_usec') + metric(out, 'cpu.system_usec')).toBe(usage);
    const mem = metric(out, 'memory.usage');
    expect(mem, out).toBeGreaterThan(0);
    expect(mem).toBeLessThan(64 * MiB); // two busybox sleeps, not the host's or the agent's memory
    expect(metric(out, 'memory.usage_limit')).toBeGreaterThan(mem);
    expect((await suite.ctr(['task', 'kill', '-s', 'SIGKILL', id])).code).toBe(0);
    await suite.waitTask(id, 'STOPPED');
    // A stopped task has no metrics (containerd drops the shim's refusal and ctr says so), and no hang.
    const stopped = await suite.ctr(['task', 'metrics', id]);
    expect(stopped.code).not.toBe(0);
    expect(stopped.stderr).toMatch(/no metrics received/);
    expect((await suite.ctr(['task', 'rm', id])).code).toBe(0);
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });

  it('run -d, attach, ps, ls, kill -s SIGKILL, rm, c rm', async () => {
    const id = suite.id('detach');
    const loop = 'echo started; while read l; do echo "got $l"; done; echo bye; exit 3';
    const r = await suite.d.ctr(suite.runArgs(io, id, ['sh', '-c', loop], ['-d']), {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    const ls = (await suite.ctr(['task', 'ls'])).stdout;
    const pid = Number(new RegExp(`^${id}\\s+(\\d+)\\s+RUNNING`, 'm').exec(ls)![1]);
    // The task's pid is the VM's (the shim, whose process hosts the loopback guest's device), as Kata reports it.
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('containerd-shim-passfd-v2.js');
    const ps = await suite.ctr(['task', 'ps', id]);
    expect(ps.stdout).toMatch(new RegExp(`^${pid}\\s`, 'm'));
    // Re-attach to the detached task: its stdin and its output.
    const child = suite.d.spawnCtr(['task', 'attach', id]);
    const w = watch(child);
    child.stdin!.on('error', () => {});
    child.stdin!.write('one\n');
    await w.until(/got one/);
    child.stdin!.write('two\n');
    await w.until(/got two/);
    child.kill('SIGKILL');
    await w.closed;
    // A second attach still reaches it.
    const again = suite.d.spawnCtr(['task', 'attach', id]);
    const w2 = watch(again);
    again.stdin!.on('error', () => {});
    again.stdin!.write('three\n');
    await w2.until(/got three/);
    again.kill('SIGKILL');
    await w2.closed;
    expect((await suite.ctr(['task', 'kill', '-s', 'SIGKILL', id])).code).toBe(0);
    await suite.waitTask(id, 'STOPPED');
    const rm = await suite.ctr(['task', 'rm', id]);
    expect(rm.code).toBe(0);
    expect(rm.stderr).toContain('exit code 137');
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });

  it('publishes /tasks/create, start, exit and delete to containerd', async () => {
    const events = suite.d.spawnCtr(['events']);
    const w = watch(events);
    try {
      const id = suite.id('events');
      expect((await suite.run(io, id, ['sh', '-c', 'exit 9'])).code).toBe(9);
      await w.until(new RegExp(`/tasks/delete.*${id}`));
      const mine = w.out.split('\n').filter((l) => l.includes(id));
      const topics = mine.map((l) => /\/tasks\/[a-z-]+/.exec(l)?.[0]).filter(Boolean);
      expect(topics).toEqual(
        expect.arrayContaining(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']),
      );
      // ctr decoded the events (its typeurl knows containerd.events.TaskExit): the exit status is there.
      expect(mine.find((l) => l.includes('/tasks/exit'))).toMatch(/exit_status.?:9/);
    } finally {
      events.kill('SIGKILL');
      await w.closed;
    }
  });

  it('a SIGKILLed shim under a running task: containerd’s delete leaves nothing behind', async () => {
    const id = suite.id('shimkill');
    const r = await suite.d.ctr(suite.runArgs(io, id, ['sh', '-c', 'sleep 1000 & exec sleep 1000'], ['-d']), {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    const ls = (await suite.ctr(['task', 'ls'])).stdout;
    const shimPid = Number(new RegExp(`^${id}\\s+(\\d+)`, 'm').exec(ls)![1]);
    const before = ownProcesses(suite.d);
    expect(before.length).toBeGreaterThanOrEqual(4); // shim, the agent's guardian, the container's helper, its processes
    // What bench --scenarios containerd counts as the runtime's CPU: the shim, with the loopback guest and agent inside.
    expect(before.filter((p) => RUNTIME_PROCESS.test(p))).toHaveLength(1);
    process.kill(shimPid, 'SIGKILL');
    // The guest's processes die with the shim (they run under a parent-death signal); containerd
    // notices the disconnect, runs `<shim> delete`, which kills whatever is still there and takes the
    // rootfs off (it says what it cleaned up: containerd logs it as "cleanup warnings"), then removes
    // the bundle. The leak check after the test proves nothing of `before` is left.
    const until = Date.now() + 30_000;
    while (Date.now() < until && fs.existsSync(suite.d.bundle(id))) {
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(fs.existsSync(suite.d.bundle(id))).toBe(false);
    expect(suite.d.log()).toMatch(
      new RegExp(`cleanup warnings passfd-shim delete ${id}: (killed \\d+ leftover process|unmounted )`),
    );
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });
});
