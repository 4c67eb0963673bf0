/**
 * The numbers both ends of a vsock link agree on. They match Dragonball,
 * Firecracker and Cloud Hypervisor (and Linux's virtio-vsock driver for the
 * credit figures), so a real guest behaves the same against this device.
 */

/** Receive buffer each side advertises (`buf_alloc`). */
export const BUF_ALLOC = 64 * 1024;
/** Send a CREDIT_UPDATE once the free space the peer last saw drops under this. */
export const CREDIT_UPDATE_THRESHOLD = 4 * 1024;
/** A REQUEST the peer leaves unanswered this long is reset. */
export const REQUEST_TIMEOUT_MS = 2000;
/** A connection the peer has shut down whose buffered data is not written within this is reset. */
export const SHUTDOWN_DRAIN_TIMEOUT_MS = 2000;
/** Connections per device (Firecracker/Dragonball MAX_CONNECTIONS). */
export const MAX_CONNECTIONS = 1023;
/** Host ports for host-initiated connections: round-robin in [2^30, 2^31). */
export const HOST_PORT_MIN = 2 ** 30;
export const HOST_PORT_END = 2 ** 31;
/** Largest RW payload the loopback link moves in one packet (one full credit window). */
export const LOOPBACK_MAX_PAYLOAD = 64 * 1024;
