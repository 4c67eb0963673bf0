/**
 * A container process in its own root filesystem and namespaces
 * (process/container-root.ts, through spawnContainerProcess's `container`
 * option), with real util-linux tools and a busybox root: PID 1 in a new
 * PID namespace, hostname, uid/gid/groups, cwd, the /dev it gets, its stdin
 * and exit codes (137 when SIGKILLed, through the shell that waits for
 * it), an exec joining its namespaces, checks that fail before anything
 * runs, and paths resolved inside the root (root-path.ts).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PreparedMount, plan, prepareMountPoints } from '../../src/agent/process/container-mounts.js';
import { spawnContainerProcess } from '../../src/agent/process/container-process.js';
import type { ContainerNamespaces } from '../../src/agent/process/container-root.js';
import { resolveCommandInRoot, resolveInRoot } from '../../src/agent/process/root-path.js';
import { writeBusyboxRootfs } from '../../src/containerd/busybox-image.js';
import { mountsUnder } from '../../src/util/mountinfo.js';
import { collect, streamPair } from './helpers.js';

let dir: string;
let root: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-croot-'));
  root = path.join(dir, 'root');
  writeBusyboxRootfs(root);
  fs.mkdirSync(path.join(root, 'work'));
});

afterAll(() => {
  expect(mountsUnder(dir)).toEqual([]);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs `script` in the root (stdout and stderr on streams); resolves with its output and status. */
async function run(
  script: string,
  opts: {
    user?: { uid: number; gid: number; additionalGids?: number[] };
    joinPid?: number;
    namespaces?: ContainerNamespaces;
    mounts?: PreparedMount[];
    hostname?: string;
    cwd?: string;
    stdin?: string;
  } = {},
) {
  const out = streamPair();
  const err = streamPair();
  const input = streamPair();
  const proc = await spawnContainerProcess({
    args: ['sh', '-c', script],
    env: ['PATH=/bin', 'HOME=/root'],
    cwd: opts.cwd ?? '/',
    stdinFd: input.agent,
    stdoutFd: out.agent,
    stderrFd: err.agent,
    container: {
      root,
      runtimeDir: dir,
      hostname: opts.hostname ?? 'croot',
      ...(opts.user ? { user: opts.user } : {}),
      ...(opts.joinPid ? { joinPid: opts.joinPid } : {}),
      ...(opts.namespaces ? { namespaces: opts.namespaces } : {}),
      ...(opts.mounts ? { mounts: opts.mounts } : {}),
    },
  });
  fs.writeSync(input.test, opts.stdin ?? '');
  fs.closeSync(input.test);
  const o = collect(out.test);
  const e = collect(err.test);
  return {
    proc,
    result: Promise.all([proc.wait(), o.done, e.done]).then(([st, so, se]) => ({
      status: st.status,
      out: so.text,
      err: se.text,
    })),
  };
}

