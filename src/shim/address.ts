/**
 * Where a shim listens and how containerd learns it, as containerd's own
 * shims do it (runtime/v2/shim in containerd v1.6):
 *
 * - the socket is `/run/containerd/s/<sha256 hex of "<containerd address>/
 *   <namespace>/<id>">`: short enough for sun_path whatever the bundle path,
 *   and distinct per containerd instance, namespace and task;
 * - the tasks of one Kubernetes pod share a shim (and its guest), as runc's
 *   shim groups them: the id hashed is the pod's sandbox id (the CRI
 *   annotation `io.kubernetes.cri.sandbox-id` in the bundle's config.json;
 *   the sandbox's own names itself), else the task's id;
 * - `start` prints `unix://<path>`; the `address` file in the bundle holds
 *   the same string, which containerd reads back when it restarts and the
 *   shim's `delete` uses to remove a dead shim's socket.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { SANDBOX_ID_ANNOTATION } from '../agent/pod-namespaces.js';
import { writeFileAtomically } from '../util/atomic-file.js';

/** containerd's state directory for shim sockets (hard-coded there too). */
export const SOCKET_DIR = '/run/containerd/s';

/** The socket containerd's runc shim would use for (address, namespace, grouping id). */
export function socketPathFor(containerdAddress: string, namespace: string, id: string): string {
  const digest = createHash('sha256')
    .update(path.join(containerdAddress, namespace, id))
    .digest('hex');
  return path.join(SOCKET_DIR, digest);
}

/** A task id as containerd's identifiers go (it names sockets, bundles and guest directories). */
export const isValidTaskId = (id: string) => /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id);

/** The id a task's shim is found by: its pod's sandbox id (CRI), else its own. */
export function shimGroupId(bundle: string, id: string): string {
  // Only the annotation, read leniently (readSpec would refuse a spec Create has yet to judge).
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, unknown>;
    };
    const sandbox = spec.annotations?.[SANDBOX_ID_ANNOTATION];
    return typeof sandbox === 'string' && sandbox !== '' ? sandbox : id;
  } catch {
    // No readable spec: Create reports that; the shim is the task's own.
    return id;
  }
}

export const toAddress = (socketPath: string) => `unix://${socketPath}`;

/** The path in a `unix://` address (an abstract name, without the prefix, is returned as `@name`). */
export function socketPathOf(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : `@${address}`;
}

/** Writes `<bundle>/address` atomically. */
export function writeAddressFile(bundle: string, address: string): void {
  writeFileAtomically(path.join(bundle, 'address'), address);
}

/** The address in `<bundle>/address`, or undefined when there is none. */
export function readAddressFile(bundle: string): string | undefined {
  try {
    return fs.readFileSync(path.join(bundle, 'address'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** True when something accepts connections on the socket within `timeoutMs` (a live shim). */
export function socketAnswers(socketPath: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(timeoutMs, () => done(false));
  });
}
