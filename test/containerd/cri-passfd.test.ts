/**
 * What is particular to pods on io.containerd.passfd.v2 through containerd's
 * CRI plugin (the checks every runtime must pass are in cri-api.test.ts):
 * one shim and one guest per pod, whose containers share the sandbox's IPC
 * namespace and /dev/shm (and its PID namespace when the pod asks); a 16 MiB line-split output byte-exact in
 * the CRI log file on both IO paths (containerd 1.6.20 closes its FIFO
 * readers as soon as it handles the exit, so a byte still in flight would be
 * a lost log line); StopContainer's SIGTERM-then-SIGKILL; a SIGKILLed shim;
 * ten pods in a row leaving nothing behind, down to containerd's fds.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { CRI_NAMESPACE } from '../../src/containerd/private-daemon.js';
import { ContainerState, RuntimeService } from '../../src/protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';
import { isAlive } from '../../src/shim/process-tree.js';
import { liveSpare, readSpare, removeSpareDir, spareDirFor } from '../../src/shim/spare-dir.js';
import { waitFor } from '../support/wait.js';
import { type Container, type Pod, useCriSuite } from './cri-support.js';
import { RUNTIME, SHIM_BUNDLE } from './support.js';

const s = useCriSuite();

const IO_HANDLERS = ['passfd', 'passfd-rpc'];

/** The long-lived shims this containerd runs (the wrapper's Node process), by the id they were started for. */
function shims(): { pid: number; id: string }[] {
  return s.d
    .ownProcesses()
    .filter((p) => p.cmdline.includes('containerd-shim-passfd-v2.js'))
    .map((p) => {
      const args = p.cmdline.split(' ');
      return { pid: p.process.pid, id: args[args.indexOf('-id') + 1] ?? '' };
    });
}

/** A task's bundle. */
const taskBundle = (id: string) => path.join(s.d.state, 'io.containerd.runtime.v2.task', CRI_NAMESPACE, id);
/** The address containerd dials for a task (its bundle's `address` file). */
const taskAddress = (id: string) => fs.readFileSync(path.join(taskBundle(id), 'address'), 'utf8');

async function execOut(c: Container, script: string): Promise<string> {
  const r = await s.cri.execSync({ containerId: c.id, cmd: ['sh', '-c', script], timeout: 20n });
  expect(Buffer.from(r.stderr).toString()).toBe('');
  expect(r.exitCode).toBe(0);
  return Buffer.from(r.stdout).toString().trim();
}

async function idle(pod: Pod, name: string): Promise<Container> {
  const c = await s.startContainer(pod, { name, command: ['sleep', 'infinity'] });
  await s.waitState(c, ContainerState.CONTAINER_RUNNING);
  return c;
}

