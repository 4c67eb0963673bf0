/**
 * What a running shim leaves in its bundle for its `delete` to clean up
 * after it: `<bundle>/passfd-shim.json`. containerd runs `<shim> delete`
 * after every shim disconnect; when the shim died (SIGKILL, OOM) this file
 * is the only record of its guest's processes (vmm, agent or QEMU), which
 * `delete` then kills with their descendants, and of the directories and
 * socket to remove. Mounts need no record: everything mounted under the
 * bundle is the shim's and comes off.
 *
 * Written atomically (temporary file + rename) whenever it changes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomically } from '../util/atomic-file.js';
import type { ProcessIdentity } from './process-tree.js';

export const STATE_FILE = 'passfd-shim.json';

export interface ShimState {
  /** The long-lived shim process. */
  shim: ProcessIdentity;
  /** Its socket path (`/run/containerd/s/<hash>`). */
  socket: string;
  /** The guest's host processes, by role. */
  processes: (ProcessIdentity & { name: string })[];
  /** Directories the guest uses (removed by `delete`). */
  dirs: string[];
}

export function writeState(bundle: string, state: ShimState): void {
  writeJsonAtomically(path.join(bundle, STATE_FILE), state);
}

/** The recorded state, or null when there is none (or it cannot be read). */
export function readState(bundle: string): ShimState | null {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(bundle, STATE_FILE), 'utf8')) as ShimState;
    return s && typeof s.socket === 'string' && Array.isArray(s.processes) ? s : null;
  } catch {
    return null;
  }
}

export function removeState(bundle: string): void {
  fs.rmSync(path.join(bundle, STATE_FILE), { force: true });
}
