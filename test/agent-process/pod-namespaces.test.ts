// Which IPC, UTS and PID namespaces a container gets from its CreateContainer
// request (pod-namespaces.ts; pure).
import { describe, expect, it } from 'vitest';
import { NamespacePlanError, planNamespaces, SANDBOX_ID_ANNOTATION } from '../../src/agent/pod-namespaces.js';

const ns = (...entries: [string, string][]) => entries.map(([Type, Path]) => ({ Type, Path }));
const pod = { [SANDBOX_ID_ANNOTATION]: 'sb' };

describe('planNamespaces', () => {
  it('gives every namespace new when the request lists none (run, ctr without a spec)', () => {
    expect(
      planNamespaces({ containerId: 'c', annotations: {}, namespaces: undefined, sandboxPidns: false }),
    ).toEqual({ ipc: 'new', uts: 'new', pid: 'new' });
  });

  it('reads containerd CRI specs: the sandbox gets new ones, its containers join where a path is given', () => {
    const sandbox = planNamespaces({
      containerId: 'sb',
      annotations: pod,
      namespaces: ns(['pid', ''], ['ipc', ''], ['uts', ''], ['mount', '']),
      sandboxPidns: false,
    });
    expect(sandbox).toEqual({ ipc: 'new', uts: 'new', pid: 'new' });
    const member = planNamespaces({
      containerId: 'c1',
      annotations: pod,
      namespaces: ns(['pid', ''], ['ipc', '/proc/42/ns/ipc'], ['uts', '/proc/42/ns/uts'], ['mount', '']),
      sandboxPidns: false,
    });
    expect(member).toEqual({ ipc: 'sandbox', uts: 'sandbox', pid: 'new', sandboxId: 'sb' });
    // shareProcessNamespace: a pid path, or Kata's sandbox_pidns flag.
    expect(
      planNamespaces({
        containerId: 'c1',
        annotations: pod,
        namespaces: ns(['pid', '/proc/42/ns/pid']),
        sandboxPidns: false,
      }).pid,
    ).toBe('sandbox');
    expect(
      planNamespaces({ containerId: 'c1', annotations: pod, namespaces: ns(['pid', '']), sandboxPidns: true })
        .pid,
    ).toBe('sandbox');
  });

  it('leaves a type the spec does not list to the guest (a hostIPC pod)', () => {
    expect(
      planNamespaces({
        containerId: 'c',
        annotations: {},
        namespaces: ns(['pid', ''], ['mount', '']),
        sandboxPidns: false,
      }),
    ).toEqual({ ipc: 'guest', uts: 'guest', pid: 'new' });
  });

  it('refuses to share without a pod sandbox to share with', () => {
    const ask = (annotations: Record<string, string>) => () =>
      planNamespaces({
        containerId: 'sb',
        annotations,
        namespaces: ns(['ipc', '/proc/1/ns/ipc']),
        sandboxPidns: false,
      });
    expect(ask({})).toThrow(NamespacePlanError);
    expect(ask(pod)).toThrow(/asks to share its ipc namespace\(s\) but names no other pod sandbox/);
  });
});
