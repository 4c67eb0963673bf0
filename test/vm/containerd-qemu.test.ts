/**
 * containerd-shim-passfd-v2 with a QEMU guest (`hypervisor.guest = "qemu"`,
 * selected per `ctr run` with --runtime-config-path), driven by the real
 * `ctr` against a private containerd (test/containerd/support.ts): the
 * container's root filesystem reaches the guest over the writable 9p share,
 * the process runs on the guest's kernel, its stdio goes through passfd (or
 * RPC-copy) into ctr's FIFOs, and a SIGKILLed shim leaves no QEMU behind.
 * Every `ctr run` boots its own guest (TCG: ~30 s), so the set is small.
 * Fails, never skips, when QEMU, the guest kernel or containerd is missing.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { findGuestKernel } from '../../src/vm/guest-kernel.js';
import { MiB, ownProcesses, sha256, useCtrSuite } from '../containerd/support.js';

const QEMU_RUN_MS = 300_000;
beforeAll(() => {
  execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }); // throws when missing
  findGuestKernel(); // throws when missing
});

const suite = useCtrSuite(
  {
    passfd: '[hypervisor]\nguest = "qemu"\n',
    rpc: '[hypervisor]\nguest = "qemu"\n[runtime]\nuse_passfd_io = false\n',
  },
  30_000,
);

describe.each(['passfd', 'rpc'])('ctr run in a QEMU guest (%s)', (io) => {
  it('runs on the guest’s kernel in the image’s root, with output, stderr, the exit code and --mount binds', async () => {
    const ro = fs.mkdtempSync(path.join(suite.d.dir, 'qro-'));
    fs.writeFileSync(path.join(ro, 'in.txt'), 'from-host\n');
    const rw = fs.mkdtempSync(path.join(suite.d.dir, 'qrw-'));
    const r = await suite.run(
      io,
      suite.id('qemu'),
      [
        'sh',
        '-c',
        'uname -r; ls /; echo written > /tmp/f && cat /tmp/f; ps -o pid,comm; cat /data/in.txt; ' +
          'touch /data/n 2>/dev/null && echo ro-writable || echo ro-refused; echo w > /out/w.txt; ' +
          'echo err >&2; exit 6',
      ],
      {
        timeoutMs: QEMU_RUN_MS,
        flags: [
          '--mount',
          `type=bind,src=${ro},dst=/data,options=rbind:ro`,
          '--mount',
          `type=bind,src=${rw},dst=/out,options=rbind:rw`,
        ],
      },
    );
    expect(r).toMatchObject({ code: 6, stderr: 'err\n', timedOut: false });
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^\d+\.\d+/);
    expect(lines[0]).not.toBe(os.release()); // the guest's kernel, not the host's
    // The image's root, with the mount points the spec asked for (run: the default spec's tmpfs).
    expect(lines.slice(1, 10)).toEqual(['bin', 'data', 'dev', 'etc', 'out', 'proc', 'root', 'run', 'sys']);
    expect(lines[10]).toBe('tmp');
    expect(lines[11]).toBe('written');
    expect(r.stdout).toMatch(/^\s*1 sh$/m);
    // The binds reach into the guest over the share: read-only refused, read-write written through.
    expect(lines.slice(-3)).toEqual(['from-host', 'ro-refused', '']);
    expect(fs.readFileSync(path.join(rw, 'w.txt'), 'utf8')).toBe('w\n');
    expect(fs.readdirSync(ro)).toEqual(['in.txt']);
    fs.rmSync(ro, { recursive: true });
    fs.rmSync(rw, { recursive: true });
  });
});

describe('ctr in a QEMU guest (passfd)', () => {
  it('8 MiB through cat come back byte-exact', async () => {
    const data = randomBytes(8 * MiB);
    const r = await suite.runPiped(
      'passfd',
      suite.id('qcat'),
      ['sh', '-c', 'echo ready >&2; exec cat'],
      data,
      QEMU_RUN_MS,
    );
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(data.length);
    expect(sha256(r.stdout)).toBe(sha256(data));
  });

  it('run -d, exec, task metrics, then the shim SIGKILLed: delete leaves no QEMU, mount or socket behind', async () => {
    const id = suite.id('qkill');
    const r = await suite.d.ctr(suite.runArgs('passfd', id, ['sleep', '1000'], ['-d']), {
      timeoutMs: QEMU_RUN_MS,
    });
    expect(r.code).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    const e = await suite.ctr(
      ['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'uname -r; ps -o pid,comm; exit 2'],
      {
        timeoutMs: 120_000,
      },
    );
    expect(e.code).toBe(2);
    expect(e.stdout).toMatch(/^\s*1 sleep$/m);
    // Metrics from the guest's agent: the container's one process, its memory under the guest's.
    const metrics = await suite.ctr(['task', 'metrics', id], { timeoutMs: 60_000 });
    expect(metrics.code, metrics.stderr).toBe(0);
    const value = (name: string) => Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(metrics.stdout)?.[1]);
    expect(value('pids\\.current'), metrics.stdout).toBe(1);
    expect(value('memory\\.usage')).toBeGreaterThan(0);
    expect(value('memory\\.usage_limit')).toBeLessThanOrEqual(2 ** 30); // the guest's RAM, not the host's
    // The task's pid is QEMU's (the VM), as Kata reports it.
    const ls = (await suite.ctr(['task', 'ls'])).stdout;
    const qemuPid = Number(new RegExp(`^${id}\\s+(\\d+)`, 'm').exec(ls)![1]);
    expect(fs.readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8')).toContain('qemu-system');
    const shim = ownProcesses(suite.d).find((p) => p.includes('containerd-shim-passfd-v2.js'));
    expect(shim).toBeDefined();
    process.kill(Number(shim!.split(':')[0]), 'SIGKILL');
    const until = Date.now() + 60_000;
    while (Date.now() < until && fs.existsSync(suite.d.bundle(id)))
      await new Promise((res) => setTimeout(res, 200));
    // Killed by delete; until its new parent reaps it, a zombie at most.
    const state = () => /\) (\S)/.exec(fs.readFileSync(`/proc/${qemuPid}/stat`, 'utf8'))?.[1];
    expect(fs.existsSync(`/proc/${qemuPid}`) ? state() : 'gone').toMatch(/^(gone|Z)$/);
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });
});
