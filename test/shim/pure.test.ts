/**
 * The shim's pure pieces: containerd's command line (Go flag rules), mount
 * options split like containerd's mount package, the OCI spec fields the
 * shim reads, the socket address, mountinfo parsing, the type URLs and the
 * runtime options' ConfigPath, and the configuration file order.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { MS } from '../../native-bindings/mount.js';
import {
  packTypeurl,
  TaskExitSchema,
  taskMethods,
  unpackConfigPath,
} from '../../src/protocol/containerd-api.js';
import { OptionsSchema } from '../../src/protocol/gen/containerd/runtimeoptions/v1/api_pb.js';
import { configPathFromOptions } from '../../src/protocol/runtime-options.js';
import { socketPathFor, socketPathOf } from '../../src/shim/address.js';
import { configSource } from '../../src/shim/config.js';
import { FlagError, parseShimFlags } from '../../src/shim/flags.js';
import { parseMountOptions } from '../../src/shim/mount-options.js';
import { parseProcess, parseSpec, SpecError } from '../../src/shim/oci-spec.js';
import { mountsUnder, parseMountinfo } from '../../src/util/mountinfo.js';

describe('shim flags', () => {
  it('reads containerd’s start and delete command lines', () => {
    expect(
      parseShimFlags([
        '-namespace',
        'k8s.io',
        '-address',
        '/run/c.sock',
        '-publish-binary',
        '/usr/bin/containerd',
        '-id',
        'abc',
        '-debug',
        'start',
      ]),
    ).toEqual({
      namespace: 'k8s.io',
      id: 'abc',
      address: '/run/c.sock',
      publishBinary: '/usr/bin/containerd',
      bundle: '',
      socket: '',
      debug: true,
      version: false,
      action: 'start',
    });
    const d = parseShimFlags(['--namespace=n', '-id=x', '-bundle', '/b', 'delete']);
    expect(d).toMatchObject({ namespace: 'n', id: 'x', bundle: '/b', action: 'delete' });
    expect(parseShimFlags(['-namespace', 'n', '-id', 'x']).action).toBe('serve');
    expect(parseShimFlags(['-debug=false', '-v']).debug).toBe(false);
  });

  it('rejects what Go’s flag package rejects', () => {
    expect(() => parseShimFlags(['-nope', 'x'])).toThrow(
      new FlagError('flag provided but not defined: -nope'),
    );
    expect(() => parseShimFlags(['-id'])).toThrow('flag needs an argument: -id');
    expect(() => parseShimFlags(['-debug=maybe'])).toThrow('invalid boolean value');
    expect(() => parseShimFlags(['-id', 'x', 'restart'])).toThrow('unknown action "restart"');
  });
});

describe('mount options', () => {
  it('splits flags, propagation and filesystem data as containerd does', () => {
    expect(parseMountOptions(['index=off', 'workdir=/w', 'upperdir=/u', 'lowerdir=/l1:/l2'])).toEqual({
      flags: 0,
      propagation: 0,
      data: 'index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2',
    });
    expect(parseMountOptions(['rbind', 'ro', 'nosuid', 'rprivate'])).toEqual({
      flags: MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID,
      propagation: MS.PRIVATE | MS.REC,
      data: '',
    });
    // A later negation clears an earlier flag.
    expect(parseMountOptions(['ro', 'rw']).flags).toBe(0);
    expect(parseMountOptions(['noexec', 'exec', 'defaults']).flags).toBe(0);
  });
});

describe('OCI spec', () => {
  it('reads the process, root, hostname and annotations', () => {
    const spec = parseSpec(
      JSON.stringify({
        process: {
          args: ['sh'],
          env: ['A=1'],
          cwd: '/w',
          terminal: true,
          user: { uid: 5, gid: 6, additionalGids: [7] },
          consoleSize: { height: 24, width: 80 },
        },
        root: { path: 'rootfs', readonly: true },
        hostname: 'box',
        annotations: { a: 'b', n: 1 },
      }),
    );
    expect(spec).toEqual({
      process: {
        args: ['sh'],
        env: ['A=1'],
        cwd: '/w',
        terminal: true,
        user: { uid: 5, gid: 6, additionalGids: [7] },
        consoleSize: { height: 24, width: 80 },
      },
      mounts: [],
      rootPath: 'rootfs',
      readonlyRoot: true,
      hostname: 'box',
      annotations: { a: 'b' },
      namespaces: [],
    });
    expect(parseProcess({ args: ['x'] })).toEqual({
      args: ['x'],
      env: [],
      cwd: '/',
      terminal: false,
      user: { uid: 0, gid: 0, additionalGids: [] },
    });
  });

  it('names what is wrong', () => {
    expect(() => parseSpec('{')).toThrow(SpecError);
    expect(() => parseSpec('{}')).toThrow('process is missing or not an object');
    expect(() => parseProcess({ args: [] })).toThrow('process.args must not be empty');
    expect(() => parseProcess({ args: ['x'], user: { uid: -1 } })).toThrow(
      'process.user.uid must be an unsigned 32-bit integer',
    );
    expect(() => parseProcess({ args: ['x'], env: 'A=1' })).toThrow('process.env must be a list of strings');
  });
});

describe('socket address', () => {
  it('is containerd’s: /run/containerd/s/<sha256 of address/namespace/id>', () => {
    // sha256 of "/run/containerd/containerd.sock/default/c1" (containerd: filepath.Join of the three).
    expect(socketPathFor('/run/containerd/containerd.sock', 'default', 'c1')).toBe(
      '/run/containerd/s/d25aa4ef11a84e954e74a5bcff06557d0b6ea8d0c00243896f29826694bbd888',
    );
    expect(socketPathFor('/a//b/', 'ns', 'id')).toBe(socketPathFor('/a/b', 'ns', 'id'));
    expect(socketPathOf('unix:///run/x')).toBe('/run/x');
    expect(socketPathOf('abstract-name')).toBe('@abstract-name');
  });
});

describe('mountinfo', () => {
  it('parses lines, unescapes paths, lists mounts under a directory deepest first', () => {
    const text = [
      '22 1 0:21 / /proc rw,nosuid - proc proc rw',
      '100 22 0:50 / /tmp/b/rootfs rw - overlay overlay rw,lowerdir=/l',
      '101 100 0:51 / /tmp/b/rootfs/with\\040space rw shared:1 - tmpfs tmpfs rw',
      'garbage',
    ].join('\n');
    const m = parseMountinfo(text);
    expect(m.map((e) => e.mountPoint)).toEqual(['/proc', '/tmp/b/rootfs', '/tmp/b/rootfs/with space']);
    expect(m[1]).toMatchObject({ fstype: 'overlay', source: 'overlay' });
    expect(mountsUnder('/tmp/b', m)).toEqual(['/tmp/b/rootfs/with space', '/tmp/b/rootfs']);
    expect(mountsUnder('/tmp/b/root', m)).toEqual([]);
  });
});

describe('containerd types', () => {
  it('events carry the bare proto name as type URL; runtime options give the ConfigPath', () => {
    const any = packTypeurl(TaskExitSchema, create(TaskExitSchema, { containerId: 'c', exitStatus: 3 }));
    expect(any.typeUrl).toBe('containerd.events.TaskExit');
    const opts = (typeUrl: string, configPath: string) =>
      create(AnySchema, { typeUrl, value: toBinary(OptionsSchema, create(OptionsSchema, { configPath })) });
    expect(unpackConfigPath(opts('runtimeoptions.v1.Options', '/etc/x.toml'))).toBe('/etc/x.toml');
    expect(unpackConfigPath(opts('cri.runtimeoptions.v1.Options', '/etc/y.toml'))).toBe('/etc/y.toml');
    expect(unpackConfigPath(opts('types.example.com/runtimeoptions.v1.Options', '/z'))).toBe('/z');
    expect(unpackConfigPath(opts('io.containerd.runc.v1.Options', '/no'))).toBeUndefined();
    expect(unpackConfigPath(opts('runtimeoptions.v1.Options', ''))).toBeUndefined();
    expect(unpackConfigPath(undefined)).toBeUndefined();
    // start reads the same from the serialized Any on its stdin, at the wire level.
    for (const [url, p, want] of [
      ['runtimeoptions.v1.Options', '/etc/x.toml', '/etc/x.toml'],
      ['cri.runtimeoptions.v1.Options', '/y', '/y'],
      ['io.containerd.runc.v1.Options', '/no', undefined],
      ['runtimeoptions.v1.Options', '', undefined],
    ] as const) {
      expect(configPathFromOptions(toBinary(AnySchema, opts(url, p)))).toBe(want);
    }
    expect(configPathFromOptions(new Uint8Array())).toBeUndefined();
    expect(taskMethods.Create).toMatchObject({ service: 'containerd.task.v2.Task', name: 'Create' });
  });
});

describe('configuration file order', () => {
  it('runtime options, then $PASSFD_BROKER_CONFIG, then the system file, then defaults', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-cfg-'));
    const system = path.join(dir, 'system.toml');
    try {
      expect(configSource('/opt.toml', { PASSFD_BROKER_CONFIG: '/env.toml' }, system)).toEqual({
        path: '/opt.toml',
        source: 'runtime options',
      });
      expect(configSource(undefined, { PASSFD_BROKER_CONFIG: '/env.toml' }, system)).toEqual({
        path: '/env.toml',
        source: '$PASSFD_BROKER_CONFIG',
      });
      expect(configSource(undefined, {}, system)).toEqual({ path: undefined, source: 'defaults' });
      fs.writeFileSync(system, '');
      expect(configSource(undefined, {}, system)).toEqual({ path: system, source: 'system' });
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
});
