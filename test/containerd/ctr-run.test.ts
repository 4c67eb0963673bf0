/**
 * `ctr run` through containerd-shim-passfd-v2 in the loopback guest, on both
 * IO paths (passfd, and the RPC-copy path with `use_passfd_io = false`),
 * against a private containerd: output, exit codes, stdin and stdout
 * byte-exact at 64 MiB, the image's root filesystem with the spec's
 * hostname and user, and clear errors (with nothing left behind) for a
 * missing binary or root filesystem. Every test ends with a leak check of
 * this containerd's processes, mounts, tasks, sockets and files.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeBusyboxRootfs } from '../../src/containerd/busybox-image.js';
import { IO_PATHS, MiB, RUNTIME, sha256, useCtrSuite } from './support.js';

const suite = useCtrSuite();

describe('ctr run: the guest', () => {
  it('a guest that fails to boot fails the create with a clear error and leaves nothing behind', async () => {
    const r = await suite.run('noqemu', suite.id('noboot'), ['true']);
    expect(r.code).not.toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.stderr).toContain('failed to create shim task');
    expect(r.stderr).toContain('the guest did not start');
    expect(r.stderr).toContain('/nonexistent/qemu-system-x86_64');
    // The VM stack keeps the guest's console and vmm log for a guest that failed, and says where.
    const kept = /kept at (\S+\.log)/.exec(r.stderr)?.[1];
    expect(kept && fs.existsSync(kept)).toBeTruthy();
    fs.rmSync(kept!);
  });
});

describe.each(IO_PATHS)('ctr run (%s)', (io) => {
  it('prints hello, keeps stdout and stderr apart, and exits with the command’s code', async () => {
    const hello = await suite.run(io, suite.id('hello'), ['echo', 'hello']);
    expect(hello).toMatchObject({ code: 0, stdout: 'hello\n', stderr: '' });
    const r = await suite.run(io, suite.id('exit'), ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n', timedOut: false });
  });

  it('64 MiB of stdin reach sha256sum in the container intact', async () => {
    const data = randomBytes(64 * MiB);
    const r = await suite.runPiped(
      io,
      suite.id('stdin'),
      ['sh', '-c', 'echo ready >&2; exec sha256sum'],
      data,
    );
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`${sha256(data)}  -\n`);
  });

  it('64 MiB through cat come back byte-exact', async () => {
    const data = randomBytes(64 * MiB);
    const r = await suite.runPiped(io, suite.id('cat'), ['sh', '-c', 'echo ready >&2; exec cat'], data);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(data.length);
    expect(sha256(r.stdout)).toBe(sha256(data));
  });

  it('the process sees the image’s root, writable, with /proc, /dev and its own PID namespace', async () => {
    const r = await suite.run(io, suite.id('root'), [
      'sh',
      '-c',
      'ls /; echo written > /tmp/f && cat /tmp/f; ps -o pid,comm; ls /dev; hostname',
    ]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const lines = r.stdout.split('\n');
    // The image's root: bin dev etc proc root sys tmp, and run (the default spec's tmpfs, its mount
    // point made as runc makes it), nothing of the host's (no usr, home, …).
    expect(lines.slice(0, 8)).toEqual(['bin', 'dev', 'etc', 'proc', 'root', 'run', 'sys', 'tmp']);
    expect(lines[8]).toBe('written');
    // Its own PID namespace: the shell is PID 1.
    expect(r.stdout).toMatch(/^\s*1 sh$/m);
    for (const dev of ['null', 'zero', 'urandom', 'tty', 'pts', 'ptmx', 'full', 'random', 'shm']) {
      expect(lines).toContain(dev);
    }
    // No hostname in ctr's default spec: the guest's (here, the loopback guest is the host).
    expect(lines.at(-2)).toBe(os.hostname());
  });

  it('a spec’s hostname, user, groups, cwd and env apply, with a directory as root (no mounts)', async () => {
    const id = suite.id('spec');
    // ctr 1.6 has no --hostname or --user: a whole spec (ctr's default, changed), which ctr runs
    // without an image, so its root is a plain directory.
    const rootfs = path.join(suite.d.dir, `${id}-rootfs`);
    writeBusyboxRootfs(rootfs);
    const spec = JSON.parse((await suite.ctr(['oci', 'spec'])).stdout);
    spec.root = { path: rootfs, readonly: false };
    spec.hostname = 'passfd-box';
    spec.process.user = { uid: 1000, gid: 1000, additionalGids: [1000, 5] };
    spec.process.env = ['PATH=/bin', 'GREETING=hi there'];
    spec.process.cwd = '/tmp';
    spec.process.args = [
      'sh',
      '-c',
      'hostname; id; pwd; echo "$GREETING"; touch /tmp/by-user; stat -c %u:%g /tmp/by-user',
    ];
    const specFile = path.join(suite.d.dir, `${id}.json`);
    fs.writeFileSync(specFile, JSON.stringify(spec));
    const r = await suite.ctr(
      [
        'run',
        '--rm',
        '--runtime',
        RUNTIME,
        '--runtime-config-path',
        suite.configs[io]!,
        '--fifo-dir',
        suite.d.fifoDir,
        '--config',
        specFile,
        id,
      ],
      { timeoutMs: 60_000 },
    );
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout.split('\n')).toEqual([
      'passfd-box',
      'uid=1000(user) gid=1000(user) groups=5,1000(user)',
      '/tmp',
      'hi there',
      '1000:1000',
      '',
    ]);
    // The file the container wrote is in the directory, owned by its user.
    expect(fs.statSync(path.join(rootfs, 'tmp/by-user')).uid).toBe(1000);
    fs.rmSync(rootfs, { recursive: true });
    fs.rmSync(specFile);
  });

  it('ctr run --mount: read-only and read-write binds of a directory and of a file, and a tmpfs', async () => {
    const id = suite.id('mount');
    const ro = fs.mkdtempSync(path.join(suite.d.dir, 'ro-'));
    fs.writeFileSync(path.join(ro, 'in.txt'), 'from-host\n');
    const rw = fs.mkdtempSync(path.join(suite.d.dir, 'rw-'));
    const file = path.join(suite.d.dir, `${id}-single.txt`);
    fs.writeFileSync(file, 'one-file\n');
    const r = await suite.run(
      io,
      id,
      [
        'sh',
        '-c',
        [
          'cat /data/in.txt',
          'touch /data/new 2>/dev/null && echo ro-writable || echo ro-refused',
          'cat /etc/single.txt',
          'echo written > /out/w.txt',
          'echo scratch > /scratch/s && cat /scratch/s',
          'cat /proc/self/mounts',
        ].join('; '),
      ],
      {
        flags: [
          '--mount',
          `type=bind,src=${ro},dst=/data,options=rbind:ro`,
          '--mount',
          `type=bind,src=${file},dst=/etc/single.txt,options=bind:ro`,
          '--mount',
          `type=bind,src=${rw},dst=/out,options=rbind:rw`,
          '--mount',
          'type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m:mode=0755',
        ],
      },
    );
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const lines = r.stdout.split('\n');
    expect(lines.slice(0, 4)).toEqual(['from-host', 'ro-refused', 'one-file', 'scratch']);
    const mounts = lines.slice(4).map((l) => l.split(' '));
    const at = (dest: string) => mounts.find((m) => m[1] === dest);
    expect(at('/data')?.[3]).toMatch(/^ro,/);
    expect(at('/out')?.[3]).toMatch(/^rw,/);
    expect(at('/etc/single.txt')?.[3]).toMatch(/^ro,/);
    expect(at('/scratch')?.slice(2, 4)).toEqual(['tmpfs', expect.stringMatching(/size=1024k/)]);
    // containerd's default spec mounts a tmpfs on /run too.
    expect(at('/run')?.[2]).toBe('tmpfs');
    // The read-write bind wrote through to the host; the read-only one did not.
    expect(fs.readFileSync(path.join(rw, 'w.txt'), 'utf8')).toBe('written\n');
    expect(fs.readdirSync(ro)).toEqual(['in.txt']);
    // The binds lived in the container's mount namespace only: nothing of them on the host.
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(ro);
    fs.rmSync(ro, { recursive: true });
    fs.rmSync(rw, { recursive: true });
    fs.rmSync(file);
  });

  it('a bind mount whose source does not exist, or a mount type the guest cannot make, fails the create clearly', async () => {
    const missing = path.join(suite.d.dir, 'no-such-dir');
    const r = await suite.run(io, suite.id('nosrc'), ['true'], {
      flags: ['--mount', `type=bind,src=${missing},dst=/data,options=rbind:ro`],
    });
    expect(r.code).not.toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.stderr).toContain('failed to create shim task');
    expect(r.stderr).toContain(`bind mount source ${missing} does not exist`);
    const t = await suite.run(io, suite.id('badtype'), ['true'], {
      flags: ['--mount', 'type=sysfs,src=sysfs,dst=/mysys,options=ro'],
    });
    expect(t.code).not.toBe(0);
    expect(t.stderr).toContain('mount /mysys: type "sysfs" is not supported (bind mounts and tmpfs are)');
  });

  it('a missing binary fails the create with a clear error and leaves nothing behind', async () => {
    const r = await suite.run(io, suite.id('nobin'), ['no-such-binary', 'x']);
    expect(r.code).not.toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.stderr).toContain('failed to create shim task');
    expect(r.stderr).toContain('exec: "no-such-binary": executable file not found in $PATH');
    // The shim's log lines reach containerd's log.
    expect(suite.d.log()).toContain('exec: "no-such-binary": executable file not found in $PATH');
  });

  it('a missing root filesystem fails the create with a clear error', async () => {
    const r = await suite.run(io, suite.id('norootfs'), ['true'], { flags: ['--rootfs'] });
    // With --rootfs the image argument names a directory: ours does not exist.
    expect(r.code).not.toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.stderr).toMatch(/root filesystem .*localhost\/passfd-busybox:1 does not exist/);
  });
});
