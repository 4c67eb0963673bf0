/**
 * `passfd-broker/device`: the hybrid-vsock device (VMM side), as `vmm` runs
 * it. A `HybridVsockDevice` serves the Dragonball/Firecracker Unix-socket
 * protocol (CONNECT, passfd, `<path>_<port>` for guest-initiated
 * connections) and is started with one guest transport: `LoopbackTransport`
 * (a loopback guest in this process, reached through its AF_VSOCK stand-in)
 * or `VhostUserVsockTransport` (a vhost-user-vsock backend for QEMU).
 */
export * from '../device/hybrid-device.js';
export * from '../device/transport/loopback/loopback-transport.js';
export type * from '../device/transport/transport.js';
export * from '../device/transport/vhost-user/vsock-transport.js';
