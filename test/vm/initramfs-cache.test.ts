/**
 * The initramfs cache (src/vm/initramfs.ts), with the machine's real guest
 * kernel modules and busybox (a copy of it where the test changes its mtime),
 * in private cache directories. No VM is booted here.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findGuestKernel, type GuestKernel, guestModules } from '../../src/vm/guest-kernel.js';
import {
  buildInitramfs,
  CACHE_MAX_AGE_DAYS,
  cachedInitramfs,
  INITRAMFS_BUILDER_VERSION,
  initramfsCacheDirs,
  initramfsCacheKey,
  initScript,
  usableCacheDir,
} from '../../src/vm/initramfs.js';
import { tmpDir } from '../support/cli.js';

/** name → data of a gzip'd cpio "newc" archive. */
function readInitramfs(file: string): Map<string, Buffer> {
  const buf = zlib.gunzipSync(fs.readFileSync(file));
  const out = new Map<string, Buffer>();
  let off = 0;
  const pad4 = (n: number) => (n + 3) & ~3;
  for (let i = 0; i < 10_000; i++) {
    expect(buf.subarray(off, off + 6).toString('ascii')).toBe('070701');
    const field = (k: number) =>
      Number.parseInt(buf.subarray(off + 6 + k * 8, off + 14 + k * 8).toString(), 16);
    const size = field(6);
    const nameLen = field(11);
    const name = buf.subarray(off + 110, off + 110 + nameLen - 1).toString();
    const dataAt = pad4(off + 110 + nameLen);
    if (name === 'TRAILER!!!') return out;
    out.set(name, buf.subarray(dataAt, dataAt + size));
    off = pad4(dataAt + size);
  }
  throw new Error('no cpio trailer');
}

let dir: string;
let kernel: GuestKernel;
let busybox: string;
/** The modules this kernel's guest loads, in order. */
let GUEST_MODULES: string[];

