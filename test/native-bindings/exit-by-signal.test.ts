/**
 * exitBySignal: a Node process dies of the signal itself, as a plain program
 * would (a parent sees "killed by SIGPIPE", a shell 141), although Node
 * ignores SIGPIPE.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const BINDINGS = path.resolve(import.meta.dirname, '../../dist/native-bindings/index.js');

function dieOf(sig: number) {
  return spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(BINDINGS)}); m.exitBySignal(${sig});`,
    ],
    { encoding: 'utf8' },
  );
}

describe('exitBySignal', () => {
  it('dies of SIGPIPE, which Node otherwise ignores', () => {
    const r = dieOf(13);
    expect(r.signal).toBe('SIGPIPE');
    expect(r.stderr).toBe('');
  });

  it('dies of SIGTERM', () => {
    expect(dieOf(15).signal).toBe('SIGTERM');
  });

  it('exits 128+n for a signal whose default action does not terminate (SIGCHLD)', () => {
    const r = dieOf(17);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(145);
  });
});
