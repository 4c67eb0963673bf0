#!/usr/bin/env node
/**
 * containerd-shim-passfd-v2: containerd's shim v2 for the runtime
 * `io.containerd.passfd.v2`. containerd runs it three ways (flags.ts):
 *
 *   … start    start.ts: starts the long-lived shim (serve.ts, which binds
 *              the task's socket) and prints its address; the package's
 *              shell wrapper does this without a Node process of its own;
 *   (none)     serve.ts: the long-lived shim, serving containerd's Task
 *              service over ttrpc until the task is deleted and Shutdown;
 *   … delete   delete.ts: cleans up after a shim that is gone;
 *   … spare    spare.ts: a warm spare shim waiting for the next task's
 *              `start` (started by a shim, never by containerd).
 *
 * Each action loads only its own modules: `start` and `delete` run once per
 * container and their start-up time is on the container's critical path.
 */
import { FlagError, LAUNCH_ENV, parseShimFlags, type ShimFlags } from './flags.js';

export const SHIM_NAME = 'containerd-shim-passfd-v2';

async function main(flags: ShimFlags): Promise<void> {
  if (flags.version) {
    const { SHIM_VERSION } = await import('./version.js');
    process.stdout.write(`${SHIM_NAME}:\n  Version:  ${SHIM_VERSION}\n  Runtime:  io.containerd.passfd.v2\n`);
    return;
  }
  if (!flags.namespace) throw new Error('shim namespace cannot be empty');
  // A warm spare (spare.ts, started by a shim, never by containerd) learns its task's id when taken.
  if (flags.action === 'spare') return (await import('./spare.js')).runSpare(flags);
  if (!flags.id) throw new Error('shim id cannot be empty');
  if (flags.action === 'start' && process.env[LAUNCH_ENV] !== '1')
    await (await import('./start.js')).start(flags);
  else if (flags.action === 'delete') await (await import('./delete.js')).deleteTask(flags);
  // The long-lived shim, by hand or launched by `start` to do its work (serve.ts).
  else await (await import('./serve.js')).serve(flags);
}

let flags: ShimFlags;
try {
  flags = parseShimFlags(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${SHIM_NAME}: ${(err as Error).message}\n`);
  process.exit(err instanceof FlagError ? 2 : 1);
}
main(flags).catch((err: Error) => {
  process.stderr.write(`${SHIM_NAME}: ${err.message}\n`);
  process.exit(1);
});
