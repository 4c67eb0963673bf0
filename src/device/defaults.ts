/**
 * The numbers both ends of a vsock link agree on. They match Dragonball,
 * Firecracker and Cloud Hypervisor (and Linux's virtio-vsock driver for the
 * credit figures), so a real guest behaves the same against this device.
 */
import type { CreditPolicy } from './csm/credit.js';

/** Receive buffer the device advertises per connection (`buf_alloc`): Firecracker's CONN_TX_BUF_SIZE. */
export const BUF_ALLOC = 64 * 1024;
/**
 * Receive buffer the loopback guest stack advertises: Linux's default
 * (VIRTIO_VSOCK_DEFAULT_BUF_SIZE, the AF_VSOCK SO_VM_SOCKETS_BUFFER_SIZE), as
 * a real guest kernel would.
 */
export const GUEST_BUF_ALLOC = 256 * 1024;
/** Send a CREDIT_UPDATE once the free space the peer last saw drops under this. */
export const CREDIT_UPDATE_THRESHOLD = 4 * 1024;
/** The device's credit policy (every endpoint on the host side). */
export const DEVICE_CREDIT: CreditPolicy = { bufAlloc: BUF_ALLOC, updateThreshold: CREDIT_UPDATE_THRESHOLD };
/** The loopback guest stack's credit policy: Linux's receive buffer. */
export const GUEST_CREDIT: CreditPolicy = {
  bufAlloc: GUEST_BUF_ALLOC,
  updateThreshold: CREDIT_UPDATE_THRESHOLD,
};
/** A REQUEST the peer leaves unanswered this long is reset. */
export const REQUEST_TIMEOUT_MS = 2000;
/** A connection the peer has shut down whose buffered data is not written within this is reset. */
export const SHUTDOWN_DRAIN_TIMEOUT_MS = 2000;
/** Connections per device (Firecracker/Dragonball MAX_CONNECTIONS). */
export const MAX_CONNECTIONS = 1023;
/** Host ports for host-initiated connections: round-robin in [2^30, 2^31). */
export const HOST_PORT_MIN = 2 ** 30;
export const HOST_PORT_END = 2 ** 31;
/**
 * Largest RW payload the loopback link moves in one packet: the guest's whole
 * credit window. No virtqueue limits it (a virtio guest posts 4 KiB or 64 KiB
 * buffers), so a FIFO read or a socket write moves up to 256 KiB at once:
 * measured, this cuts the agent's wake-ups on stdout by a third.
 */
export const LOOPBACK_MAX_PAYLOAD = GUEST_BUF_ALLOC;
