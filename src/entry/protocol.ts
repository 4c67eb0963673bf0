/**
 * `passfd-broker/protocol`: the wire formats as pure codecs (bytes in,
 * values out and back; no I/O): the hybrid-vsock Unix-socket commands
 * (CONNECT, passfd, OK), the virtio-vsock packet header, ttrpc frames and
 * envelopes, the loopback guest's stand-in protocol, and Kata's agent API
 * (`agentMethods`, the protobuf-es message schemas of `agent.proto`).
 */
export * from '../protocol/agent-api.js';
export * from '../protocol/hybrid-vsock.js';
export * from '../protocol/ttrpc.js';
export * from '../protocol/vsock-packet.js';
export * from '../protocol/vsock-standin.js';
