/**
 * `<shim> … -id ID -bundle B delete`: containerd runs it after every
 * disconnect from a task's shim, to clean up whatever a shim that is gone
 * left behind, then removes the bundle itself. It must print a
 * DeleteResponse (protobuf) on stdout; what it writes on stderr appears in
 * containerd's log as "cleanup warnings".
 *
 * When the shim that served the task is still alive and answering on its
 * socket (the state file's, else the bundle's `address`), it is serving (a
 * normal Shutdown is under way, or it serves other tasks of the pod):
 * nothing is touched. Otherwise the
 * shim and the guest processes it recorded are killed with all their
 * descendants (process-tree.ts: a SIGKILLed shim leaves its vmm, agent or
 * QEMU, and the container's processes, running), everything mounted under
 * the bundle comes off (the rootfs, the guest's share), and the guest's
 * directories, the socket and the state file are removed.
 *
 * The exit status reported is 128 + SIGKILL, as runc's shim reports it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { DeleteResponseSchema } from '../protocol/containerd-api.js';
import { readAddressFile, socketAnswers, socketPathOf } from './address.js';
import type { ShimFlags } from './flags.js';
import { isAlive, killTrees } from './process-tree.js';
import { unmountAll } from './rootfs.js';
import { readState, removeState } from './state-file.js';

const SIGKILL_STATUS = 128 + 9;

export async function deleteTask(flags: ShimFlags): Promise<void> {
  const bundle = flags.bundle || process.cwd();
  const warn = (msg: string) => process.stderr.write(`passfd-shim delete ${flags.id}: ${msg}\n`);
  const state = readState(bundle);
  const address = readAddressFile(bundle);
  const socketPath = state?.socket ?? (address ? socketPathOf(address) : undefined);
  // A pod's shim serves several bundles: one whose task was deleted normally keeps no state file,
  // and a shim still answering on its address is alive and serving the others.
  const serving =
    (state === null || isAlive(state.shim)) && socketPath !== undefined && (await socketAnswers(socketPath));
  if (!serving) {
    const killed = killTrees(state ? [state.shim, ...state.processes] : []);
    if (killed.length > 0) warn(`killed ${killed.length} leftover process(es): ${killed.join(' ')}`);
    const unmounted = unmountAll(bundle);
    if (unmounted.length > 0) warn(`unmounted ${unmounted.join(' ')}`);
    for (const dir of state?.dirs ?? []) {
      // A pod's guest share lives in its sandbox's bundle: never remove through a bind still mounted there.
      unmountAll(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    fs.rmSync(path.join(bundle, 'shared'), { recursive: true, force: true });
    if (socketPath && !socketPath.startsWith('@')) fs.rmSync(socketPath, { force: true });
    removeState(bundle);
  }
  const reply = create(DeleteResponseSchema, {
    pid: 0,
    exitStatus: SIGKILL_STATUS,
    exitedAt: timestampNow(),
  });
  process.stdout.write(toBinary(DeleteResponseSchema, reply));
}
