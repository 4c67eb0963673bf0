// A container's extra mounts: which are made and how (plan, pure), and the
// mount points made inside a real root directory, with a symlink in the image
// that must not lead a mount outside the root.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MountError, plan, prepareMountPoints } from '../../src/agent/process/container-mounts.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const temp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'mounts-'));
  dirs.push(d);
  return d;
};

describe('plan', () => {
  it('binds (ro with its flags, rbind), tmpfs with its options, in the spec’s order', () => {
    expect(
      plan([
        {
          destination: '/data/',
          source: '/srv/d',
          type: 'bind',
          options: ['rbind', 'ro', 'nosuid', 'rprivate'],
        },
        { destination: '/etc/x', source: '/srv/x', type: '', options: ['bind', 'rw'] },
        {
          destination: '/run',
          source: 'tmpfs',
          type: 'tmpfs',
          options: ['nosuid', 'strictatime', 'mode=755'],
        },
        { destination: '/t', source: 'tmpfs', type: 'tmpfs', options: [] },
      ]),
    ).toEqual([
      { kind: 'rbind', source: '/srv/d', destination: '/data', options: 'ro,nosuid' },
      { kind: 'bind', source: '/srv/x', destination: '/etc/x', options: '' },
      { kind: 'tmpfs', source: 'tmpfs', destination: '/run', options: 'nosuid,strictatime,mode=755' },
      { kind: 'tmpfs', source: 'tmpfs', destination: '/t', options: 'defaults' },
    ]);
  });

  it('refuses, by name, a type it cannot make and paths that are not absolute or climb', () => {
    const bad = (m: Partial<Parameters<typeof plan>[0][0]>) => () =>
      plan([{ destination: '/x', source: '/s', type: 'bind', options: [], ...m }]);
    expect(bad({ type: 'sysfs', source: 'sysfs' })).toThrow('mount /x: type "sysfs" is not supported');
    expect(bad({ destination: 'x' })).toThrow(MountError);
    expect(bad({ destination: '/a/../../etc' })).toThrow('must be an absolute path without ".."');
    expect(bad({ source: 'relative' })).toThrow('bind source "relative" must be an absolute path');
  });
});

describe('prepareMountPoints', () => {
  it('makes missing directories and files inside the root, following the image’s symlinks inside it', () => {
    const root = temp();
    const host = temp();
    fs.mkdirSync(path.join(host, 'dir'));
    fs.writeFileSync(path.join(host, 'file'), 'f');
    // An image symlink pointing at an absolute path: it means <root>/elsewhere, never the host's.
    const outside = temp();
    fs.symlinkSync(outside, path.join(root, 'escape'));
    const targets = prepareMountPoints(
      root,
      plan([
        { destination: '/a/b', source: path.join(host, 'dir'), type: 'bind', options: ['rbind'] },
        { destination: '/etc/one', source: path.join(host, 'file'), type: 'bind', options: ['bind'] },
        { destination: '/escape/in', source: 'tmpfs', type: 'tmpfs', options: [] },
      ]),
    ).map((m) => m.target);
    expect(targets[0]).toBe(path.join(root, 'a/b'));
    expect(fs.statSync(targets[0]!).isDirectory()).toBe(true);
    expect(fs.statSync(path.join(root, 'etc/one')).isFile()).toBe(true);
    expect(targets[2]!.startsWith(`${root}/`)).toBe(true);
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it('names a bind source that does not exist', () => {
    const root = temp();
    expect(() =>
      prepareMountPoints(
        root,
        plan([{ destination: '/d', source: '/no/such/src', type: 'bind', options: [] }]),
      ),
    ).toThrow('mount /d: source /no/such/src: ENOENT');
  });
});