beforeAll(() => {
  dir = tmpDir('passfd-initramfs-cache-');
  kernel = findGuestKernel();
  GUEST_MODULES = guestModules(kernel).order;
  busybox = path.join(dir, 'busybox');
  fs.copyFileSync('/bin/busybox', busybox);
  // A whole-second mtime: utimes from JavaScript can restore it exactly (the key uses nanoseconds).
  const t = new Date(Math.floor(Date.now() / 1000) * 1000 - 3600_000);
  fs.utimesSync(busybox, t, t);
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('cache directory', () => {
  it('XDG_CACHE_HOME (absolute only), else ~/.cache, then os.tmpdir()', () => {
    const tmpFallback = path.join(os.tmpdir(), `passfd-broker-cache-${process.getuid!()}`);
    expect(initramfsCacheDirs({ XDG_CACHE_HOME: '/x/cache' }, '/home/u')).toEqual([
      '/x/cache/passfd-broker',
      tmpFallback,
    ]);
    expect(initramfsCacheDirs({ XDG_CACHE_HOME: 'relative/cache' }, '/home/u')).toEqual([
      '/home/u/.cache/passfd-broker',
      tmpFallback,
    ]);
    expect(initramfsCacheDirs({}, '/home/u')).toEqual(['/home/u/.cache/passfd-broker', tmpFallback]);
    expect(initramfsCacheDirs({}, '')).toEqual([tmpFallback]);
  });

  it('usable: a directory of ours (created if needed); not a symlink, not below a file', () => {
    const d = path.join(dir, 'dirs', 'a', 'b');
    expect(usableCacheDir(d)).toBe(true);
    expect(fs.statSync(d).isDirectory()).toBe(true);
    const file = path.join(dir, 'dirs', 'file');
    fs.writeFileSync(file, 'x');
    expect(usableCacheDir(path.join(file, 'sub'))).toBe(false);
    const link = path.join(dir, 'dirs', 'link');
    fs.symlinkSync(d, link);
    expect(usableCacheDir(link)).toBe(false);
  });
});

describe('cache key', () => {
  const inputs = () => ({ kernel, busybox, modules: GUEST_MODULES });

  it('is stable for the same inputs', () => {
    expect(initramfsCacheKey(inputs())).toBe(initramfsCacheKey(inputs()));
    expect(initramfsCacheKey(inputs())).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes with the busybox mtime or size, the kernel, the init script, the builder version', () => {
    const k0 = initramfsCacheKey(inputs());
    const keys = new Set([k0]);
    const t = fs.statSync(busybox).mtime;
    fs.utimesSync(busybox, t, new Date(t.getTime() + 10_000));
    keys.add(initramfsCacheKey(inputs()));
    fs.utimesSync(busybox, t, t);
    expect(initramfsCacheKey(inputs())).toBe(k0);
    const grown = path.join(dir, 'busybox-grown');
    fs.copyFileSync(busybox, grown);
    fs.appendFileSync(grown, '\0');
    fs.utimesSync(grown, t, t);
    keys.add(initramfsCacheKey({ ...inputs(), busybox: grown }));
    keys.add(initramfsCacheKey({ ...inputs(), kernel: { ...kernel, version: `${kernel.version}-other` } }));
    keys.add(initramfsCacheKey({ ...inputs(), kernel: { ...kernel, vmlinuz: busybox } }));
    // Another module list is another /init.
    const fewer = GUEST_MODULES.slice(0, -1);
    expect(initScript(fewer)).not.toBe(initScript(GUEST_MODULES));
    keys.add(initramfsCacheKey({ ...inputs(), modules: fewer }));
    keys.add(initramfsCacheKey(inputs(), INITRAMFS_BUILDER_VERSION + 1));
    expect(keys.size).toBe(7);
  });
});

describe('cachedInitramfs', () => {
  it('builds once, then reuses the same file; the archive is the one buildInitramfs makes', () => {
    const cacheDir = path.join(dir, 'c1');
    const fallbackOutput = path.join(dir, 'fallback-1.gz');
    const first = cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput });
    expect(first.hit).toBe(false);
    expect(first.cached).toBe(true);
    expect(path.dirname(first.path)).toBe(cacheDir);
    expect(path.basename(first.path)).toBe(`initramfs-${kernel.version}-${first.key.slice(0, 24)}.cpio.gz`);
    expect(fs.existsSync(fallbackOutput)).toBe(false);
    const st1 = fs.statSync(first.path);

    const second = cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput });
    expect(second).toMatchObject({ hit: true, cached: true, path: first.path, key: first.key });
    expect(fs.statSync(second.path).ino).toBe(st1.ino);
    expect(fs.readdirSync(cacheDir)).toEqual([path.basename(first.path)]);

    const files = readInitramfs(first.path);
    expect(files.get('init')?.toString()).toBe(initScript(GUEST_MODULES));
    expect(files.get('bin/busybox')?.equals(fs.readFileSync(busybox))).toBe(true);
    for (const m of GUEST_MODULES) expect(files.get(`lib/modules/${m}.ko`)?.length, m).toBeGreaterThan(0);
    const fresh = path.join(dir, 'fresh.gz');
    buildInitramfs({ output: fresh, kernel, busybox });
    expect([...readInitramfs(fresh).keys()]).toEqual([...files.keys()]);
  });

  it('a changed input is a new entry; the old one stays until it ages out', () => {
    const cacheDir = path.join(dir, 'c2');
    const fallbackOutput = path.join(dir, 'fallback-2.gz');
    const a = cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput });
    const t = fs.statSync(busybox).mtime;
    fs.utimesSync(busybox, t, new Date(t.getTime() + 60_000));
    try {
      const b = cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput });
      expect(b.hit).toBe(false);
      expect(b.key).not.toBe(a.key);
      expect(b.path).not.toBe(a.path);
      expect(fs.readdirSync(cacheDir).sort()).toEqual([path.basename(a.path), path.basename(b.path)].sort());
    } finally {
      fs.utimesSync(busybox, t, t);
    }
    expect(cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput })).toMatchObject({
      hit: true,
      path: a.path,
    });
  });

  it('prunes entries unused for the max age and stale temporary files after a build', () => {
    const cacheDir = path.join(dir, 'c3');
    fs.mkdirSync(cacheDir);
    const old = new Date(Date.now() - (CACHE_MAX_AGE_DAYS + 1) * 86400_000);
    const hourAgo = new Date(Date.now() - 2 * 3600_000);
    const files = {
      oldEntry: 'initramfs-0.0-aaaaaaaaaaaaaaaaaaaaaaaa.cpio.gz',
      recentEntry: 'initramfs-0.0-bbbbbbbbbbbbbbbbbbbbbbbb.cpio.gz',
      oldTmp: '.initramfs-0.0-cccc.cpio.gz.1.ab.tmp',
      recentTmp: '.initramfs-0.0-dddd.cpio.gz.2.cd.tmp',
      unrelated: 'something-else',
    };
    for (const f of Object.values(files)) fs.writeFileSync(path.join(cacheDir, f), 'x');
    fs.utimesSync(path.join(cacheDir, files.oldEntry), old, old);
    fs.utimesSync(path.join(cacheDir, files.oldTmp), hourAgo, hourAgo);
    fs.utimesSync(path.join(cacheDir, files.unrelated), old, old);
    const r = cachedInitramfs({ kernel, busybox, cacheDir, fallbackOutput: path.join(dir, 'fallback-3.gz') });
    expect(fs.readdirSync(cacheDir).sort()).toEqual(
      [path.basename(r.path), files.recentEntry, files.recentTmp, files.unrelated].sort(),
    );
  });

  it('no usable cache directory: builds at the fallback path, uncached', () => {
    const file = path.join(dir, 'not-a-dir');
    fs.writeFileSync(file, 'x');
    const fallbackOutput = path.join(dir, 'fallback-4.gz');
    const r = cachedInitramfs({ kernel, busybox, cacheDir: path.join(file, 'cache'), fallbackOutput });
    expect(r).toMatchObject({ path: fallbackOutput, hit: false, cached: false });
    expect(readInitramfs(fallbackOutput).get('init')?.toString()).toBe(initScript(GUEST_MODULES));
  });

  it('concurrent runs on an empty cache all get one complete entry (tmp + rename)', {
    timeout: 60_000,
  }, async () => {
    const cacheDir = path.join(dir, 'c5');
    const script = path.join(dir, 'concurrent.ts');
    const src = path.resolve(import.meta.dirname, '../../src/vm/initramfs.ts');
    const kernelSrc = path.resolve(import.meta.dirname, '../../src/vm/guest-kernel.ts');
    fs.writeFileSync(
      script,
      `import { cachedInitramfs } from ${JSON.stringify(src)};\n` +
        `import { findGuestKernel } from ${JSON.stringify(kernelSrc)};\n` +
        `const r = cachedInitramfs({ kernel: findGuestKernel(), busybox: ${JSON.stringify(busybox)}, ` +
        `cacheDir: ${JSON.stringify(cacheDir)}, fallbackOutput: '/nonexistent/fallback' });\n` +
        'process.stdout.write(JSON.stringify(r));\n',
    );
    const runs = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
            const c = spawn(process.execPath, ['--import', 'tsx', script], {
              stdio: ['ignore', 'pipe', 'pipe'],
            });
            let out = '';
            let err = '';
            c.stdout.on('data', (d: Buffer) => {
              out += d;
            });
            c.stderr.on('data', (d: Buffer) => {
              err += d;
            });
            const t = setTimeout(() => c.kill('SIGKILL'), 50_000);
            c.on('close', (code) => {
              clearTimeout(t);
              resolve({ code, out, err });
            });
          }),
      ),
    );
    for (const r of runs) expect(r.code, r.err).toBe(0);
    const results = runs.map((r) => JSON.parse(r.out) as { path: string; key: string; cached: boolean });
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    expect(results.every((r) => r.cached)).toBe(true);
    expect(fs.readdirSync(cacheDir)).toEqual([path.basename(results[0]!.path)]);
    const files = readInitramfs(results[0]!.path);
    expect(files.get('init')?.toString()).toBe(initScript(GUEST_MODULES));
    expect(files.get('bin/busybox')?.equals(fs.readFileSync(busybox))).toBe(true);
  });

  it('the default location is reused across calls (what startVmStack uses)', () => {
    const fallbackOutput = path.join(dir, 'fallback-6.gz');
    cachedInitramfs({ kernel, fallbackOutput });
    const again = cachedInitramfs({ kernel, fallbackOutput });
    expect(again.hit).toBe(true);
    expect(again.cached).toBe(true);
    const firstUsable = initramfsCacheDirs().find(usableCacheDir);
    expect(path.dirname(again.path)).toBe(firstUsable);
  });
});
