/**
 * `passfd-broker/agent`: the guest agent, as `agent` runs it: Kata's
 * `grpc.AgentService` over ttrpc plus the passfd stream listener, over a
 * `GuestVsock`: `AfVsock` (real AF_VSOCK sockets, in a VM) or `StandinVsock`
 * (the loopback guest's stand-in socket of a running `vmm`).
 */
export { Agent, type AgentOptions } from '../agent/agent.js';
export { AfVsock, type AfVsockOptions } from '../guest-vsock/af-vsock.js';
export { StandinVsock } from '../guest-vsock/standin.js';
export * from '../guest-vsock/types.js';
