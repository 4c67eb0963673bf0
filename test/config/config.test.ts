import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { type Config, DEFAULT_CONFIG, defaultConfig, SCHEMA, SECTIONS } from '../../src/config/schema.js';

const EXAMPLE = fileURLToPath(new URL('../../config.toml.example', import.meta.url));

const DEFAULTS: Config = {
  runtime: {
    use_passfd_io: true,
    passfd_listener_port: 1027,
    agent_port: 1024,
    agent_stream_wait_ms: 10_000,
    rpc_chunk_size: 32_768,
    shim_spare_idle_s: 0,
  },
  hypervisor: {
    hvsock_path: '',
    guest_cid: 3,
    guest: 'loopback',
    accel: 'tcg',
    default_vcpus: 1,
    default_memory: 1024,
    qemu_path: 'qemu-system-x86_64',
    kernel: '',
    kernel_modules: '',
    allowed_uids: [],
    allowed_gids: [],
    guest_connect_ports: 'any',
    max_waiting_clients: 256,
    allow_unsealed_memory: false,
  },
  agent: { dial_timeout_ms: 5_000 },
};

/** The error `parseConfig` throws for `text`, checked to be a ConfigError. */
function errorOf(text: string, source = 'config.toml'): ConfigError {
  try {
    parseConfig(text, source);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected a ConfigError for:\n${text}`);
}

describe('defaults', () => {
  it('an empty document gives every default', () => {
    expect(parseConfig('')).toEqual(DEFAULTS);
    expect(defaultConfig()).toEqual(DEFAULTS);
    expect(DEFAULT_CONFIG).toEqual(DEFAULTS);
  });

  it('empty sections give the defaults too', () => {
    expect(parseConfig('[runtime]\n[hypervisor]\n[agent]\n')).toEqual(DEFAULTS);
  });

  it('a key that is set leaves the others at their defaults', () => {
    const c = parseConfig('[runtime]\nuse_passfd_io = false\n');
    expect(c).toEqual({ ...DEFAULTS, runtime: { ...DEFAULTS.runtime, use_passfd_io: false } });
  });

  it('returns a fresh object each time; DEFAULT_CONFIG is frozen', () => {
    const a = parseConfig('');
    a.runtime.agent_port = 5;
    expect(parseConfig('').runtime.agent_port).toBe(1024);
    expect(Object.isFrozen(DEFAULT_CONFIG)).toBe(true);
    expect(Object.isFrozen(DEFAULT_CONFIG.runtime)).toBe(true);
  });

  it('list defaults are fresh arrays, not shared between configurations', () => {
    defaultConfig().hypervisor.allowed_uids.push(1000);
    expect(defaultConfig().hypervisor.allowed_uids).toEqual([]);
  });

  it('loadConfig() without a path is the defaults', () => {
    expect(loadConfig()).toEqual(DEFAULTS);
  });
});

interface KeyCase {
  key: string;
  valid: [toml: string, value: unknown][];
  invalid: [toml: string, reason: string][];
}

const PORT = 'must be an integer vsock port in 1..4294967294';
const MS = 'must be an integer number of milliseconds in 1..600000';

const KEY_CASES: KeyCase[] = [
  {
    key: 'runtime.use_passfd_io',
    valid: [
      ['true', true],
      ['false', false],
    ],
    invalid: [
      ['"true"', 'must be a boolean (true or false)'],
      ['1', 'must be a boolean (true or false)'],
    ],
  },
  {
    key: 'runtime.passfd_listener_port',
    valid: [
      ['1', 1],
      ['2048', 2048],
      ['4294967294', 4_294_967_294],
      ['0x403', 1027],
    ],
    invalid: [
      ['"abc"', PORT],
      ['"1027"', PORT],
      ['0', PORT],
      ['-1', PORT],
      ['4294967295', PORT],
      ['1027.0', PORT],
      ['99999999999999999999', PORT],
      ['1024', 'must differ from runtime.agent_port (1024), where the agent serves ttrpc'],
    ],
  },
  {
    key: 'runtime.agent_port',
    valid: [
      ['1', 1],
      ['4294967294', 4_294_967_294],
    ],
    invalid: [
      ['0', PORT],
      ['4294967295', PORT],
      ['true', PORT],
    ],
  },
  {
    key: 'runtime.agent_stream_wait_ms',
    valid: [
      ['1', 1],
      ['600000', 600_000],
      ['10_000', 10_000],
    ],
    invalid: [
      ['0', MS],
      ['600001', MS],
      ['1.5', MS],
      ['"10s"', MS],
    ],
  },
  {
    key: 'runtime.rpc_chunk_size',
    valid: [
      ['1', 1],
      ['65536', 65_536],
      ['4128768', 4_128_768],
    ],
    invalid: [
      ['0', 'must be an integer number of bytes in 1..4128768'],
      ['4128769', 'must be an integer number of bytes in 1..4128768'],
      ['4194304', 'must be an integer number of bytes in 1..4128768'],
    ],
  },
  {
    key: 'runtime.shim_spare_idle_s',
    valid: [
      ['0', 0],
      ['300', 300],
      ['86400', 86_400],
    ],
    invalid: [
      ['-1', 'must be an integer number of seconds in 0..86400'],
      ['86401', 'must be an integer number of seconds in 0..86400'],
      ['"5m"', 'must be an integer number of seconds in 0..86400'],
    ],
  },
  {
    key: 'hypervisor.hvsock_path',
    valid: [
      ['""', ''],
      ['"/run/vc/dragonball/kata.hvsock"', '/run/vc/dragonball/kata.hvsock'],
      ['"relative.sock"', 'relative.sock'],
      [`"/${'a'.repeat(106)}"`, `/${'a'.repeat(106)}`],
    ],
    invalid: [
      ['3', 'must be a string (a Unix socket path)'],
      [`"/${'a'.repeat(107)}"`, 'must be at most 107 bytes (sun_path holds 108 with the NUL), is 108'],
      // 54 two-byte characters: 108 bytes although only 55 characters long.
      [`"/${'é'.repeat(54)}"`, 'must be at most 107 bytes (sun_path holds 108 with the NUL), is 109'],
      ['"/tmp/a\\u0000b"', 'must not contain a NUL character'],
    ],
  },
  {
    key: 'hypervisor.guest_cid',
    valid: [
      ['3', 3],
      ['4294967294', 4_294_967_294],
    ],
    invalid: [
      ['2', 'must be an integer guest CID in 3..4294967294'],
      ['0', 'must be an integer guest CID in 3..4294967294'],
      ['4294967295', 'must be an integer guest CID in 3..4294967294'],
      ['"3"', 'must be an integer guest CID in 3..4294967294'],
    ],
  },
  ...(['uid', 'gid'] as const).map((what) => ({
    key: `hypervisor.allowed_${what}s`,
    valid: [
      ['[]', []],
      ['[0, 1000, 4294967294]', [0, 1000, 4_294_967_294]],
    ] as [string, unknown][],
    invalid: [
      ['1000', `must be an array of integer ${what}s in 0..4294967294`],
      ['[-1]', `must be an array of integer ${what}s in 0..4294967294`],
      ['[4294967295]', `must be an array of integer ${what}s in 0..4294967294`],
      ['["root"]', `must be an array of integer ${what}s in 0..4294967294`],
      ['[1.0]', `must be an array of integer ${what}s in 0..4294967294`],
    ] as [string, string][],
  })),
  {
    key: 'hypervisor.guest_connect_ports',
    valid: [
      ['"any"', 'any'],
      ['[]', []],
      ['[6000, 4294967294]', [6000, 4_294_967_294]],
    ],
    invalid: [
      ['"all"', 'must be "any" or an array of integer vsock ports in 0..4294967294'],
      ['6000', 'must be "any" or an array of integer vsock ports in 0..4294967294'],
      ['[4294967295]', 'must be "any" or an array of integer vsock ports in 0..4294967294'],
    ],
  },
  {
    key: 'hypervisor.guest',
    valid: [
      ['"loopback"', 'loopback'],
      ['"qemu"', 'qemu'],
    ],
    invalid: [
      ['"QEMU"', 'must be one of "loopback", "qemu"'],
      ['1', 'must be one of "loopback", "qemu"'],
    ],
  },
  {
    key: 'hypervisor.accel',
    valid: [
      ['"tcg"', 'tcg'],
      ['"kvm"', 'kvm'],
    ],
    invalid: [['"hvf"', 'must be one of "tcg", "kvm"']],
  },
  {
    key: 'hypervisor.default_vcpus',
    valid: [
      ['1', 1],
      ['64', 64],
    ],
    invalid: [
      ['0', 'must be an integer number of vCPUs in 1..64'],
      ['1.5', 'must be an integer number of vCPUs in 1..64'],
    ],
  },
  {
    key: 'hypervisor.default_memory',
    valid: [
      ['128', 128],
      ['2048', 2048],
    ],
    invalid: [['64', 'must be an integer number of MiB in 128..65536']],
  },
  {
    key: 'hypervisor.qemu_path',
    valid: [['"/opt/qemu/bin/qemu-system-x86_64"', '/opt/qemu/bin/qemu-system-x86_64']],
    invalid: [
      ['""', 'must be a non-empty string (a program name or path)'],
      ['1', 'must be a non-empty string (a program name or path)'],
    ],
  },
  {
    key: 'hypervisor.kernel',
    valid: [
      ['"/boot/vmlinuz-6.12.95+deb12-amd64"', '/boot/vmlinuz-6.12.95+deb12-amd64'],
      ['""', ''],
    ],
    invalid: [['false', 'must be a string (a vmlinuz path, or "" for the default)']],
  },
  {
    key: 'hypervisor.kernel_modules',
    valid: [['"/opt/k/lib/modules/6.12.95+deb12-amd64"', '/opt/k/lib/modules/6.12.95+deb12-amd64']],
    invalid: [['[]', 'must be a string (the kernel\'s module directory, or "" for the default)']],
  },
  {
    key: 'hypervisor.max_waiting_clients',
    valid: [
      ['1', 1],
      ['4096', 4096],
    ],
    invalid: [['0', 'must be an integer number of clients in 1..65536']],
  },
  {
    key: 'hypervisor.allow_unsealed_memory',
    valid: [['true', true]],
    invalid: [['"yes"', 'must be a boolean (true or false)']],
  },
  {
    key: 'agent.dial_timeout_ms',
    valid: [
      ['1', 1],
      ['600000', 600_000],
    ],
    invalid: [
      ['0', MS],
      ['-5000', MS],
      ['600001', MS],
    ],
  },
];

describe('each key', () => {
  it('the cases cover every key of the schema', () => {
    const all = SECTIONS.flatMap((s) => Object.keys(SCHEMA[s]).map((k) => `${s}.${k}`));
    expect(KEY_CASES.map((c) => c.key).sort()).toEqual(all.sort());
  });

  for (const { key, valid, invalid } of KEY_CASES) {
    const [section, name] = key.split('.') as [keyof Config, string];
    const doc = (value: string) => `[${section}]\n${name} = ${value}\n`;

    describe(key, () => {
      it.each(valid)('accepts %s', (toml, value) => {
        const c = parseConfig(doc(toml), 'config.toml');
        expect((c[section] as unknown as Record<string, unknown>)[name]).toEqual(value);
      });

      it.each(invalid)('rejects %s', (toml, reason) => {
        const err = errorOf(doc(toml));
        expect(err.message).toBe(`config.toml: ${key} = ${toml}: ${reason}`);
        expect(err.key).toBe(key);
        expect(err.source).toBe('config.toml');
      });
    });
  }

  it('shows long values shortened', () => {
    const err = errorOf(`[runtime]\nagent_port = "${'x'.repeat(200)}"\n`);
    expect(err.message).toBe(`config.toml: runtime.agent_port = "${'x'.repeat(158)}…: ${PORT}`);
  });

  it('shows inline tables and arrays as TOML', () => {
    expect(errorOf('[runtime]\nagent_port = [1, "a", 2.5]\n').message).toBe(
      `config.toml: runtime.agent_port = [1, "a", 2.5]: ${PORT}`,
    );
    expect(errorOf('[runtime]\nagent_port = { a = 1 }\n').message).toBe(
      `config.toml: runtime.agent_port = { a = 1 }: ${PORT}`,
    );
    expect(errorOf('[runtime]\nagent_port = inf\n').message).toBe(
      `config.toml: runtime.agent_port = inf: ${PORT}`,
    );
  });

  it('checks passfd_listener_port against a non-default agent_port', () => {
    expect(parseConfig('[runtime]\nagent_port = 1027\npassfd_listener_port = 2000\n').runtime).toMatchObject({
      agent_port: 1027,
      passfd_listener_port: 2000,
    });
    expect(errorOf('[runtime]\nagent_port = 1027\n').message).toBe(
      'config.toml: runtime.passfd_listener_port = 1027: must differ from runtime.agent_port (1027), where the agent serves ttrpc',
    );
  });

  it('reports the first problem in document order', () => {
    const err = errorOf('[runtime]\nagent_port = 0\n[agent]\ndial_timeout_ms = 0\n');
    expect(err.key).toBe('runtime.agent_port');
  });
});

