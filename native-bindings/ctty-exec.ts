/**
 * A controlling-terminal exec step that needs nothing but the Node binary the
 * agent already runs on.
 *
 * A process gets a controlling terminal when, as a session leader, it calls
 * `ioctl(fd, TIOCSCTTY)`. That has to happen in the child between fork and
 * exec, and Node's `spawn` offers no hook there. The launcher therefore runs
 * a tiny step first, which then `exec`s the real command (same pid):
 * util-linux/busybox `setsid -c` when the guest has it, and otherwise this
 * trampoline: `node -e <script> <koffi> <json>` which calls `setsid()`,
 * `ioctl(0, TIOCSCTTY, 0)`, restores what Node changed in itself that
 * `execve` would carry over (Node ignores SIGPIPE and SIGXFSZ; ignored
 * signals and the signal mask survive exec), and `execvpe`s the command with
 * its environment. The trampoline's own environment is only `PATH` (which
 * `execvpe` searches), so a `NODE_OPTIONS` meant for the container process
 * cannot change how the trampoline itself starts. Cost: one Node start-up
 * (~40 ms) per terminal process, against ~1 ms for `setsid`.
 *
 * If a step fails, the trampoline writes one line to the terminal (fd 2) and
 * exits 127, as a shell does for a command it cannot run.
 */
import { createRequire } from 'node:module';

const koffiPath = createRequire(import.meta.url).resolve('koffi');

const SCRIPT = `'use strict';
const fs = require('node:fs');
const fail = (what) => { try { fs.writeSync(2, 'ctty-exec: ' + what + '\\n'); } catch {} process.exit(127); };
try {
  const koffi = require(process.argv[1]);
  const { args, env } = JSON.parse(process.argv[2]);
  const libc = koffi.load('libc.so.6');
  const setsid = libc.func('int setsid(void)');
  const ioctl = libc.func('ioctl', 'int', ['int', 'unsigned long', 'int']);
  const signal = libc.func('void *signal(int sig, void *handler)');
  const sigprocmask = libc.func('int sigprocmask(int how, const void *set, void *old)');
  const execvpe = libc.func('int execvpe(const char *file, const char **argv, const char **envp)');
  const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)');
  if (setsid() < 0) fail('setsid: errno ' + koffi.errno());
  if (ioctl(0, 0x540e /* TIOCSCTTY */, 0) < 0) fail('TIOCSCTTY: errno ' + koffi.errno());
  for (let sig = 1; sig < 32; sig++) if (sig !== 9 && sig !== 19) signal(sig, null /* SIG_DFL */);
  sigprocmask(2 /* SIG_SETMASK */, Buffer.alloc(128), null);
  // Node's start-up marks fds 0-2 close-on-exec when their file was opened
  // O_CLOEXEC (as the launcher opens the pty slave); the command needs them.
  for (let fd = 0; fd < 3; fd++) fcntl(fd, 2 /* F_SETFD */, 0);
  execvpe(args[0], [...args, null], [...env, null]);
  fail(args[0] + ': exec failed, errno ' + koffi.errno());
} catch (err) {
  fail(String(err && err.message));
}
`;

export interface ExecStep {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/** How to start `args` (with `env`, "K=V" strings) on a terminal already on fds 0-2, through Node. */
export function nodeCttyExec(args: readonly string[], env: readonly string[]): ExecStep {
  const path = env.find((e) => e.startsWith('PATH='))?.slice(5);
  return {
    file: process.execPath,
    args: ['-e', SCRIPT, koffiPath, JSON.stringify({ args, env })],
    env: path === undefined ? {} : { PATH: path },
  };
}
