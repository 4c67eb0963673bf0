/**
 * `bench --vm qemu --backend <name>=<command>`: the backend A/B from the
 * command line. This build's own backend always runs, as `passfd-broker`;
 * every `--backend` adds one (`{socket}` `{uds}` `{cid}` `{metrics}` in its
 * command are filled in per boot). `--reps` is the boots per backend,
 * `--bytes` the size of each transfer, `--trips` the round trips per boot.
 * Prints the table (or `--json` the report), writes `ab.json` and `ab.md`
 * into `--out`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { GuestKernel } from '../../vm/guest-kernel.js';
import { createProgress } from '../progress.js';
import { renderAbMarkdown, renderAbText, summarizeAb } from './ab-report.js';
import { ownBackend, runBackendAb } from './backend-ab.js';
import type { BackendSpec } from './backend-spec.js';

export interface AbCliOptions {
  backends: BackendSpec[];
  boots: number;
  bytes: number;
  trips: number;
  timeoutMs: number;
  guestTrace: boolean;
  vm: { accel: 'tcg' | 'kvm'; cpus: number; memoryMiB: number };
  /** The guest kernel (`[hypervisor] kernel`); default the newest installed. */
  kernel?: GuestKernel;
  json: boolean;
  out?: string;
  progress: boolean;
  /** Extra arguments for our own `vmm` (e.g. `--credit firecracker`). */
  ownArgs?: string;
}

export async function runAbCli(o: AbCliOptions): Promise<number> {
  const backends = [ownBackend(o.ownArgs), ...o.backends];
  const progress = createProgress(o.boots * backends.length, o.progress, 'backend A/B');
  const boots = await runBackendAb({
    backends,
    boots: o.boots,
    bytes: o.bytes,
    transfers: 2,
    trips: o.trips,
    timeoutMs: o.timeoutMs,
    guestTrace: o.guestTrace,
    vm: o.vm,
    ...(o.kernel ? { kernel: o.kernel } : {}),
    onProgress: (line) => (line.startsWith('round ') ? progress.step(line) : progress.log(line)),
  }).finally(() => progress.done());
  const summary = summarizeAb(boots, o.bytes);
  const report = {
    date: new Date().toISOString(),
    options: { ...o, backends },
    guestKernel: o.kernel?.version ?? null,
    summary,
    boots,
  };
  if (o.out) {
    fs.mkdirSync(o.out, { recursive: true });
    fs.writeFileSync(path.join(o.out, 'ab.json'), `${JSON.stringify(report, null, 2)}\n`);
    fs.writeFileSync(path.join(o.out, 'ab.md'), `${renderAbMarkdown(summary)}\n`);
  }
  process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${renderAbText(summary)}\n`);
  return Object.values(summary.good).some((n) => n === 0) ? 1 : 0;
}
