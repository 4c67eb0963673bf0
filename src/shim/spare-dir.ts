/**
 * Where a warm spare shim waits (spare.ts), and how a `start` claims it.
 *
 * One spare at most per containerd instance and namespace, in
 * `/run/passfd-broker/spare-<first 32 hex of sha256("<containerd address>/
 * <namespace>")>/`, a 0700 directory holding:
 *
 * - `owner`: the containerd address and the namespace, one per line (for
 *   whoever cleans up after a containerd that is gone);
 * - `address`: the spare's socket as `unix://<path>` (its path is the
 *   task's socket once the spare is claimed);
 * - `pid`: `<pid> <start time in clock ticks>`, written last: a spare is
 *   alive and ready when this process still runs with this start time;
 * - `claimed/`: made by the `start` that takes the spare (mkdir is the
 *   lock: one winner), then `claimed/id` and `claimed/bundle`, the task's.
 *
 * The shell wrapper does the claim (bin/containerd-shim-passfd-v2, the same
 * hash with sha256sum); the functions here are the shim's side and the
 * tests'. Pure apart from the file system.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomically } from '../util/atomic-file.js';
import { isAlive, type ProcessIdentity } from './process-tree.js';

export const SPARE_ROOT = '/run/passfd-broker';

export function spareDirFor(containerdAddress: string, namespace: string): string {
  const key = createHash('sha256').update(`${containerdAddress}/${namespace}`).digest('hex').slice(0, 32);
  return path.join(SPARE_ROOT, `spare-${key}`);
}

const readText = (file: string): string | null => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};

export interface SpareRecord {
  process: ProcessIdentity;
  /** `unix://<socket>` */
  address: string;
}

/** Records a spare in `dir`: its owner, its address, then (last: now it may be claimed) its process. */
export function writeSpareRecord(
  dir: string,
  owner: { address: string; namespace: string },
  s: SpareRecord,
): void {
  writeFileAtomically(path.join(dir, 'owner'), `${owner.address}\n${owner.namespace}\n`);
  writeFileAtomically(path.join(dir, 'address'), s.address);
  writeFileAtomically(path.join(dir, 'pid'), `${s.process.pid} ${s.process.start}\n`);
}

/** The spare recorded in `dir`, if its files are complete (alive or not). */
export function readSpare(dir: string): SpareRecord | null {
  const pid = readText(path.join(dir, 'pid'))?.trim().split(' ').map(Number);
  const address = readText(path.join(dir, 'address'))?.trim();
  if (pid?.length !== 2 || !pid.every((n) => Number.isInteger(n) && n > 0) || !address) return null;
  return { process: { pid: pid[0]!, start: pid[1]! }, address };
}

/** The spare waiting in `dir` when its process is alive and it is not claimed. */
export function liveSpare(dir: string): SpareRecord | null {
  const s = readSpare(dir);
  if (!s || !isAlive(s.process) || fs.existsSync(path.join(dir, 'claimed'))) return null;
  return s;
}

/** The task that claimed the spare, once the claimant has written both files. */
export function readClaim(dir: string): { id: string; bundle: string } | null {
  const id = readText(path.join(dir, 'claimed', 'id'))?.trim();
  const bundle = readText(path.join(dir, 'claimed', 'bundle'))?.trim();
  return id && bundle ? { id, bundle } : null;
}

/** Removes a spare's directory and, when it is recorded there, its socket (a dead spare's). */
export function removeSpareDir(dir: string): void {
  const address = readSpare(dir)?.address;
  if (address?.startsWith('unix:///')) fs.rmSync(address.slice('unix://'.length), { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Removes every spare directory (and socket) of the containerd at `containerdAddress`: its spares are gone. */
export function removeSparesOf(containerdAddress: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(SPARE_ROOT).filter((n) => n.startsWith('spare-'));
  } catch {
    return;
  }
  for (const n of names) {
    const dir = path.join(SPARE_ROOT, n);
    if (readText(path.join(dir, 'owner'))?.split('\n')[0] === containerdAddress) removeSpareDir(dir);
  }
}
