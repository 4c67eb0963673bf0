/**
 * The access policy this process applies, and where its decisions are
 * logged. One per process, installed once at start-up by the command that
 * owns the sockets (`vmm` from its configuration); until then, and in
 * processes that never install one, the safe default holds: only this
 * process's own uid and root may connect, and a guest may reach any port
 * somebody allowed listens on.
 *
 * Process-wide on purpose: the listeners live deep inside the device and
 * its transports, and the policy is a property of the deployment, not of
 * any one socket.
 */
import { createLogger, type Logger } from '../util/log.js';
import { AccessPolicy } from './policy.js';

let current: { policy: AccessPolicy; log: Logger } | null = null;

/** Sets the policy (and the logger for refusals and replaced stale sockets) for this process. */
export function installAccess(policy: AccessPolicy, log: Logger): void {
  current = { policy, log };
}

export function accessContext(): { policy: AccessPolicy; log: Logger } {
  current ??= { policy: new AccessPolicy(), log: createLogger('access') };
  return current;
}
