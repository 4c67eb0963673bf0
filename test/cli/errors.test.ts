/**
 * Errors that say why, from the real CLI: `pass` tells a regular file,
 * /dev/null, a directory, a missing file and a guest port nobody listens on
 * apart (the last from the device's `ERR <reason>` line); bad flags and
 * environment variables are refused up front, naming themselves; a system
 * error shows its code once; `--version`; `run --log-level debug` reaches
 * the vmm and agent it starts; `bench` checks `--out` and `--chunk-size`
 * before starting anything.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isolatedTmp, privateDirs } from '../lifecycle/support.js';
import { Captured, exited, spawnCli, startVmm, stopAll, tmpDir } from '../support/cli.js';

afterAll(async () => {
  await stopAll();
});

async function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const c = spawnCli(args, { env });
  const out = new Captured(c.stdout);
  const err = new Captured(c.stderr);
  c.stdin!.end();
  const { code } = await exited(c, 30_000);
  return { code, stdout: out.text, stderr: err.text };
}

describe('pass says why', () => {
  it('tells a regular file, /dev/null, a directory, a missing file and a port nobody listens on apart', async () => {
    const vmm = await startVmm();
    const regular = path.join(vmm.dir, 'regular');
    fs.writeFileSync(regular, 'x');
    const fifo = path.join(vmm.dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const cases: [string, string][] = [
      [regular, `${regular} is a regular file: passfd needs an fd the device can poll`],
      ['/dev/null', '/dev/null is a character device that epoll cannot watch (EPERM)'],
      [vmm.dir, `cannot open ${vmm.dir}: EISDIR (illegal operation on a directory)`],
      [
        path.join(vmm.dir, 'nope'),
        `cannot open ${path.join(vmm.dir, 'nope')}: ENOENT (no such file or directory)`,
      ],
      [
        fifo,
        'passfd to guest port 4242 refused: the guest refused port 4242 (RST: nothing listens there, or it could not take the connection)',
      ],
    ];
    for (const [file, message] of cases) {
      const r = await cli(['pass', '--hvsock', vmm.hvsock, '--port', '4242', file]);
      expect(r.code, file).toBe(1);
      expect(r.stderr, file).toContain(`passfd-broker: ${message}`);
      expect(r.stderr.trim().split('\n'), file).toHaveLength(1);
    }
  });

  it('no device: says which socket, the error once, and the likely cause', async () => {
    const dir = tmpDir();
    const fifo = path.join(dir, 'f');
    execFileSync('mkfifo', [fifo]);
    const r = await cli(['pass', '--hvsock', path.join(dir, 'h.sock'), '--port', '1027', fifo]);
    expect(r.stderr).toBe(
      `passfd-broker: cannot reach the hybrid-vsock socket ${dir}/h.sock: ENOENT (no such file or directory): is the vmm running?\n`,
    );
  });
});

describe('bad input is refused up front, naming itself', () => {
  it.each([
    [
      ['pass', '--hvsock', '/x', '--port', '0', '/y'],
      /--port <port>' argument '0' is invalid\. must be a vsock port \(1\.\.4294967294/,
    ],
    [
      ['pass', '--hvsock', '/x', '--port', '4294967295', '/y'],
      /argument '4294967295' is invalid\. must be a vsock port/,
    ],
    [
      ['--log-level', 'loud', 'run', '--', 'true'],
      /--log-level <level>' argument 'loud' is invalid\. Allowed choices are error, warn, info, debug/,
    ],
    [['run', '-e', 'NOEQUALS', '--', 'true'], /argument 'NOEQUALS' is invalid\. must be KEY=value/],
    [['bench', '--chunk-size', '10GiB'], /--chunk-size 10GiB: at most 4032 KiB/],
    [
      ['agent', '--guest-dir', '/nonexistent', '--output-relay', 'sendfile'],
      /--output-relay <how>' argument 'sendfile' is invalid\. Allowed choices are auto, splice, copy/,
    ],
  ])('%j', async (args, message) => {
    const { tmp, env } = isolatedTmp();
    const r = await cli(args, env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(privateDirs(tmp)).toEqual([]); // nothing was started
  });

  it('environment variables are named in their errors', async () => {
    const log = await cli(['run', '--', 'true'], { ...process.env, PASSFD_LOG: 'loud' });
    expect(log).toMatchObject({
      code: 1,
      stderr: 'passfd-broker: PASSFD_LOG=loud: must be one of error, warn, info, debug\n',
    });
    const port = await cli(['agent', '--guest-dir', '/nonexistent'], {
      ...process.env,
      AGENT_PASSFD_LISTENER_PORT: 'abc',
    });
    expect(port.code).toBe(1);
    expect(port.stderr).toMatch(/^passfd-broker: AGENT_PASSFD_LISTENER_PORT=abc: must be a vsock port/);
  });

  it('a system error shows its code once', async () => {
    const r = await cli(['run', '--config', '/nonexistent.toml', '--', 'true']);
    expect(r.stderr).toBe(
      'passfd-broker: /nonexistent.toml: cannot read config file: ENOENT (no such file or directory)\n',
    );
  });

  it('bench --out that cannot be a directory fails at once, before anything starts', async () => {
    const { tmp, env } = isolatedTmp();
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    const t0 = Date.now();
    const r = await cli(['bench', '--quick', '--out', file], env);
    expect(r).toMatchObject({ code: 1, stderr: `passfd-broker: --out ${file}: not a directory\n` });
    const under = await cli(['bench', '--quick', '--out', path.join(file, 'sub')], env);
    expect(under.stderr).toBe(`passfd-broker: --out ${file}/sub: cannot create it (ENOTDIR)\n`);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(privateDirs(tmp)).toEqual([]);
  });
});

describe('--version and --log-level', () => {
  it('--version prints the package version', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8'));
    const r = await cli(['--version']);
    expect(r).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });

  it('run --log-level debug reaches the vmm and the agent it starts', async () => {
    const r = await cli(['--log-level', 'debug', 'run', '--', 'true']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/ debug vmm[/:]/);
    expect(r.stderr).toMatch(/ debug agent[/:]/);
    const quiet = await cli(['run', '--', 'true']);
    expect(quiet.stderr).toBe('');
  });
});