describe('unknown keys and sections', () => {
  const RUNTIME_KEYS =
    'use_passfd_io, passfd_listener_port, agent_port, agent_stream_wait_ms, rpc_chunk_size, shim_spare_idle_s';
  const SECTIONS_LIST = '[runtime], [hypervisor], [agent]';

  it('rejects a misspelt key, suggests the right one and lists the valid ones', () => {
    expect(errorOf('[runtime]\nuse_passfd = false\n').message).toBe(
      `config.toml: runtime.use_passfd = false: unknown key (did you mean use_passfd_io?); valid keys in [runtime]: ${RUNTIME_KEYS}`,
    );
    expect(errorOf('[runtime]\npassfd_listner_port = 1027\n').message).toBe(
      `config.toml: runtime.passfd_listner_port = 1027: unknown key (did you mean passfd_listener_port?); valid keys in [runtime]: ${RUNTIME_KEYS}`,
    );
  });

  it('rejects an unrelated key without a suggestion', () => {
    expect(errorOf('[agent]\nsandbox_cgroup_only = []\n').message).toBe(
      'config.toml: agent.sandbox_cgroup_only = []: unknown key; valid keys in [agent]: dial_timeout_ms',
    );
  });

  it('says where a key in the wrong section belongs', () => {
    expect(errorOf('[runtime]\nguest_cid = 3\n').message).toBe(
      `config.toml: runtime.guest_cid = 3: unknown key (it belongs in [hypervisor]); valid keys in [runtime]: ${RUNTIME_KEYS}`,
    );
  });

  it('rejects a sub-table of a known section as an unknown key', () => {
    const err = errorOf('[hypervisor.dragonball]\npath = "/x"\n');
    expect(err.message).toBe(
      'config.toml: hypervisor.dragonball = { path = "/x" }: unknown key; valid keys in [hypervisor]: hvsock_path, guest_cid, guest, accel, default_vcpus, default_memory, qemu_path, kernel, kernel_modules, allowed_uids, allowed_gids, guest_connect_ports, max_waiting_clients, allow_unsealed_memory',
    );
    expect(err.key).toBe('hypervisor.dragonball');
  });

  it('rejects an unknown section and lists the valid ones', () => {
    expect(errorOf('[runtim]\nuse_passfd_io = true\n').message).toBe(
      `config.toml: [runtim]: unknown section (did you mean [runtime]?); valid sections: ${SECTIONS_LIST}`,
    );
    expect(errorOf('[factory]\n').message).toBe(
      `config.toml: [factory]: unknown section; valid sections: ${SECTIONS_LIST}`,
    );
  });

  it('rejects a key outside any section and names its section', () => {
    expect(errorOf('use_passfd_io = false\n').message).toBe(
      `config.toml: use_passfd_io = false: unknown top-level key (it belongs in [runtime]); keys go in a section: ${SECTIONS_LIST}`,
    );
  });

  it('rejects a section written as a plain value', () => {
    expect(errorOf('runtime = 1\n').message).toBe('config.toml: runtime = 1: must be a table ([runtime])');
  });

  it('does not let prototype names through', () => {
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      expect(errorOf(`[runtime]\n${name} = 1\n`).key).toBe(`runtime.${name}`);
      expect(errorOf(`[${name}]\n`).key).toBe(name);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('TOML syntax errors', () => {
  it('carry the file name, line and column, and show the line', () => {
    const err = errorOf('[runtime]\nuse_passfd_io = true\nagent_port = = 1\n');
    expect(err.message).toMatch(/^config\.toml:3:\d+: invalid TOML: \S/);
    expect(err.message).toContain('agent_port = = 1');
    expect(err.line).toBe(3);
    expect(err.key).toBeUndefined();
  });

  it('a duplicate key is a syntax error', () => {
    const err = errorOf('[runtime]\nagent_port = 1024\nagent_port = 1025\n');
    expect(err.message).toMatch(/^config\.toml:3:\d+: invalid TOML: /);
  });

  it('an unterminated string is reported at its line', () => {
    expect(errorOf('\n\n[hypervisor]\nhvsock_path = "/run/x\n').line).toBe(4);
  });

  it('use "<config>" when no source is given', () => {
    expect(() => parseConfig('[runtime')).toThrow(/^<config>:1:\d+: invalid TOML: /);
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'passfd-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a file and names it in errors', () => {
    const path = join(dir, 'config.toml');
    writeFileSync(path, '[hypervisor]\nguest_cid = 42\n');
    expect(loadConfig(path).hypervisor.guest_cid).toBe(42);
    writeFileSync(path, '[hypervisor]\nguest_cid = 2\n');
    expect(() => loadConfig(path)).toThrow(
      `${path}: hypervisor.guest_cid = 2: must be an integer guest CID in 3..4294967294`,
    );
  });

  it('a file that cannot be read is a ConfigError', () => {
    const path = join(dir, 'missing.toml');
    expect(() => loadConfig(path)).toThrow(ConfigError);
    expect(() => loadConfig(path)).toThrow(`${path}: cannot read config file: ENOENT`);
  });
});

describe('config.toml.example', () => {
  it('parses and equals the defaults', () => {
    expect(loadConfig(EXAMPLE)).toEqual(DEFAULTS);
  });

  it('sets every key explicitly, so the file cannot drift from the defaults', () => {
    const raw = parse(readFileSync(EXAMPLE, 'utf8')) as Record<string, Record<string, unknown>>;
    for (const section of SECTIONS) {
      expect(Object.keys(raw[section] ?? {}).sort(), `[${section}]`).toEqual(
        Object.keys(SCHEMA[section]).sort(),
      );
    }
  });
});
