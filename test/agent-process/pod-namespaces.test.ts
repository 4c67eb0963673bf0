// Which IPC, UTS and PID namespaces a container gets from its CreateContainer
// request (pod-namespaces.ts; pure).
import { describe, expect, it } from 'vitest';
import { NamespacePlanError, planNamespaces, SANDBOX_ID_ANNOTATION } from '../../src/agent/pod-namespaces.js';

const ns = (...entries: [string, string][]) => entries.map(([Type, Path]) => ({ Type, Path }));
const pod = { [SANDBOX_ID_ANNOTATION]: 'sb' };

describe('planNamespaces', () => {
  it('gives new IPC, UTS and PID namespaces and the guest’s network when the request lists none (run)', () => {
    expect(
      planNamespaces({ containerId: 'c', annotations: {}, namespaces: undefined, sandboxPidns: false }),
    ).toEqual({ ipc: 'new', uts: 'new', pid: 'new', net: 'guest' });
  });

  it('reads containerd CRI specs: the sandbox gets new ones, its containers join where a path is given', () => {
    const sandbox = planNamespaces({
      containerId: 'sb',
      annotations: pod,
      namespaces: ns(['pid', ''], ['ipc', ''], ['uts', ''], ['mount', '']),
      sandboxPidns: false,
    });
    expect(sandbox).toEqual({ ipc: 'new', uts: 'new', pid: 'new', net: 'guest' });
    const member = planNamespaces({
      containerId: 'c1',
      annotations: pod,
      namespaces: ns(['pid', ''], ['ipc', '/proc/42/ns/ipc'], ['uts', '/proc/42/ns/uts'], ['mount', '']),
      sandboxPidns: false,
    });
    expect(member).toEqual({ ipc: 'sandbox', uts: 'sandbox', pid: 'new', net: 'guest', sandboxId: 'sb' });
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
    ).toEqual({ ipc: 'guest', uts: 'guest', pid: 'new', net: 'guest' });
  });

  it('network: new without a path (ctr), the file for a pod sandbox (CNI’s), the sandbox’s for its members', () => {
    const net = (containerId: string, Path: string) =>
      planNamespaces({
        containerId,
        annotations: pod,
        namespaces: ns(['network', Path]),
        sandboxPidns: false,
      });
    expect(
      planNamespaces({
        containerId: 'c',
        annotations: {},
        namespaces: ns(['network', '']),
        sandboxPidns: false,
      }).net,
    ).toBe('new');
    expect(net('sb', '/var/run/netns/cni-1').net).toEqual({ path: '/var/run/netns/cni-1' });
    expect(net('c1', '/var/run/netns/cni-1')).toMatchObject({ net: 'sandbox', sandboxId: 'sb' });
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
