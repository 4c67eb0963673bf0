/**
 * The Linux namespaces a container's spec asks for, as the guest can have
 * them (the agent's rules are in src/agent/pod-namespaces.ts).
 *
 * Paths in a spec are the host's. The loopback guest's agent runs on the
 * host, so every path stays: a pod sandbox joins the network namespace CNI
 * made for the pod. A QEMU guest has its own kernel, where a host path
 * means nothing: a network namespace path of a container that is no pod
 * member (the pod's sandbox itself) becomes "new", so the pod gets a
 * network namespace of its own in the guest, which its members then join
 * (their paths stay: for the agent they mean "the sandbox's"). Pure.
 */
import { podSandboxOf } from '../agent/pod-namespaces.js';
import type { GuestKind } from '../config/schema.js';
import type { OciNamespace, OciSpec } from './oci-spec.js';

export function guestNamespaces(spec: OciSpec, containerId: string, guest: GuestKind): OciNamespace[] {
  if (guest === 'loopback') return spec.namespaces;
  const member = podSandboxOf(containerId, spec.annotations) !== undefined;
  return spec.namespaces.map((n) => (n.type === 'network' && n.path && !member ? { ...n, path: '' } : n));
}
