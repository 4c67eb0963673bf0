/**
 * A minimal guest initramfs: Debian's static busybox, the guest kernel's
 * virtio/vsock/9p modules and an `/init` that
 *   1. loads the modules (order from VHOST-USER.md),
 *   2. mounts the host's root read-only over 9p (`hostroot` tag) at /mnt,
 *      with proc, sysfs, devtmpfs and a tmpfs /run inside it (not /tmp:
 *      a checkout under the host's /tmp must stay visible to the guest),
 *   3. prints `PASSFD-VM-READY`, then `chroot`s into /mnt and runs the
 *      command from the kernel command line (`agent.cmd=<base64 of a
 *      /bin/sh -c script>`), with every other `agent.<key>=<value>` exported
 *      as `AGENT_<KEY>` (dots and dashes become `_`),
 *   4. prints `PASSFD-VM-EXIT <status>` and powers off (`poweroff -f`).
 *
 * The archive is written here (cpio "newc" + gzip), no external cpio needed.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

export const VM_READY_MARKER = 'PASSFD-VM-READY';
export const VM_EXIT_MARKER = 'PASSFD-VM-EXIT';

/** Load order for a 9p root and virtio-vsock on Debian 12's 6.1 kernel. */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'vsock',
  'vmw_vsock_virtio_transport_common',
  'vmw_vsock_virtio_transport',
  'netfs',
  'fscache',
  '9pnet',
  '9pnet_virtio',
  '9p',
];

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

/** Finds `<name>.ko` (or .ko.xz/.ko.zst/.ko.gz) below a kernel's module tree. */
function findModule(modulesDir: string, name: string, index: Map<string, string>): string {
  if (index.size === 0) {
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) index.set(e.name.replace(/\.ko(\..*)?$/, ''), p);
      }
    };
    walk(path.join(modulesDir, 'kernel'));
  }
  // modules.dep names use '-' and '_' interchangeably.
  const found = index.get(name) ?? index.get(name.replace(/_/g, '-'));
  if (!found) throw new Error(`kernel module ${name} not found under ${modulesDir}`);
  return found;
}

function moduleBytes(file: string): Buffer {
  const raw = fs.readFileSync(file);
  if (file.endsWith('.ko')) return raw;
  if (file.endsWith('.gz')) return zlib.gunzipSync(raw);
  // busybox insmod cannot read xz/zstd itself; the host's xz/zstd can.
  const tool = file.endsWith('.xz') ? ['xz', '-dc'] : ['zstd', '-dc'];
  const r = spawnSync(tool[0]!, [tool[1]!, file], { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${tool.join(' ')} ${file} failed: ${r.stderr?.toString()}`);
  return r.stdout as Buffer;
}

const INIT_SCRIPT = (modules: string[]) => `#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /mnt /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in ${modules.join(' ')}; do
  $B insmod /lib/modules/$m.ko || echo "init: insmod $m failed"
done
if ! $B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /mnt; then
  echo "init: 9p mount of hostroot failed"
  echo "${VM_EXIT_MARKER} 9p"
  $B poweroff -f
fi
$B mount -t proc proc /mnt/proc
$B mount -t sysfs sys /mnt/sys
$B mount -t devtmpfs dev /mnt/dev
$B mount -t tmpfs run /mnt/run
CMD=
for arg in $($B cat /proc/cmdline); do
  case "$arg" in
    agent.cmd=*) CMD=$(echo "\${arg#agent.cmd=}" | $B base64 -d) ;;
    agent.*=*)
      k=\${arg%%=*}; k=\${k#agent.}
      k=$(echo "$k" | $B tr 'a-z.-' 'A-Z__')
      export "AGENT_$k=\${arg#*=}" ;;
  esac
done
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/run TMPDIR=/run
echo "${VM_READY_MARKER} $($B cat /proc/uptime)"
if [ -n "$CMD" ]; then
  $B chroot /mnt /bin/sh -c "$CMD"
  rc=$?
else
  echo "init: no agent.cmd= on the kernel command line"
  rc=127
fi
echo "${VM_EXIT_MARKER} $rc"
$B poweroff -f
`;

interface CpioEntry {
  name: string;
  mode: number; // including file type bits
  data?: Buffer;
}

function cpioHeader(ino: number, e: CpioEntry, size: number, nameLen: number): string {
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, '0');
  // newc: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return `070701${hex(ino)}${hex(e.mode)}${hex(0)}${hex(0)}${hex(1)}${hex(0)}${hex(size)}${hex(0)}${hex(0)}${hex(0)}${hex(0)}${hex(nameLen)}${hex(0)}`;
}

/** A cpio "newc" archive of the entries (trailer appended). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    offset += b.length;
  };
  const pad4 = () => {
    const n = (4 - (offset % 4)) % 4;
    if (n) push(Buffer.alloc(n));
  };
  const all = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    push(Buffer.from(cpioHeader(i + 1, e, data.length, name.length), 'ascii'));
    push(name);
    pad4();
    push(data);
    pad4();
  });
  return Buffer.concat(parts);
}

export interface InitramfsOptions {
  /** Where to write the gzip'd cpio archive. */
  output: string;
  kernel?: GuestKernel;
  busybox?: string;
  modules?: string[];
}

/** Builds the initramfs; returns its path and the kernel it matches. */
export function buildInitramfs(opts: InitramfsOptions): { path: string; kernel: GuestKernel } {
  const kernel = opts.kernel ?? findGuestKernel();
  const busybox = opts.busybox ?? '/bin/busybox';
  if (!fs.existsSync(busybox)) throw new Error(`${busybox} missing (apt-get install busybox-static)`);
  const modules = opts.modules ?? GUEST_MODULES;
  const index = new Map<string, string>();
  const DIR = 0o040755;
  const FILE = 0o100644;
  const EXEC = 0o100755;
  const entries: CpioEntry[] = [
    { name: 'bin', mode: DIR },
    { name: 'lib', mode: DIR },
    { name: 'lib/modules', mode: DIR },
    { name: 'dev', mode: DIR },
    { name: 'proc', mode: DIR },
    { name: 'sys', mode: DIR },
    { name: 'mnt', mode: DIR },
    { name: 'tmp', mode: DIR },
    { name: 'bin/busybox', mode: EXEC, data: fs.readFileSync(busybox) },
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
    { name: 'init', mode: EXEC, data: Buffer.from(INIT_SCRIPT(modules)) },
  ];
  for (const m of modules) {
    entries.push({
      name: `lib/modules/${m}.ko`,
      mode: FILE,
      data: moduleBytes(findModule(kernel.modulesDir, m, index)),
    });
  }
  fs.mkdirSync(path.dirname(opts.output), { recursive: true });
  fs.writeFileSync(opts.output, zlib.gzipSync(cpioNewc(entries), { level: 1 }));
  return { path: opts.output, kernel };
}
