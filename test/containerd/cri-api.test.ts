/**
 * Pods through containerd's CRI plugin, the way kubelet runs them (see
 * cri-support.ts): logs, exit codes, ExecSync, streaming Exec and Attach,
 * pod teardown. Parametrised over runtime handlers: `runc`, the reference
 * the harness is validated against, and this shim on both IO paths, which
 * must behave the same through the same client.
 */
import { describe, expect, it } from 'vitest';
import { CriError } from '../../src/cri/client.js';
import { RemoteCommandStream, runRemoteCommand } from '../../src/cri/remote-command.js';
import { ContainerState, PodSandboxState } from '../../src/protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';
import { IMAGE, PAUSE_IMAGE, useCriSuite } from './cri-support.js';

/** runc, the reference, and this shim on both IO paths. */
const HANDLERS = ['runc', 'passfd', 'passfd-rpc'];

const s = useCriSuite();

describe('the CRI API', () => {
  it('answers Version, Status and the ImageService', async () => {
    const v = await s.cri.version({ version: 'v1' });
    expect(v.runtimeName).toBe('containerd');
    expect(v.runtimeApiVersion).toBe('v1');
    const st = await s.cri.status({});
    expect(st.status?.conditions.find((c) => c.type === 'RuntimeReady')?.status).toBe(true);
    const tags = (await s.cri.listImages({})).images.flatMap((i) => i.repoTags);
    expect(tags).toEqual(expect.arrayContaining([IMAGE, PAUSE_IMAGE]));
    expect((await s.cri.imageStatus({ image: { image: IMAGE } })).image?.repoTags).toContain(IMAGE);
    expect((await s.cri.imageStatus({ image: { image: 'localhost/absent:1' } })).image).toBeUndefined();
  });

  it('surfaces a failed call with its gRPC code and message', async () => {
    const err = await s.cri.containerStatus({ containerId: 'no-such-container' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CriError);
    expect((err as CriError).codeName).toBe('NOT_FOUND');
    expect((err as CriError).message).toMatch(/ContainerStatus: NOT_FOUND \(5\): .*no-such-container/);
  });
});

describe.each(HANDLERS)('a pod with handler %s', (handler) => {
  it('runs two containers whose stdout and stderr land in their CRI log files', async () => {
    const pod = await s.runPod(handler);
    const a = await s.startContainer(pod, {
      name: 'a',
      command: ['sh', '-c', 'echo hello; echo oops >&2'],
    });
    const b = await s.startContainer(pod, {
      name: 'b',
      command: ['sh', '-c', 'echo second; echo x-$0-$1', 'p', 'q'],
    });
    for (const c of [a, b]) {
      const st = await s.waitExit(c);
      expect(st.exitCode).toBe(0);
      expect(st.logPath).toBe(c.logPath);
    }
    const logA = await s.waitLog(a, (l) => l.lines.length >= 2);
    expect(logA.stdout.toString()).toBe('hello\n');
    expect(logA.stderr.toString()).toBe('oops\n');
    const logB = await s.waitLog(b, (l) => l.lines.length >= 2);
    expect(logB.stdout.toString()).toBe('second\nx-p-q\n');
    expect(logB.stderr.length).toBe(0);
  });

  it('splits a line longer than 16 KiB into P records that read back whole', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, {
      name: 'long',
      command: ['sh', '-c', 'head -c 40000 /dev/zero | tr "\\0" a; echo; echo end'],
    });
    expect((await s.waitExit(c)).exitCode).toBe(0);
    const log = await s.waitLog(c, (l) => l.lines.length >= 2);
    expect(log.records.filter((r) => r.partial).length).toBeGreaterThanOrEqual(2);
    expect(log.lines.map((l) => l.text)).toEqual(['a'.repeat(40000), 'end']);
  });

  it('shows an exit code in ContainerStatus', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, { name: 'seven', command: ['sh', '-c', 'exit 7'] });
    const st = await s.waitExit(c);
    expect(st.exitCode).toBe(7);
    expect(st.reason).toBe('Error');
    // (finishedAt may precede startedAt: containerd stamps the start after the task ran.)
    expect(st.finishedAt).toBeGreaterThan(0n);
  });

  it('runs ExecSync in a running container: stdout, stderr, exit code', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, { name: 'idle', command: ['sleep', 'infinity'] });
    await s.waitState(c, ContainerState.CONTAINER_RUNNING);
    const r = await s.cri.execSync({
      containerId: c.id,
      cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'],
      timeout: 20n,
    });
    expect(Buffer.from(r.stdout).toString()).toBe('out\n');
    expect(Buffer.from(r.stderr).toString()).toBe('err\n');
    expect(r.exitCode).toBe(3);
    const ok = await s.cri.execSync({ containerId: c.id, cmd: ['cat', '/etc/group'], timeout: 20n });
    expect(ok.exitCode).toBe(0);
    expect(Buffer.from(ok.stdout).toString()).toMatch(/^root:x:0:/);
  });

  it('streams an Exec: stdin in, stdout and stderr out, the exit code from the status channel', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, { name: 'idle', command: ['sleep', 'infinity'] });
    await s.waitState(c, ContainerState.CONTAINER_RUNNING);
    const { url } = await s.cri.exec({
      containerId: c.id,
      cmd: ['sh', '-c', 'read l; echo got $l; echo to-err >&2'],
      stdin: true,
      stdout: true,
      stderr: true,
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
    const r = await runRemoteCommand(url, { stdin: 'hello\n', timeoutMs: 20_000 });
    expect(r.stdout.toString()).toBe('got hello\n');
    expect(r.stderr.toString()).toBe('to-err\n');
    expect(r.exitCode).toBe(0);
    expect(r.protocol).toBe('v4.channel.k8s.io');

    const failing = await s.cri.exec({
      containerId: c.id,
      cmd: ['sh', '-c', 'read l; echo got $l; exit 7'],
      stdin: true,
      stdout: true,
      stderr: true,
    });
    const f = await runRemoteCommand(failing.url, { stdin: 'x\n', timeoutMs: 20_000 });
    expect(f.stdout.toString()).toBe('got x\n');
    expect(f.exitCode).toBe(7);
    expect(f.status.reason).toBe('NonZeroExitCode');
  });

  it('streams an Exec with a tty and a resize', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, { name: 'idle', command: ['sleep', 'infinity'] });
    await s.waitState(c, ContainerState.CONTAINER_RUNNING);
    const { url } = await s.cri.exec({
      containerId: c.id,
      // The runtime applies a resize asynchronously: wait (bounded) for it before reading the size.
      cmd: [
        'sh',
        '-c',
        'read l; i=0; until [ "$(stty size 2>/dev/null)" = "37 91" ] || [ $i = 50 ]; do sleep 0.1; i=$((i+1)); done; stty size; tty',
      ],
      stdin: true,
      stdout: true,
      tty: true,
    });
    // containerd drops a resize that arrives before the exec's process runs; a terminal client
    // sends the size again on every change (kubectl on SIGWINCH): here, until the command ends.
    const stream = await RemoteCommandStream.open(url, { timeoutMs: 20_000 });
    const size = { width: 91, height: 37 };
    stream.resize(size);
    stream.write('go\r');
    const again = setInterval(() => stream.resize(size), 200);
    const r = await stream.result.finally(() => clearInterval(again));
    // The tty echoes the input and ends lines with CR LF.
    expect(r.stdout.toString()).toMatch(/37 91\r\n\/dev\/pts\/\d+\r\n$/);
    expect(r.exitCode).toBe(0);
  });

  it('attaches to a container stdin and stdout', async () => {
    const pod = await s.runPod(handler);
    const c = await s.startContainer(pod, {
      name: 'attached',
      command: ['sh', '-c', 'read l; echo attached $l; exit 4'],
      stdin: true,
      stdinOnce: true,
    });
    await s.waitState(c, ContainerState.CONTAINER_RUNNING);
    const { url } = await s.cri.attach({ containerId: c.id, stdin: true, stdout: true, stderr: true });
    const r = await runRemoteCommand(url, { stdin: 'yes\n', timeoutMs: 20_000 });
    expect(r.stdout.toString()).toBe('attached yes\n');
    expect((await s.waitExit(c)).exitCode).toBe(4);
    expect((await s.waitLog(c, (l) => l.lines.length >= 1)).stdout.toString()).toBe('attached yes\n');
  });

  it('lists pods and containers consistently; StopPodSandbox and RemovePodSandbox leave nothing', async () => {
    const pod = await s.runPod(handler);
    const other = await s.runPod(handler);
    const running = await s.startContainer(pod, { name: 'running', command: ['sleep', 'infinity'] });
    const done = await s.startContainer(pod, { name: 'done', command: ['true'] });
    await s.waitState(running, ContainerState.CONTAINER_RUNNING);
    await s.waitExit(done);

    const pods = (await s.cri.listPodSandbox({})).items;
    expect(pods.map((p) => p.id).sort()).toEqual([pod.id, other.id].sort());
    for (const p of pods) {
      expect(p.state).toBe(PodSandboxState.SANDBOX_READY);
      expect(p.runtimeHandler).toBe(handler);
    }
    const inPod = (await s.cri.listContainers({ filter: { podSandboxId: pod.id } })).containers;
    expect(inPod.map((c) => [c.metadata?.name, c.state]).sort()).toEqual([
      ['done', ContainerState.CONTAINER_EXITED],
      ['running', ContainerState.CONTAINER_RUNNING],
    ]);
    expect((await s.cri.listContainers({ filter: { podSandboxId: other.id } })).containers).toEqual([]);
    const runningOnly = await s.cri.listContainers({
      filter: { state: { state: ContainerState.CONTAINER_RUNNING } },
    });
    expect(runningOnly.containers.map((c) => c.id)).toEqual([running.id]);

    await s.cri.stopPodSandbox({ podSandboxId: pod.id });
    const stopped = await s.cri.podSandboxStatus({ podSandboxId: pod.id });
    expect(stopped.status?.state).toBe(PodSandboxState.SANDBOX_NOTREADY);
    expect((await s.status(running)).state).toBe(ContainerState.CONTAINER_EXITED);
    await s.cri.removePodSandbox({ podSandboxId: pod.id });
    expect((await s.cri.listPodSandbox({})).items.map((p) => p.id)).toEqual([other.id]);
    expect((await s.cri.listContainers({})).containers).toEqual([]);

    await s.removePod(other);
    expect(await s.leaks()).toEqual([]);
  });
});
