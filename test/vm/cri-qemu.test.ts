/**
 * Kubernetes pods on io.containerd.passfd.v2 with a QEMU guest, through
 * containerd's CRI plugin and the kubelet-like client
 * (test/containerd/cri-support.ts): one guest per pod, booted by
 * RunPodSandbox; its containers run on the guest's kernel in the same
 * guest, share the sandbox's IPC namespace, and their output reaches the
 * CRI log files through passfd (or RPC-copy); ExecSync works; removing the
 * pod stops the guest and leaves nothing. Each pod boots a guest (TCG:
 * ~30 s), so the set is small. Fails, never skips, when QEMU, the guest
 * kernel or containerd is missing.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ContainerState } from '../../src/protocol/gen/k8s/cri-api/runtime/v1/api_pb.js';
import { findGuestKernel } from '../../src/vm/guest-kernel.js';
import { type Container, useCriSuite } from '../containerd/cri-support.js';
import { RUNTIME } from '../containerd/support.js';

const QEMU_MS = 300_000;
beforeAll(() => {
  execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }); // throws when missing
  findGuestKernel(); // throws when missing
});

const s = useCriSuite(
  {
    handlers: (dir) => {
      const handler = (name: string, text: string) => {
        const config = path.join(dir, `${name}.toml`);
        fs.writeFileSync(config, text);
        return { runtimeType: RUNTIME, options: { ConfigPath: config } };
      };
      return {
        'qemu-passfd': handler('qemu-passfd', '[hypervisor]\nguest = "qemu"\n'),
        'qemu-rpc': handler('qemu-rpc', '[hypervisor]\nguest = "qemu"\n[runtime]\nuse_passfd_io = false\n'),
      };
    },
    callTimeoutMs: QEMU_MS,
  },
  30_000,
);

async function execOut(c: Container, script: string): Promise<string> {
  const r = await s.cri.execSync({ containerId: c.id, cmd: ['sh', '-c', script], timeout: 120n });
  expect(Buffer.from(r.stderr).toString()).toBe('');
  expect(r.exitCode).toBe(0);
  return Buffer.from(r.stdout).toString().trim();
}

describe.each(['qemu-passfd', 'qemu-rpc'])('a pod in a QEMU guest (%s)', (handler) => {
  it(
    'runs its containers on one guest kernel, sharing the sandbox’s IPC, with their output in the CRI logs',
    async () => {
      const pod = await s.runPod(handler);
      const a = await s.startContainer(pod, { name: 'a', command: ['sleep', 'infinity'] });
      await s.waitState(a, ContainerState.CONTAINER_RUNNING, QEMU_MS);
      // 1 MiB in lines of 1023 bytes + LF, and a line on stderr, then an exit code.
      const b = await s.startContainer(pod, {
        name: 'b',
        command: [
          'sh',
          '-c',
          `uname -r; readlink /proc/self/ns/ipc; yes "$(head -c 1023 /dev/zero | tr '\\0' b)" | head -n 1024; echo err >&2; exit 5`,
        ],
      });
      const st = await s.waitExit(b, QEMU_MS);
      expect(st.exitCode).toBe(5);
      const log = await s.waitLog(b, (l) => l.stderr.length > 0 && l.lines.length >= 1027, 60_000);
      const [release, ipc, ...rest] = log.stdout.toString().split('\n');
      expect(release).toMatch(/^\d+\.\d+/);
      expect(release).not.toBe(os.release()); // the guest's kernel, not the host's
      expect(rest.join('\n')).toBe(`${'b'.repeat(1023)}\n`.repeat(1024));
      expect(log.stderr.toString()).toBe('err\n');
      // The running container: same guest kernel, same IPC namespace as its neighbour.
      expect(await execOut(a, 'uname -r; readlink /proc/self/ns/ipc')).toBe(`${release}\n${ipc}`);
      await s.removePod(pod);
      expect(await s.leaks(30_000)).toEqual([]);
    },
    QEMU_MS * 2,
  );
});
