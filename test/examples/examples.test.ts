// The examples run as documented (`node --import tsx examples/<name>.ts` from
// the checkout, where the package's own name resolves to its sources) and
// print what their comments promise. They import nothing but the package's
// public entry points: the type-check resolves 'passfd-broker' through the
// same entry files the package exports.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');

function runExample(name: string): string {
  const r = spawnSync(process.execPath, ['--import', 'tsx', `examples/${name}`], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, PASSFD_LOG: 'warn' },
  });
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('examples/', () => {
  it('import only the public entry points (passfd-broker, passfd-broker/<entry>)', () => {
    for (const f of fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.ts'))) {
      const text = fs.readFileSync(path.join(root, 'examples', f), 'utf8');
      const specifiers = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]!);
      for (const s of specifiers)
        expect(
          s.startsWith('node:') || /^passfd-broker(\/(broker|device|agent|protocol|ttrpc))?$/.test(s),
          `${f}: ${s}`,
        ).toBe(true);
    }
  });

  it('broker-library: a process through passfd on an embedded stack', () => {
    const out = runExample('broker-library.ts');
    expect(out).toContain('HELLO THROUGH PASSFD');
    expect(out).toContain('exit status 0');
  });

  it('in-process-stack: device, agent and broker in one process', () => {
    expect(runExample('in-process-stack.ts')).toContain('exit status 0 stdout "Linux\\n"');
  });

  it('protocol-codecs: the wire formats without I/O', () => {
    const out = runExample('protocol-codecs.ts');
    expect(out).toContain('CONNECT on the wire "CONNECT 1024\\n"');
    expect(out).toContain('vsock header: 44 bytes');
  });
});
