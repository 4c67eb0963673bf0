/**
 * An OCI image built offline from the host's static busybox, for running
 * containers through a containerd that cannot reach a registry (the tests,
 * `bench --scenarios containerd`, the README's walkthrough).
 *
 * Layout (OCI image-layout 1.0, what `ctr image import` reads): one
 * uncompressed layer tar (`/bin/busybox` plus one symlink per applet,
 * `/etc/passwd`, `/etc/group`, empty `tmp proc sys dev root`), a config
 * (`PATH=/bin`, `Cmd /bin/sh`, the layer's digest as its diff id), a
 * manifest, and an `index.json` whose manifest carries the image name in
 * `io.containerd.image.name` (and the tag in
 * `org.opencontainers.image.ref.name`). Everything is tarred again into one
 * archive.
 *
 * `config` replaces the default `Cmd /bin/sh` with the given Entrypoint
 * and/or Cmd: the same filesystem then makes e.g. a CRI pod's sandbox
 * ("pause") image, `Entrypoint ["/bin/sleep", "infinity"]`.
 *
 * The tars come from GNU tar with a fixed order, owner and mtime, so the
 * same busybox gives the same digests (a re-import is a no-op).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Applets linked into /bin (what the tests, the bench and the README use, and a few more). */
export const BUSYBOX_APPLETS: readonly string[] = [
  'sh cat echo sha256sum head tail sleep ls ps env tty stty id wc hostname kill tr true ',
  'false mkdir rm touch uname dd stat test printf grep readlink pwd cp mv ln chmod mount df ',
  'whoami seq yes xargs sed awk date nproc cut sort uniq od sync',
]
  .join('')
  .split(' ');

export interface BusyboxImageOptions {
  /** Where to write the archive (`ctr image import <file>`). */
  output: string;
  /** Image name, e.g. `localhost/passfd-busybox:1`. */
  name: string;
  /** The static busybox to put in the image (default /bin/busybox, from busybox-static). */
  busybox?: string;
  /** What the image runs (default: `Cmd ["/bin/sh"]`, no Entrypoint). */
  config?: BusyboxImageConfig;
}

/** The part of an OCI image config's `config` the caller may choose. */
export interface BusyboxImageConfig {
  Entrypoint?: readonly string[];
  Cmd?: readonly string[];
}

const TAR_FLAGS = ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=gnu'];

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Refuses a dynamically linked busybox: its loader and libraries would be missing in the image. */
function checkStatic(busybox: string): void {
  if (!fs.existsSync(busybox)) throw new Error(`${busybox} missing (apt-get install busybox-static)`);
  const head = Buffer.alloc(4096);
  const fd = fs.openSync(busybox, 'r');
  try {
    fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  // A dynamic ELF names its interpreter (PT_INTERP) near the start of the file.
  if (head.includes('ld-linux')) {
    throw new Error(`${busybox} is dynamically linked; the image needs busybox-static's /bin/busybox`);
  }
}

/**
 * Writes the image's root filesystem into `root` (created): /bin/busybox
 * and its applet links, /etc/passwd and /etc/group, empty tmp proc sys dev
 * root. Also usable as a plain directory root (`ctr run --rootfs`, or a
 * spec's root.path).
 */
export function writeBusyboxRootfs(root: string, busybox = '/bin/busybox'): void {
  checkStatic(busybox);
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root']) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  fs.chmodSync(path.join(root, 'tmp'), 0o1777);
  fs.chmodSync(path.join(root, 'root'), 0o700);
  fs.copyFileSync(busybox, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const a of BUSYBOX_APPLETS) fs.symlinkSync('busybox', path.join(root, 'bin', a));
  fs.writeFileSync(
    path.join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n');
}

/** The image config's `config`; without a choice exactly the original one (so the same digests). */
function imageConfig(chosen: BusyboxImageConfig | undefined): Record<string, unknown> {
  if (!chosen) return { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/' };
  return {
    Env: ['PATH=/bin'],
    ...(chosen.Entrypoint ? { Entrypoint: chosen.Entrypoint } : {}),
    ...(chosen.Cmd ? { Cmd: chosen.Cmd } : {}),
    WorkingDir: '/',
  };
}

/** Builds the image archive; returns its manifest digest. */
export function buildBusyboxImage(opts: BusyboxImageOptions): string {
  const busybox = opts.busybox ?? '/bin/busybox';
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-image-'));
  try {
    const root = path.join(work, 'rootfs');
    writeBusyboxRootfs(root, busybox);

    const layout = path.join(work, 'oci');
    const blobs = path.join(layout, 'blobs/sha256');
    fs.mkdirSync(blobs, { recursive: true });
    const blob = (data: Buffer) => {
      const digest = sha256(data);
      fs.writeFileSync(path.join(blobs, digest), data);
      return { digest: `sha256:${digest}`, size: data.length };
    };
    const layerTar = execFileSync('tar', [...TAR_FLAGS, '-C', root, '-cf', '-', '.'], {
      maxBuffer: 64 << 20,
    });
    const layer = blob(layerTar);
    const config = blob(
      Buffer.from(
        JSON.stringify({
          architecture: 'amd64',
          os: 'linux',
          config: imageConfig(opts.config),
          rootfs: { type: 'layers', diff_ids: [layer.digest] },
          history: [{ created_by: 'passfd-broker busybox image (offline)' }],
        }),
      ),
    );
    const manifest = blob(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
        }),
      ),
    );
    const tag = opts.name.slice(opts.name.lastIndexOf(':') + 1);
    fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...manifest,
            annotations: { 'io.containerd.image.name': opts.name, 'org.opencontainers.image.ref.name': tag },
          },
        ],
      }),
    );
    fs.mkdirSync(path.dirname(opts.output), { recursive: true });
    execFileSync('tar', [...TAR_FLAGS, '-C', layout, '-cf', opts.output, '.']);
    return manifest.digest;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
