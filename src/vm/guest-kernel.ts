/**
 * Which Linux kernel a QEMU guest boots, and which of its modules the
 * initramfs must carry.
 *
 * The kernel: `[hypervisor] kernel` (a vmlinuz path, Kata's key of the same
 * name) with its module tree in `[hypervisor] kernel_modules`, which
 * defaults to `/lib/modules/<version>`, the version being what follows
 * `vmlinuz-` in the file's name. Both empty (the default): the newest
 * `/boot/vmlinuz-<ver>` that has a `/lib/modules/<ver>`.
 *
 * The modules: the guest needs virtio-pci, virtio-vsock and a 9p root over
 * virtio (`GUEST_MODULE_TARGETS`). What else to load, and in which order,
 * depends on how the kernel was configured: Debian's 6.1 builds virtio and
 * virtio-pci as modules and has a separate fscache module; its 6.12 builds
 * them in and folds fscache into netfs. So the list is worked out per kernel
 * from depmod's own files, as modprobe would: a target that
 * `modules.builtin` names needs nothing; any other is loaded after its
 * `modules.dep` dependencies (which that file lists so that loading them
 * from the last to the first works).
 */
import fs from 'node:fs';
import path from 'node:path';

/** The modules the guest's `/init` needs loaded; their dependencies come from `modules.dep`. */
export const GUEST_MODULE_TARGETS = [
  'virtio_pci',
  'vmw_vsock_virtio_transport',
  '9pnet_virtio',
  '9p',
] as const;

export interface GuestKernel {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

/** The newest kernel in /boot that has a matching /lib/modules directory. */
export function findGuestKernel(bootDir = '/boot', modulesRoot = '/lib/modules'): GuestKernel {
  const candidates = fs.existsSync(bootDir)
    ? fs
        .readdirSync(bootDir)
        .filter((f) => f.startsWith('vmlinuz-'))
        .map((f) => f.slice('vmlinuz-'.length))
        .filter((v) => fs.existsSync(path.join(modulesRoot, v)))
        .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))
    : [];
  const version = candidates.at(-1);
  if (!version) {
    throw new Error(
      `no guest kernel: need ${bootDir}/vmlinuz-<ver> and ${modulesRoot}/<ver> (apt-get install linux-image-amd64)`,
    );
  }
  return {
    version,
    vmlinuz: path.join(bootDir, `vmlinuz-${version}`),
    modulesDir: path.join(modulesRoot, version),
  };
}

/** The `[hypervisor]` keys that choose the guest kernel. */
export interface GuestKernelConfig {
  kernel: string;
  kernel_modules: string;
}

/** The guest kernel the configuration names, or the newest installed one when it names none. */
export function configuredGuestKernel(h: GuestKernelConfig, modulesRoot = '/lib/modules'): GuestKernel {
  if (!h.kernel) {
    if (h.kernel_modules) throw new Error('hypervisor.kernel_modules is set but hypervisor.kernel is not');
    return findGuestKernel('/boot', modulesRoot);
  }
  const vmlinuz = path.resolve(h.kernel);
  if (!fs.existsSync(vmlinuz)) throw new Error(`hypervisor.kernel: ${h.kernel} does not exist`);
  const base = path.basename(vmlinuz);
  const fromName = base.startsWith('vmlinuz-') ? base.slice('vmlinuz-'.length) : '';
  let modulesDir: string;
  if (h.kernel_modules) {
    modulesDir = path.resolve(h.kernel_modules);
  } else if (fromName) {
    modulesDir = path.join(modulesRoot, fromName);
  } else {
    throw new Error(
      `hypervisor.kernel: cannot tell the version of ${h.kernel} from its name (vmlinuz-<version>); set hypervisor.kernel_modules`,
    );
  }
  if (!fs.existsSync(path.join(modulesDir, 'modules.dep'))) {
    throw new Error(
      `no modules.dep in ${modulesDir}: the guest kernel's module tree (run depmod for it, e.g. depmod -b <root> <version>)`,
    );
  }
  return { version: fromName || path.basename(modulesDir), vmlinuz, modulesDir };
}

/** A module's name as insmod and modprobe know it: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`. */
const moduleName = (file: string) =>
  path
    .basename(file)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');

export interface ModulePlan {
  /** Load order: every module after the ones it depends on. */
  order: string[];
  /** Each module's file, relative to the kernel's module tree. */
  files: Map<string, string>;
}

/**
 * The modules to load for `targets` on this kernel, dependencies first
 * (see the module comment). A target that is neither built in nor a module
 * of this kernel is an error naming it.
 */
export function guestModules(
  kernel: Pick<GuestKernel, 'modulesDir'>,
  targets: readonly string[] = GUEST_MODULE_TARGETS,
): ModulePlan {
  const depFile = path.join(kernel.modulesDir, 'modules.dep');
  if (!fs.existsSync(depFile))
    throw new Error(`no modules.dep in ${kernel.modulesDir} (run depmod for that kernel)`);
  const deps = new Map<string, { file: string; needs: string[] }>();
  for (const line of fs.readFileSync(depFile, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const file = line.slice(0, colon).trim();
    const needs = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(moduleName);
    deps.set(moduleName(file), { file, needs });
  }
  const builtinFile = path.join(kernel.modulesDir, 'modules.builtin');
  const builtin = new Set(
    fs.existsSync(builtinFile)
      ? fs.readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(moduleName)
      : [],
  );
  const order: string[] = [];
  const files = new Map<string, string>();
  const add = (name: string) => {
    if (files.has(name)) return;
    const entry = deps.get(name);
    if (!entry) throw new Error(`kernel module ${name} not found in ${depFile}`);
    // modules.dep lists a module's dependencies so that loading them from the last to the first works.
    for (const d of [...entry.needs].reverse()) add(d);
    files.set(name, entry.file);
    order.push(name);
  };
  for (const raw of targets) {
    const name = moduleName(raw);
    if (builtin.has(name)) continue;
    if (!deps.has(name)) {
      throw new Error(
        `kernel module ${name} is neither built into the guest kernel nor in ${depFile}: the guest needs it`,
      );
    }
    add(name);
  }
  return { order, files };
}
