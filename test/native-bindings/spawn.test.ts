// native-bindings/spawn.ts with real processes: posix_spawn places the given
// fds on 0-2, passes exactly the environment and cwd it was given, makes a
// session leader on request, resets every signal (even ones Node ignores)
// and unblocks them all; exec failures come back as SysErrors (ENOENT,
// EACCES, a missing cwd) with no child left behind; the pidfd becomes
// readable at the exit, `reap` decodes exit codes and signals, and no fd
// of ours is left open after any of it.

import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  closeQuietly,
  makePipe,
  pidfdOpen,
  pidfdSignal,
  posixSpawn,
  reap,
  SysError,
} from '../../native-bindings/index.js';
import {
  fdCount,
  fdinfoFlags,
  fdJanitor,
  isFdOpen,
  O_CLOEXEC_FLAG,
  openFds,
  readToEof,
  tempDir,
  waitFd,
} from './helpers.js';

const { track, onCleanup } = fdJanitor();

/** Runs `sh -c script` with stdout on a pipe; resolves the output and the reaped status. */
async function runSh(script: string, extra: { env?: string[]; cwd?: string; setsid?: boolean } = {}) {
  const [r, w] = makePipe(true);
  let pid: number;
  try {
    pid = posixSpawn({
      file: '/bin/sh',
      argv: ['sh', '-c', script],
      env: extra.env ?? ['PATH=/usr/bin:/bin'],
      cwd: extra.cwd,
      stdio: [w, w, 2],
      setsid: extra.setsid,
    });
  } catch (err) {
    closeQuietly(r);
    throw err;
  } finally {
    closeQuietly(w);
  }
  const pidfd = pidfdOpen(pid);
  const out = await readToEof(r, 10_000);
  await waitFd(pidfd, { readable: true }, 10_000);
  const status = reap(pid);
  closeQuietly(r);
  closeQuietly(pidfd);
  return { pid, out: out.toString(), status };
}

describe('posixSpawn', () => {
  it('gives the child exactly the fds, environment and cwd it was given', async () => {
    const dir = tempDir();
    onCleanup(dir.remove);
    const before = fdCount();
    // Our own fds are close-on-exec (Node's and native-bindings'); a test
    // runner may hand down others without it, which no spawn closes.
    const cloexec = openFds().filter(
      (fd) => fd > 2 && isFdOpen(fd) && (fdinfoFlags(fd) & O_CLOEXEC_FLAG) !== 0,
    );
    const { out, status } = await runSh('echo "$GREETING|$(pwd)|$HOME"; ls -l /proc/self/fd', {
      env: ['PATH=/usr/bin:/bin', 'GREETING=hello world'],
      cwd: dir.path,
    });
    const [line, , ...listing] = out.trim().split('\n');
    // "lrwx... 3 -> /proc/<pid>/fd" is ls's own directory fd: not inherited.
    const childFds = listing
      .map((l) => /\s(\d+) -> (.*)$/.exec(l))
      .filter((m) => m !== null && !/^\/proc\/\d+\/fd$/.test(m[2]!))
      .map((m) => m![1]!);
    expect(line).toBe(`hello world|${fs.realpathSync(dir.path)}|`);
    expect(childFds.map(Number)).toEqual(expect.arrayContaining([0, 1, 2]));
    expect(cloexec.length).toBeGreaterThan(0);
    expect(childFds.map(Number).filter((fd) => cloexec.includes(fd))).toEqual([]);
    expect(status).toEqual({ code: 0, signal: null });
    expect(fdCount()).toBe(before);
  });

  it('makes a session leader when asked, and not otherwise', async () => {
    const sid = (s: string) => s.trim().split(' ').slice(-2);
    const lead = await runSh("cut -d' ' -f1,6 /proc/$$/stat", { setsid: true });
    const [pid1, sid1] = sid(lead.out);
    expect(sid1).toBe(pid1);
    const plain = await runSh("cut -d' ' -f1,6 /proc/$$/stat");
    const [pid2, sid2] = sid(plain.out);
    expect(sid2).not.toBe(pid2);
  });

  it('starts with every signal at its default and none blocked, whatever this process ignores', async () => {
    // Node ignores SIGPIPE; a child must not inherit that.
    const { out } = await runSh('grep -E "^Sig(Blk|Ign)" /proc/self/status');
    expect(out).toBe('SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n');
  });

  it('reports exit codes and deadly signals', async () => {
    expect((await runSh('exit 42')).status).toEqual({ code: 42, signal: null });
    expect((await runSh('kill -PIPE $$')).status).toEqual({ code: null, signal: 13 });
  });

  it('rejects a missing file, a non-executable one and a missing cwd with SysErrors, leaving nothing behind', () => {
    const dir = tempDir();
    onCleanup(dir.remove);
    const plain = path.join(dir.path, 'plain');
    fs.writeFileSync(plain, '#!/bin/sh\n', { mode: 0o644 });
    const before = fdCount();
    const attempt = (file: string, cwd?: string) => () =>
      posixSpawn({ file, argv: [file], env: [], cwd, stdio: [0, 1, 2] });
    expect(attempt('/nonexistent/cmd')).toThrow(SysError);
    expect(attempt('/nonexistent/cmd')).toThrow(/ENOENT/);
    expect(attempt(plain)).toThrow(/EACCES/);
    expect(attempt('/bin/true', path.join(dir.path, 'gone'))).toThrow(/ENOENT/);
    expect(() => posixSpawn({ file: '/bin/true', argv: [], env: [], stdio: [0, 1, 2] })).toThrow(TypeError);
    expect(fdCount()).toBe(before);
    // No zombie or child of ours: waitpid(-1) has nothing to collect.
    expect(() => reap(-1)).toThrow(/ECHILD/);
  });

  it('signals through the pidfd, and says false once the process is gone', async () => {
    const pid = posixSpawn({ file: '/bin/sleep', argv: ['sleep', '30'], env: [], stdio: [0, 1, 2] });
    const pidfd = pidfdOpen(pid);
    track(pidfd);
    expect(reap(pid)).toBeNull();
    expect(pidfdSignal(pidfd, 15)).toBe(true);
    await waitFd(pidfd, { readable: true }, 10_000);
    expect(reap(pid)).toEqual({ code: null, signal: 15 });
    expect(pidfdSignal(pidfd, 15)).toBe(false);
  });

  it('accepts fds 0-2 as sources (lifted above 2 before the dup2s)', async () => {
    // stdio [2, 1, 0]: a naive dup2 order would clobber fd 0 before using it.
    const pid = posixSpawn({ file: '/bin/true', argv: ['true'], env: [], stdio: [2, 1, 0] });
    const pidfd = pidfdOpen(pid);
    track(pidfd);
    await waitFd(pidfd, { readable: true }, 10_000);
    expect(reap(pid)).toEqual({ code: 0, signal: null });
  });
});
