/**
 * Choosing the guest kernel and its modules (src/vm/guest-kernel.ts): on
 * module trees laid out as Debian's 6.1 and 6.12 kernels lay them out (the
 * first builds virtio-pci as modules and has fscache apart, the second
 * builds them in and folds fscache into netfs), and on this machine's own
 * installed kernel. No VM is booted.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configuredGuestKernel, findGuestKernel, guestModules } from '../../src/vm/guest-kernel.js';
import { tmpDir } from '../support/cli.js';

const root = tmpDir('passfd-guest-kernel-');
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** A module tree with this modules.dep and modules.builtin (no module bytes needed to plan). */
function tree(name: string, dep: string, builtin: string): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'modules.dep'), dep);
  fs.writeFileSync(path.join(dir, 'modules.builtin'), builtin);
  return dir;
}

// The lines that matter of Debian's modules.dep files (other modules' lines are left out).
const DEP_6_1 = `kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/net/vmw_vsock/vsock.ko.xz:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/net/vmw_vsock/vsock.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/fs/fscache/fscache.ko.xz: kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/fscache/fscache.ko.xz kernel/fs/netfs/netfs.ko.xz
`;
const DEP_6_12 = `kernel/fs/netfs/netfs.ko.xz:
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vsock.ko.xz:
`;
const BUILTIN_6_12 = `kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/virtio/virtio_pci.ko
`;

describe('guestModules', () => {
  it('6.1 layout: virtio-pci and fscache are modules, each loaded after what it needs', () => {
    const plan = guestModules({ modulesDir: tree('6.1', DEP_6_1, '') });
    expect(plan.order).toEqual([
      'virtio_ring',
      'virtio',
      'virtio_pci_legacy_dev',
      'virtio_pci_modern_dev',
      'virtio_pci',
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
      '9pnet',
      '9pnet_virtio',
      'netfs',
      'fscache',
      '9p',
    ]);
    expect(plan.files.get('9p')).toBe('kernel/fs/9p/9p.ko.xz');
  });

  it('6.12 layout: built-in virtio needs nothing, fscache is gone, netfs comes before 9pnet', () => {
    const plan = guestModules({ modulesDir: tree('6.12', DEP_6_12, BUILTIN_6_12) });
    expect(plan.order).toEqual([
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
      'netfs',
      '9pnet',
      '9pnet_virtio',
      '9p',
    ]);
  });

  it('a module the guest needs that this kernel does not have is an error naming it', () => {
    const dir = tree('no-9p', DEP_6_12.replace(/^kernel\/fs\/9p\/9p\.ko\.xz:.*\n/m, ''), BUILTIN_6_12);
    expect(() => guestModules({ modulesDir: dir })).toThrow(
      /kernel module 9p is neither built into the guest kernel nor in .*modules\.dep/,
    );
    const none = path.join(root, 'empty');
    fs.mkdirSync(none);
    expect(() => guestModules({ modulesDir: none })).toThrow(/no modules\.dep in .*run depmod/);
  });

  it("this machine's kernel: every module comes after each module it depends on", () => {
    const kernel = findGuestKernel();
    const plan = guestModules(kernel);
    const at = new Map(plan.order.map((m, i) => [m, i]));
    const dep = fs.readFileSync(path.join(kernel.modulesDir, 'modules.dep'), 'utf8');
    const name = (f: string) =>
      path
        .basename(f)
        .replace(/\.ko(\..*)?$/, '')
        .replace(/-/g, '_');
    for (const line of dep.split('\n')) {
      const [file, needs = ''] = line.split(':');
      const i = at.get(name(file ?? ''));
      if (i === undefined) continue;
      for (const d of needs.trim().split(/\s+/).filter(Boolean)) {
        expect(at.get(name(d)), `${name(d)} before ${name(file!)}`).toBeLessThan(i);
      }
    }
    for (const m of ['vmw_vsock_virtio_transport', '9pnet_virtio', '9p']) expect(at.has(m), m).toBe(true);
    for (const m of plan.order)
      expect(fs.existsSync(path.join(kernel.modulesDir, plan.files.get(m)!))).toBe(true);
  });
});

describe('configuredGuestKernel', () => {
  const boot = path.join(root, 'boot');
  fs.mkdirSync(boot, { recursive: true });
  const vmlinuz = path.join(boot, 'vmlinuz-6.12.0-test');
  fs.writeFileSync(vmlinuz, 'not really a kernel');
  const modulesRoot = path.join(root, 'lib-modules');
  const modulesDir = path.join(modulesRoot, '6.12.0-test');
  fs.mkdirSync(modulesDir, { recursive: true });
  fs.writeFileSync(path.join(modulesDir, 'modules.dep'), DEP_6_12);

  it('nothing configured: the newest installed kernel', () => {
    expect(configuredGuestKernel({ kernel: '', kernel_modules: '' })).toEqual(findGuestKernel());
  });

  it('a vmlinuz-<version> path: its version, and its modules under the modules root', () => {
    expect(configuredGuestKernel({ kernel: vmlinuz, kernel_modules: '' }, modulesRoot)).toEqual({
      version: '6.12.0-test',
      vmlinuz,
      modulesDir,
    });
  });

  it('kernel_modules given: that tree, whatever the kernel file is called', () => {
    const other = path.join(root, 'bzImage');
    fs.writeFileSync(other, 'x');
    expect(configuredGuestKernel({ kernel: other, kernel_modules: modulesDir })).toEqual({
      version: '6.12.0-test',
      vmlinuz: other,
      modulesDir,
    });
  });

  it('says what is wrong: a missing kernel, a name without a version, no module tree, modules alone', () => {
    expect(() => configuredGuestKernel({ kernel: '/nonexistent/vmlinuz-1', kernel_modules: '' })).toThrow(
      'hypervisor.kernel: /nonexistent/vmlinuz-1 does not exist',
    );
    const bz = path.join(root, 'bzImage-plain');
    fs.writeFileSync(bz, 'x');
    expect(() => configuredGuestKernel({ kernel: bz, kernel_modules: '' })).toThrow(
      /cannot tell the version .* set hypervisor\.kernel_modules/,
    );
    const lonely = path.join(boot, 'vmlinuz-9.9.9');
    fs.writeFileSync(lonely, 'x');
    expect(() => configuredGuestKernel({ kernel: lonely, kernel_modules: '' }, modulesRoot)).toThrow(
      /no modules\.dep in .*9\.9\.9/,
    );
    expect(() => configuredGuestKernel({ kernel: '', kernel_modules: modulesDir })).toThrow(
      'hypervisor.kernel_modules is set but hypervisor.kernel is not',
    );
  });
});