describe('a process in a container root', () => {
  it('is PID 1 of its own PID namespace, with the root, hostname, user, cwd and /dev it was given', async () => {
    const { result } = await run('echo $$; hostname; id; pwd; ls /; ls /dev; cat; exit 3', {
      user: { uid: 1000, gid: 1000, additionalGids: [5] },
      cwd: '/work',
      hostname: 'box',
      stdin: 'from stdin\n',
    });
    const r = await result;
    expect(r.err).toBe('');
    expect(r.status).toBe(3);
    const lines = r.out.split('\n');
    expect(lines.slice(0, 4)).toEqual(['1', 'box', 'uid=1000(user) gid=1000(user) groups=5', '/work']);
    expect(lines.slice(4, 12)).toEqual(['bin', 'dev', 'etc', 'proc', 'root', 'sys', 'tmp', 'work']);
    for (const d of [
      'null',
      'zero',
      'full',
      'random',
      'urandom',
      'tty',
      'ptmx',
      'pts',
      'shm',
      'fd',
      'stdin',
      'stdout',
      'stderr',
    ]) {
      expect(lines).toContain(d);
    }
    expect(lines.at(-2)).toBe('from stdin');
  });

  it('reports 137 when SIGKILLed, handles SIGTERM only when it installed a handler', async () => {
    const plain = await run('echo up; exec sleep 100');
    expect(plain.proc.containerPid).toBeGreaterThan(1);
    expect(plain.proc.handlesSignal('SIGTERM')).toBe(false);
    plain.proc.signal('SIGKILL');
    expect((await plain.result).status).toBe(137);
    const trapped = await run('trap "echo bye; exit 4" TERM; echo up; while :; do sleep 0.05; done');
    // The handler is installed once the shell has run `trap`: wait for it.
    const until = Date.now() + 10_000;
    while (!trapped.proc.handlesSignal('SIGTERM') && Date.now() < until)
      await new Promise((r) => setTimeout(r, 20));
    trapped.proc.signal('SIGTERM');
    const t = await trapped.result;
    expect(t.status).toBe(4);
    expect(t.out).toBe('up\nbye\n');
  });

  it('an exec joins the init’s namespaces and root', async () => {
    const init = await run('hostname; exec sleep 100', { hostname: 'joined' });
    const exec = await run('hostname; ps -o pid,comm; ls /proc/1/root/bin/busybox', {
      joinPid: init.proc.containerPid!,
    });
    const e = await exec.result;
    expect(e.status).toBe(0);
    expect(e.out.split('\n')[0]).toBe('joined');
    expect(e.out).toContain('/proc/1/root/bin/busybox');
    expect(e.out).toMatch(/^\s*1 sleep$/m); // the init's PID namespace
    init.proc.signal('SIGKILL');
    expect((await init.result).status).toBe(137);
  });

  it('a pod container shares its sandbox’s IPC and UTS namespaces, its PID namespace only when asked', async () => {
    const ns = '$(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/uts) $(readlink /proc/self/ns/pid)';
    const sandbox = await run(`echo ${ns}; hostname; exec sleep 100`, { hostname: 'pod-host' });
    const pid = sandbox.proc.containerPid!;
    // The sandbox's first line: read it through a second view of the same namespaces.
    const peek = await run(`echo ${ns}`, { joinPid: pid });
    const [sIpc, sUts, sPid] = (await peek.result).out.trim().split(' ');
    const member = await run(`echo ${ns}; hostname; ps -o comm`, {
      hostname: 'ignored',
      namespaces: { ipc: pid, uts: pid, pid: 'new' },
    });
    const m = await member.result;
    expect(m.status).toBe(0);
    const [ipc, uts, pidNs] = m.out.split('\n')[0]!.split(' ');
    expect([ipc, uts]).toEqual([sIpc, sUts]);
    expect(pidNs).not.toBe(sPid);
    // A shared UTS namespace keeps the sandbox's hostname; its own PID namespace shows no sleep.
    expect(m.out.split('\n')[1]).toBe('pod-host');
    expect(m.out).not.toMatch(/sleep/);
    const sharedPid = await run('ps -o comm', { namespaces: { ipc: pid, uts: pid, pid } });
    expect((await sharedPid.result).out).toMatch(/sleep/);
    const own = await run(`echo ${ns}`, { namespaces: { ipc: 'new', uts: 'new', pid: 'new' } });
    const [oIpc, oUts] = (await own.result).out.trim().split(' ');
    expect(oIpc).not.toBe(sIpc);
    expect(oUts).not.toBe(sUts);
    sandbox.proc.signal('SIGKILL');
    expect((await sandbox.result).status).toBe(137);
  });

  it('a network namespace: the agent’s, a new one, or one joined from its file (a pod’s, made by CNI)', async () => {
    const netOf = async (namespaces: ContainerNamespaces) =>
      (await (await run('readlink /proc/self/ns/net', { namespaces })).result).out.trim();
    const own = fs.readlinkSync('/proc/self/ns/net');
    expect(await netOf({ net: 'guest' })).toBe(own);
    const fresh = await netOf({ net: 'new' });
    expect(fresh).toMatch(/^net:\[\d+\]$/);
    expect(fresh).not.toBe(own);
    // A persistent namespace, as `ip netns add` makes one: nsfs bound on a file.
    const file = path.join(dir, 'pod-netns');
    fs.writeFileSync(file, '');
    execFileSync('unshare', [`--net=${file}`, 'true']);
    try {
      const inode = fs.statSync(file).ino;
      expect(await netOf({ net: { path: file } })).toBe(`net:[${inode}]`);
      await expect(
        run('true', { namespaces: { net: { path: path.join(dir, 'no-such-netns') } } }),
      ).rejects.toThrow();
    } finally {
      execFileSync('umount', [file]);
    }
  });

  it('makes a bind mount’s point in the fresh /dev (a pod’s termination log and shared /dev/shm)', async () => {
    const shm = path.join(dir, 'pod-shm');
    const log = path.join(dir, 'termination-log');
    fs.mkdirSync(shm, { recursive: true });
    fs.writeFileSync(log, '');
    const mounts = prepareMountPoints(
      root,
      plan([
        { destination: '/dev/shm', source: shm, type: 'bind', options: ['rbind', 'rw'] },
        { destination: '/dev/termination-log', source: log, type: 'bind', options: ['rbind', 'rw'] },
      ]),
    );
    const r = await (await run('echo shared > /dev/shm/x; echo done > /dev/termination-log', { mounts }))
      .result;
    expect(r).toMatchObject({ status: 0, err: '' });
    expect(fs.readFileSync(path.join(shm, 'x'), 'utf8')).toBe('shared\n');
    expect(fs.readFileSync(log, 'utf8')).toBe('done\n');
  });

  it('fails before anything runs for a missing command or working directory', async () => {
    await expect(run('true', { cwd: '/nope' })).rejects.toThrow('chdir to cwd ("/nope")');
    const out = streamPair();
    await expect(
      spawnContainerProcess({
        args: ['no-such-cmd'],
        env: ['PATH=/bin'],
        stdoutFd: out.agent,
        container: { root, runtimeDir: dir },
      }),
    ).rejects.toMatchObject({
      code: 'ENOENT',
      message: 'exec: "no-such-cmd": executable file not found in $PATH',
    });
    fs.closeSync(out.test);
  });
});

