/**
 * Which of a spec's mounts the agent makes in the container, and their
 * sources as the guest sees them.
 *
 * containerd's default spec lists the container's /proc, /dev, /dev/pts,
 * /dev/shm, /dev/mqueue and /sys: the agent sets up /proc and /dev (with pts
 * and shm) itself in each container (src/agent/process/container-root.ts),
 * and the guest has no /sys or mqueue to give, so those are left out here
 * (but a bind below /dev, a pod's shared /dev/shm or termination log, goes);
 * everything else (`ctr run --mount`, the default /run tmpfs, a Kubernetes
 * volume) goes to the agent, which makes bind mounts and tmpfs and refuses
 * any other type by name. A bind source is made reachable in the guest by
 * the sandbox (`share`): the host path itself in the loopback guest, a bind
 * into the 9p share in a QEMU guest. Pure apart from `share`.
 */
import type { OciMount } from './oci-spec.js';

const isBind = (m: OciMount) =>
  m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind');

/** Destinations at or below these are the agent's own. */
const PROVIDED = ['/proc', '/dev', '/sys'];

const under = (d: string, p: string) => d === p || d.startsWith(`${p}/`);

/**
 * The agent's own: anything at or below /proc and /sys, and /dev itself
 * and /dev/pts; below /dev only what is not a bind (a bind there is a pod's
 * shared /dev/shm or its /dev/termination-log, which CRI makes on the host).
 */
const isProvided = (m: OciMount) => {
  const d = m.destination.replace(/\/+$/, '') || '/';
  if (isBind(m) && d.startsWith('/dev/') && !under(d, '/dev/pts')) return false;
  return PROVIDED.some((p) => under(d, p));
};

/** The agent's mounts for `mounts`; `share(n, hostPath)` returns a bind source's path in the guest. */
export function guestMounts(
  mounts: readonly OciMount[],
  share: (n: number, hostPath: string) => string,
): OciMount[] {
  let n = 0;
  return mounts
    .filter((m) => !isProvided(m))
    .map((m) => (isBind(m) ? { ...m, source: share(n++, m.source) } : { ...m }));
}
