// Which of a spec's mounts go to the agent, with bind sources as the guest
// sees them (pure), and config.json's mounts as the shim reads them.

import { describe, expect, it } from 'vitest';
import { guestMounts } from '../../src/shim/guest-mounts.js';
import { guestNamespaces } from '../../src/shim/guest-namespaces.js';
import { parseSpec, SpecError } from '../../src/shim/oci-spec.js';

/** containerd 1.6's default mounts (ctr oci spec) plus two of ctr run --mount's. */
const DEFAULTS = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755'] },
  { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind', 'ro'] },
  { destination: '/etc/x', type: '', source: '/srv/x', options: ['bind'] },
];

describe('guestMounts', () => {
  it('leaves out what the agent sets up itself and numbers the bind sources it shares', () => {
    const shared: string[] = [];
    const out = guestMounts(DEFAULTS, (n, host) => {
      shared.push(`${n}:${host}`);
      return `/run/passfd/shared/c.mounts/${n}`;
    });
    expect(out.map((m) => `${m.destination} ${m.source}`)).toEqual([
      '/run tmpfs',
      '/data /run/passfd/shared/c.mounts/0',
      '/etc/x /run/passfd/shared/c.mounts/1',
    ]);
    expect(shared).toEqual(['0:/srv/data', '1:/srv/x']);
  });
});

describe('guestMounts for a Kubernetes pod’s container', () => {
  it('passes the binds CRI makes below /dev (shared /dev/shm, termination log), not its mqueue or /dev/pts', () => {
    const cri = [
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid'] },
      {
        destination: '/etc/hosts',
        type: 'bind',
        source: '/state/sb/hosts',
        options: ['rbind', 'rprivate', 'rw'],
      },
      { destination: '/dev/termination-log', type: 'bind', source: '/pods/c/abc', options: ['rbind', 'rw'] },
      { destination: '/dev/shm', type: 'bind', source: '/state/sb/shm', options: ['rbind', 'ro'] },
      { destination: '/dev/pts/x', type: 'bind', source: '/tmp/x', options: ['rbind'] },
    ];
    const out = guestMounts(cri, (n, host) => `${n}:${host}`);
    expect(out.map((m) => `${m.destination} ${m.source}`)).toEqual([
      '/etc/hosts 0:/state/sb/hosts',
      '/dev/termination-log 1:/pods/c/abc',
      '/dev/shm 2:/state/sb/shm',
    ]);
  });
});

describe('guestNamespaces', () => {
  const spec = (id: string, sandbox: string) =>
    parseSpec(
      JSON.stringify({
        process: { args: ['true'] },
        annotations: { 'io.kubernetes.cri.sandbox-id': sandbox },
        linux: {
          namespaces: [
            { type: 'network', path: '/var/run/netns/cni-1' },
            { type: 'ipc', path: id === sandbox ? '' : '/proc/9/ns/ipc' },
          ],
        },
      }),
    );
  it('keeps host paths for the loopback guest (its agent is on the host)', () => {
    expect(guestNamespaces(spec('sb', 'sb'), 'sb', 'loopback')).toEqual(spec('sb', 'sb').namespaces);
  });
  it('gives a QEMU guest’s pod sandbox a new network namespace, which its members then share', () => {
    expect(guestNamespaces(spec('sb', 'sb'), 'sb', 'qemu')).toEqual([
      { type: 'network', path: '' },
      { type: 'ipc', path: '' },
    ]);
    expect(guestNamespaces(spec('c1', 'sb'), 'c1', 'qemu')).toEqual(spec('c1', 'sb').namespaces);
  });
});

describe('config.json mounts', () => {
  const spec = (mounts: unknown) => JSON.stringify({ process: { args: ['true'] }, mounts });
  it('reads them as written, and none when absent', () => {
    expect(parseSpec(spec(DEFAULTS)).mounts).toEqual(
      DEFAULTS.map((m) => ({ ...m, type: m.type, options: [...m.options] })),
    );
    expect(parseSpec(JSON.stringify({ process: { args: ['true'] } })).mounts).toEqual([]);
  });
  it('reads linux.namespaces (a pod container’s paths included) and refuses malformed ones', () => {
    const withNs = (namespaces: unknown) =>
      parseSpec(JSON.stringify({ process: { args: ['true'] }, linux: { namespaces } }));
    expect(withNs([{ type: 'pid' }, { type: 'ipc', path: '/proc/9/ns/ipc' }]).namespaces).toEqual([
      { type: 'pid', path: '' },
      { type: 'ipc', path: '/proc/9/ns/ipc' },
    ]);
    expect(parseSpec(spec([])).namespaces).toEqual([]);
    expect(() => withNs({})).toThrow('linux.namespaces must be a list');
    expect(() => withNs([{ path: '/x' }])).toThrow('linux.namespaces[0].type is missing');
  });
  it('refuses mounts that are not a list or lack a destination', () => {
    expect(() => parseSpec(spec({}))).toThrow(SpecError);
    expect(() => parseSpec(spec([{ type: 'tmpfs' }]))).toThrow('mounts[0].destination is missing');
  });
});
