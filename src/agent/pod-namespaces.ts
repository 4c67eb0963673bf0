/**
 * Which IPC, UTS and PID namespaces a container gets, from its
 * CreateContainer request: what lets the containers of a Kubernetes pod,
 * all in one guest, share what CRI says they share.
 *
 * containerd's CRI plugin writes each container's `linux.namespaces` with
 * the *host* paths of the pod sandbox's namespaces
 * (`/proc/<sandbox task pid>/ns/ipc`, …). Those paths mean nothing in a
 * guest, so, as Kata's agent does, a path is read only as "share this with
 * the sandbox": the container joins the namespace of its pod's sandbox
 * container in this guest, named by the CRI annotation
 * `io.kubernetes.cri.sandbox-id`. (Kata's agent creates shared IPC and UTS
 * namespaces at CreateSandbox and joins every container to them; this
 * agent has no CreateSandbox, so the sandbox container's own process holds
 * them, which lives exactly as long as the pod.) Kata's `sandbox_pidns`
 * flag asks for the sandbox's PID namespace too (a pod with
 * `shareProcessNamespace`).
 *
 * - no `Linux.Namespaces` at all (`run`, or a runtime that sends none):
 *   every namespace new, as before;
 * - an entry without a path: new;
 * - an entry with a path (or `sandbox_pidns` for pid): the sandbox's;
 * - no entry for a type: the guest's own (what an OCI spec means by it;
 *   a `hostIPC` pod's containers see the guest's IPC).
 *
 * The network namespace follows the same rules with one more case: a path
 * in a container that is no pod member (a pod's sandbox itself, or a
 * runtime's container given a namespace to join) is joined as a path in the
 * agent's filesystem: in the loopback guest, the agent's filesystem is the
 * host's, so a pod sandbox joins the network namespace CNI made for the pod
 * (the shim turns it into "new" for a QEMU guest, where that host path
 * means nothing). With no namespaces listed at all, the network stays the
 * guest's, as `run` has always had it.
 *
 * The mount namespace is always new (the agent mounts the container's
 * /proc and /dev in it); cgroup, user and time namespaces are not managed
 * by this agent (containers use the guest's). Pure.
 */
export type SharedKind = 'ipc' | 'uts' | 'pid';
export const SHARED_KINDS: readonly SharedKind[] = ['ipc', 'uts', 'pid'];

/** Where one namespace comes from. */
export type NamespaceSource = 'new' | 'guest' | 'sandbox';

export interface NamespacePlan {
  ipc: NamespaceSource;
  uts: NamespaceSource;
  pid: NamespaceSource;
  /** The network namespace: as the others, or a path to join. */
  net: NamespaceSource | { path: string };
  /** The pod sandbox's container id, when anything is shared with it. */
  sandboxId?: string;
}

/** The CRI annotation naming a container's pod sandbox (containerd's, as Kata reads it). */
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';

/** The pod sandbox `containerId` belongs to, when it is another container (a pod's member); else undefined. */
export function podSandboxOf(containerId: string, annotations: Record<string, string>): string | undefined {
  const sandboxId = annotations[SANDBOX_ID_ANNOTATION];
  return sandboxId && sandboxId !== containerId ? sandboxId : undefined;
}

export class NamespacePlanError extends Error {
  override readonly name = 'NamespacePlanError';
}

export interface NamespaceRequest {
  containerId: string;
  annotations: Record<string, string>;
  namespaces: readonly { Type: string; Path: string }[] | undefined;
  sandboxPidns: boolean;
}

export function planNamespaces(r: NamespaceRequest): NamespacePlan {
  const listed = r.namespaces ?? [];
  const plan: NamespacePlan = { ipc: 'new', uts: 'new', pid: 'new', net: 'guest' };
  const sandboxId = podSandboxOf(r.containerId, r.annotations);
  const member = sandboxId !== undefined;
  if (listed.length > 0) {
    for (const kind of SHARED_KINDS) {
      const entry = listed.find((n) => n.Type === kind);
      plan[kind] = !entry ? 'guest' : entry.Path ? 'sandbox' : 'new';
    }
    const net = listed.find((n) => n.Type === 'network');
    plan.net = !net ? 'guest' : !net.Path ? 'new' : member ? 'sandbox' : { path: net.Path };
  }
  if (r.sandboxPidns) plan.pid = 'sandbox';
  // (The network is 'sandbox' only for a member: a non-member's path is a file to join.)
  const shared = SHARED_KINDS.filter((k) => plan[k] === 'sandbox');
  if (shared.length === 0 && plan.net !== 'sandbox') return plan;
  if (!member) {
    throw new NamespacePlanError(
      `container ${r.containerId} asks to share its ${shared.join(', ')} namespace(s) but names no other pod sandbox (annotation ${SANDBOX_ID_ANNOTATION})`,
    );
  }
  return { ...plan, sandboxId };
}