describe('a pod on io.containerd.passfd.v2', () => {
  it('is one shim and one guest: its containers share the sandbox’s IPC namespace and /dev/shm', async () => {
    const pod = await s.runPod('passfd');
    const a = await idle(pod, 'a');
    const b = await idle(pod, 'b');
    const other = await s.runPod('passfd');
    const c = await idle(other, 'c');

    // containerd dials the sandbox's shim for every container of the pod.
    expect(taskAddress(a.id)).toBe(taskAddress(pod.id));
    expect(taskAddress(b.id)).toBe(taskAddress(pod.id));
    expect(taskAddress(c.id)).toBe(taskAddress(other.id));
    expect(taskAddress(c.id)).not.toBe(taskAddress(pod.id));
    expect(
      shims()
        .map((x) => x.id)
        .sort(),
    ).toEqual([pod.id, other.id].sort());

    const ns = 'for n in ipc uts pid; do readlink /proc/self/ns/$n; done; hostname';
    const [ipcA, utsA, pidA, hostA] = (await execOut(a, ns)).split('\n');
    const [ipcB, utsB, pidB, hostB] = (await execOut(b, ns)).split('\n');
    const [ipcC, utsC] = (await execOut(c, ns)).split('\n');
    expect([ipcB, utsB, hostB]).toEqual([ipcA, utsA, hostA]);
    // Each container has its own PID namespace (the pod does not share processes) ...
    expect(pidB).not.toBe(pidA);
    // ... another pod has its own IPC namespace, and neither is the host's ...
    expect(ipcC).not.toBe(ipcA);
    expect(ipcA).not.toBe(fs.readlinkSync('/proc/self/ns/ipc'));
    // ... while a host-network pod has the node's UTS namespace (containerd lists none for it, as
    // for runc): in the loopback guest, the host's.
    expect([utsA, utsC]).toEqual([
      fs.readlinkSync('/proc/self/ns/uts'),
      fs.readlinkSync('/proc/self/ns/uts'),
    ]);
    expect(hostA).toBe(os.hostname());
    // POSIX shared memory goes through the pod's /dev/shm.
    await execOut(a, 'echo from-a > /dev/shm/note');
    expect(await execOut(b, 'cat /dev/shm/note')).toBe('from-a');
    expect(
      (await s.cri.execSync({ containerId: c.id, cmd: ['cat', '/dev/shm/note'], timeout: 20n })).exitCode,
    ).toBe(1);
  });

  it('shares the sandbox’s PID namespace with shareProcessNamespace', async () => {
    const pod = await s.runPod('passfd', s.name('shared-pids'), { shareProcessNamespace: true });
    const a = await idle(pod, 'a');
    const b = await idle(pod, 'b');
    const pid = 'readlink /proc/self/ns/pid';
    expect(await execOut(b, pid)).toBe(await execOut(a, pid));
    // b sees a's sleep and the sandbox's.
    expect((await execOut(b, 'ps -o comm')).split('\n').filter((l) => l === 'sleep').length).toBe(3);
  });

  it.each(IO_HANDLERS)(
    'writes a 16 MiB line-split output byte-exact into the CRI log (%s)',
    async (handler) => {
      const pod = await s.runPod(handler);
      // 839 lines of 20000 bytes + LF (16.0 MiB): every line is split at 16 KiB into P and F records.
      const lines = 839;
      const line = 'a'.repeat(20_000);
      const c = await s.startContainer(pod, {
        name: 'big',
        command: [
          'sh',
          '-c',
          `yes "$(head -c 20000 /dev/zero | tr '\\0' a)" | head -n ${lines}; echo done >&2`,
        ],
      });
      expect((await s.waitExit(c, 60_000)).exitCode).toBe(0);
      const log = await s.waitLog(c, (l) => l.stderr.length > 0 && l.stdout.length >= lines * 20_001, 20_000);
      expect(log.stdout.length).toBe(lines * 20_001);
      expect(log.stdout.equals(Buffer.from(`${line}\n`.repeat(lines)))).toBe(true);
      expect(log.stderr.toString()).toBe('done\n');
      expect(log.records.filter((r) => r.partial).length).toBe(lines);
    },
  );

  it('StopContainer: SIGTERM to a process that handles it, SIGKILL after the timeout', async () => {
    const pod = await s.runPod('passfd');
    const c = await s.startContainer(pod, {
      name: 'stubborn',
      command: ['sh', '-c', 'trap "echo got TERM" TERM; echo up; while :; do sleep 0.2; done'],
    });
    await s.waitLog(c, (l) => l.stdout.toString() === 'up\n');
    const t0 = Date.now();
    await s.cri.stopContainer({ containerId: c.id, timeout: 2n });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1_900);
    expect(took).toBeLessThan(20_000);
    const st = await s.status(c);
    expect(st.state).toBe(ContainerState.CONTAINER_EXITED);
    expect(st.exitCode).toBe(137);
    expect((await s.waitLog(c, (l) => l.stdout.includes('got TERM'))).stdout.toString()).toBe(
      'up\ngot TERM\n',
    );
  });

  it('StopContainer ends at once a PID 1 without a SIGTERM handler (Kata’s agent makes it SIGKILL)', async () => {
    const pod = await s.runPod('passfd');
    const c = await idle(pod, 'sleeper');
    const t0 = Date.now();
    await s.cri.stopContainer({ containerId: c.id, timeout: 30n });
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await s.status(c)).exitCode).toBe(137);
  });

  it('a SIGKILLed shim: the pod’s containers exit, and removing the pod leaves nothing', async () => {
    const pod = await s.runPod('passfd');
    const a = await idle(pod, 'a');
    const shim = shims().find((x) => x.id === pod.id)!;
    process.kill(shim.pid, 'SIGKILL');
    await s.waitExit(a, 30_000);
    await s.removePod(pod);
    expect(await s.leaks()).toEqual([]);
  });

  it('answers ContainerStats and ListContainerStats from the guest’s figures (kubelet’s summary API)', async () => {
    const pod = await s.runPod('passfd');
    // CPU spent by the container's own process (an exec's is gone with it: no cgroup keeps it).
    const c = await s.startContainer(pod, {
      name: 'busy',
      command: [
        'sh',
        '-c',
        'i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; echo spun; exec sleep infinity',
      ],
    });
    await s.waitLog(c, (l) => l.stdout.toString() === 'spun\n');
    const one = await s.cri.call(RuntimeService.method.containerStats, { containerId: c.id });
    expect(one.stats?.attributes?.id).toBe(c.id);
    expect(one.stats?.cpu?.usageCoreNanoSeconds?.value ?? 0n).toBeGreaterThan(0n);
    expect(one.stats?.memory?.workingSetBytes?.value ?? 0n).toBeGreaterThan(0n);
    const all = await s.cri.call(RuntimeService.method.listContainerStats, {
      filter: { podSandboxId: pod.id },
    });
    expect(all.stats.map((x) => x.attributes?.id)).toEqual([c.id]);
  });

  it('runs the pod of examples/kubernetes/ on the handler its RuntimeClass names', async () => {
    const dir = path.resolve(import.meta.dirname, '../../examples/kubernetes');
    const toml = parseToml(fs.readFileSync(path.join(dir, 'containerd-config.toml'), 'utf8')) as {
      plugins: Record<string, { containerd: { runtimes: Record<string, { runtime_type: string }> } }>;
    };
    const runtimes = toml.plugins['io.containerd.grpc.v1.cri']!.containerd.runtimes;
    const rc = parseYaml(fs.readFileSync(path.join(dir, 'runtimeclass.yaml'), 'utf8'));
    const manifest = parseYaml(fs.readFileSync(path.join(dir, 'pod.yaml'), 'utf8'));
    expect(rc).toMatchObject({ kind: 'RuntimeClass', handler: 'passfd' });
    expect(runtimes[rc.handler]!.runtime_type).toBe(RUNTIME);
    expect(manifest.spec).toMatchObject({ runtimeClassName: rc.metadata.name, hostNetwork: true });
    // The suite's containerd has the handler under the same name and type.
    const pod = await s.runPod(rc.handler);
    const byName: Record<string, Container> = {};
    for (const c of manifest.spec.containers as { name: string; command: string[] }[])
      byName[c.name] = await s.startContainer(pod, { name: c.name, command: c.command });
    await s.waitLog(byName.writer!, (l) => l.stdout.toString().startsWith('line 1\nline 2\n'));
    expect(Number(await execOut(byName.reader!, 'cat /dev/shm/count'))).toBeGreaterThanOrEqual(2);
  });

  it('takes a warm spare shim for a pod’s sandbox, and the pod’s containers find it', async () => {
    const first = await s.runPod('passfd-spare');
    await s.removePod(first);
    const spareDir = spareDirFor(s.d.address, CRI_NAMESPACE);
    const spare = await waitFor('a spare', () => liveSpare(spareDir));
    try {
      const pod = await s.runPod('passfd-spare');
      expect(s.d.log()).toContain(`a warm spare (pid ${spare.process.pid}) takes task ${pod.id}`);
      const a = await idle(pod, 'a');
      expect(taskAddress(a.id)).toBe(spare.address);
      expect(taskAddress(pod.id)).toBe(spare.address);
      expect(await execOut(a, 'echo ok')).toBe('ok');
      // The shim's own `start` (the wrapper's fallback) finds the pod's shim there too.
      const fake = path.join(path.dirname(taskBundle(pod.id)), 'not-a-task');
      fs.mkdirSync(fake);
      try {
        fs.writeFileSync(
          path.join(fake, 'config.json'),
          JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': pod.id } }),
        );
        const start = spawnSync(
          process.execPath,
          [SHIM_BUNDLE, '-namespace', CRI_NAMESPACE, '-address', s.d.address, '-id', 'not-a-task', 'start'],
          {
            cwd: fake,
            input: '',
            encoding: 'utf8',
            timeout: 30_000,
            env: { ...process.env, TTRPC_ADDRESS: s.d.ttrpcAddress },
          },
        );
        expect(start.stdout, start.stderr).toBe(spare.address);
      } finally {
        fs.rmSync(fake, { recursive: true, force: true });
      }
      const b = await s.startContainer(pod, { name: 'b', command: ['sh', '-c', 'echo from-b; exit 4'] });
      expect((await s.waitExit(b)).exitCode).toBe(4);
      expect((await s.waitLog(b, (l) => l.lines.length > 0)).stdout.toString()).toBe('from-b\n');
      await s.removePod(pod);
    } finally {
      // Its successor waits: end it, so that nothing of this test is left.
      const next = readSpare(spareDir);
      if (next) process.kill(next.process.pid, 'SIGTERM');
      await waitFor('the successor to end', () => !next || !isAlive(next.process));
      removeSpareDir(spareDir);
    }
  });

  it('ten pods created and removed in a row leave nothing, down to containerd’s fds', async () => {
    const fds = () => fs.readdirSync(`/proc/${s.d.pid}/fd`).length;
    // One pod first: containerd opens what it keeps for the rest of its life (event streams, the CRI store).
    const warm = await s.runPod('passfd');
    await s.removePod(warm);
    const before = fds();
    for (let i = 0; i < 10; i++) {
      const pod = await s.runPod(i % 2 ? 'passfd-rpc' : 'passfd');
      const c = await s.startContainer(pod, { name: 'once', command: ['sh', '-c', `echo pod ${i}`] });
      expect((await s.waitExit(c)).exitCode).toBe(0);
      expect((await s.waitLog(c, (l) => l.lines.length > 0)).stdout.toString()).toBe(`pod ${i}\n`);
      await s.removePod(pod);
    }
    expect(await s.leaks()).toEqual([]);
    expect(shims()).toEqual([]);
    // Bounded: containerd settles its connections after the calls return.
    const until = Date.now() + 10_000;
    while (fds() > before && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect(fds()).toBeLessThanOrEqual(before);
  });
});
