/**
 * Private working directories (`$TMPDIR/passfd-run-*`, `-fifos-*`,
 * `-bench-*`, `-vm-*`, and the containerd shim's `-sandbox-*`): created
 * 0700 by mkdtemp, each with an `.owner` record naming the process that
 * owns it, so a directory left by an owner that died without cleaning up
 * (kill -9) can be proven stale and removed.
 *
 * The owner normally removes its directory itself. Otherwise the next
 * `run` or `bench` sweeps stale ones at start, and so do a `vmm` or an
 * `agent` that end because their parent died (the last ones out).
 *
 * Proof of death, from the record {pid, start time, boot id, pid
 * namespace}: the same boot and pid namespace, and no live process with
 * that pid and that start time (field 22 of /proc/<pid>/stat; a zombie is
 * not alive: the owner of a dead `run` may reap it late). A pid reused by
 * another process has another start time. A record from another boot is
 * dead; one from another pid namespace, or missing or unreadable, proves
 * nothing and the directory is left alone. Only directories of our own uid
 * are considered.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { procStat } from './proc-stat.js';

export const PRIVATE_DIR_PREFIXES = [
  'passfd-run-',
  'passfd-fifos-',
  'passfd-bench-',
  'passfd-vm-',
  'passfd-sandbox-',
] as const;
export type PrivateDirPrefix = (typeof PRIVATE_DIR_PREFIXES)[number];

const OWNER_FILE = '.owner';

interface OwnerRecord {
  pid: number;
  start: string;
  boot: string;
  pidns: string;
}

function readOr(p: string, fallback: string): string {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return fallback;
  }
}

/** Start time of `pid`, or null when there is no such live process (a zombie is not alive). */
function startTime(pid: number | 'self'): string | null {
  const st = procStat(pid);
  return st && st.state !== 'Z' && st.state !== 'X' ? st.start : null;
}

function pidNamespace(): string {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return 'unknown';
  }
}

function selfRecord(): OwnerRecord {
  return {
    pid: process.pid,
    start: startTime('self') ?? 'unknown',
    boot: readOr('/proc/sys/kernel/random/boot_id', 'unknown'),
    pidns: pidNamespace(),
  };
}

/** A fresh 0700 directory `$TMPDIR/<prefix>XXXXXX` owned (by record) by this process. */
export function makePrivateDir(prefix: PrivateDirPrefix): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.writeFileSync(path.join(dir, OWNER_FILE), `${JSON.stringify(selfRecord())}\n`, { mode: 0o600 });
  return dir;
}

/** Whether the record proves its owner is gone (see module comment). */
export function ownerIsGone(record: OwnerRecord, self: OwnerRecord = selfRecord()): boolean {
  if (record.boot !== self.boot) return record.boot !== 'unknown' && self.boot !== 'unknown';
  if (record.pidns !== self.pidns) return false;
  const now = startTime(record.pid);
  return now === null || now !== record.start;
}

/** Removes every private directory of ours whose owner is provably gone; returns the removed paths. */
export function sweepStalePrivateDirs(tmp = os.tmpdir()): string[] {
  const self = selfRecord();
  const uid = process.geteuid?.();
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(tmp);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!PRIVATE_DIR_PREFIXES.some((p) => name.startsWith(p))) continue;
    const dir = path.join(tmp, name);
    try {
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== uid) continue;
      const record = JSON.parse(fs.readFileSync(path.join(dir, OWNER_FILE), 'utf8')) as OwnerRecord;
      if (typeof record.pid !== 'number' || !ownerIsGone(record, self)) continue;
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
      removed.push(dir);
    } catch {
      // No record (not ours, or still being made), unreadable, or removed by another sweeper meanwhile.
    }
  }
  return removed;
}