describe('paths inside a root', () => {
  it('follows symlinks inside the root, never above it', () => {
    fs.symlinkSync('/bin/busybox', path.join(root, 'abs-link'));
    fs.symlinkSync('../../../../etc', path.join(root, 'work/up'));
    expect(resolveInRoot(root, '/bin/sh')).toBe(path.join(root, 'bin/busybox'));
    expect(resolveInRoot(root, '/abs-link')).toBe(path.join(root, 'bin/busybox'));
    expect(resolveInRoot(root, '/work/up/passwd')).toBe(path.join(root, 'etc/passwd'));
    expect(resolveInRoot(root, '../../..', '/work')).toBe(root);
    expect(resolveInRoot(root, 'missing/x', '/work')).toBe(path.join(root, 'work/missing/x'));
    fs.symlinkSync('loop2', path.join(root, 'loop1'));
    fs.symlinkSync('loop1', path.join(root, 'loop2'));
    expect(() => resolveInRoot(root, '/loop1')).toThrow('too many levels of symbolic links');
  });

  it('finds a command on the PATH of the process, keeping its name', () => {
    expect(resolveCommandInRoot(root, 'sh', '/usr/bin:/bin', '/')).toBe('/bin/sh');
    expect(resolveCommandInRoot(root, './../bin/sh', undefined, '/work')).toBe('/bin/sh');
    expect(() => resolveCommandInRoot(root, 'node', '/bin', '/')).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
    fs.writeFileSync(path.join(root, 'bin/noexec'), '');
    expect(() => resolveCommandInRoot(root, 'noexec', '/bin', '/')).toThrow(
      expect.objectContaining({ code: 'EACCES' }),
    );
  });
});
