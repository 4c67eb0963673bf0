/**
 * The numbers both ends of a vsock link agree on. They match Dragonball,
 * Firecracker and Cloud Hypervisor (and Linux's virtio-vsock driver for the
 * credit figures), so a real guest behaves the same against this device.
 */
import type { CreditPolicy } from './csm/credit.js';

/**
 * Linux's per-socket receive buffer (VIRTIO_VSOCK_DEFAULT_BUF_SIZE, the
 * AF_VSOCK SO_VM_SOCKETS_BUFFER_SIZE): what a Linux guest advertises, and
 * what this device and the loopback guest advertise by default.
 */
export const LINUX_BUF_ALLOC = 256 * 1024;
/** Largest packet Linux builds (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const LINUX_MAX_PKT = 64 * 1024;
/**
 * The default credit policy, for the device and the loopback guest: Linux's
 * 256 KiB window; CREDIT_UPDATE once a quarter of it has been forwarded
 * since the peer last heard our fwd_cnt, or as soon as the peer sees less
 * than one full packet (64 KiB) free. Linux 6.1's own receiver waits until
 * 192 KiB were consumed (its `free_space < VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`
 * test); updating after 64 KiB keeps a guest sender from ever stopping on a
 * full window while the host keeps up (measured in docs/performance/vhost-user.md:
 * the Firecracker policy below made each update stall the guest's sender).
 */
export const LINUX_CREDIT: CreditPolicy = {
  bufAlloc: LINUX_BUF_ALLOC,
  updateAfter: LINUX_BUF_ALLOC / 4,
  lowWater: LINUX_MAX_PKT,
};
/**
 * Firecracker's (and Dragonball's) device policy: a 64 KiB window
 * (CONN_TX_BUF_SIZE) and an update only once the peer sees less than 4 KiB
 * free. Kept as a setting (`vmm --credit firecracker`) for comparison.
 */
export const FIRECRACKER_CREDIT: CreditPolicy = {
  bufAlloc: 64 * 1024,
  updateAfter: 64 * 1024,
  lowWater: 4 * 1024,
};
/** The named credit policies (`vmm --credit <name>`). */
export const CREDIT_POLICIES = { linux: LINUX_CREDIT, firecracker: FIRECRACKER_CREDIT } as const;
export type CreditPolicyName = keyof typeof CREDIT_POLICIES;
/** The device's default credit policy (every connection on the host side). */
export const DEVICE_CREDIT: CreditPolicy = LINUX_CREDIT;
/** The loopback guest stack's credit policy: what a Linux guest kernel advertises. */
export const GUEST_CREDIT: CreditPolicy = LINUX_CREDIT;
/**
 * A credit policy with window `bufAlloc` and LINUX_CREDIT's proportions:
 * update after a quarter of the window, or under one packet (at most a
 * quarter) free.
 */
export function creditWithWindow(bufAlloc: number): CreditPolicy {
  const quarter = Math.max(1, Math.floor(bufAlloc / 4));
  return { bufAlloc, updateAfter: quarter, lowWater: Math.min(LINUX_MAX_PKT, quarter) };
}
/**
 * Out of the peer's credit with data to send, a connection asks for credit
 * (CREDIT_REQUEST) only if no update has come by itself this long: every
 * peer we know sends one as its reader makes room, and asking on every full
 * window cost a Linux guest a packet and an answer per 256 KiB.
 */
export const CREDIT_REQUEST_AFTER_MS = 500;
/** A REQUEST the peer leaves unanswered this long is reset. */
export const REQUEST_TIMEOUT_MS = 2000;
/** A connection the peer has shut down whose buffered data is not written within this is reset. */
export const SHUTDOWN_DRAIN_TIMEOUT_MS = 2000;
/** Connections per device (Firecracker/Dragonball MAX_CONNECTIONS). */
export const MAX_CONNECTIONS = 1023;
/**
 * Clients of the hybrid-vsock socket (or of the loopback guest's stand-in
 * socket) that have connected but not sent their whole request yet, at
 * once. Beyond it new connections wait in the listening socket's backlog
 * (src/net/unix-listener.ts) until one of these sends its request or is
 * dropped (5 s of silence on the hybrid socket, 10 s on the stand-in): a
 * crowd of idle clients holds at most this many fds of the device.
 */
export const MAX_WAITING_CLIENTS = 256;
/** Host ports for host-initiated connections: round-robin in [2^30, 2^31). */
export const HOST_PORT_MIN = 2 ** 30;
export const HOST_PORT_END = 2 ** 31;
/**
 * Largest RW payload the loopback link moves in one packet: the guest's whole
 * credit window. No virtqueue limits it (a virtio guest posts 4 KiB or 64 KiB
 * buffers), so a FIFO read or a socket write moves up to 256 KiB at once:
 * measured, this cuts the agent's wake-ups on stdout by a third.
 */
export const LOOPBACK_MAX_PAYLOAD = LINUX_BUF_ALLOC;
