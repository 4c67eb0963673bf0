// The warm spare's directory (spare-dir.ts): the key the shell wrapper computes too (checked
// against sha256sum itself), the records a spare writes, the claim, and removal with the
// socket (on temporary directories; the real ones are in test/containerd/shim-spare.test.ts).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseShimFlags } from '../../src/shim/flags.js';
import { identify } from '../../src/shim/process-tree.js';
import {
  liveSpare,
  readClaim,
  readSpare,
  removeSpareDir,
  spareDirFor,
  writeSpareRecord,
} from '../../src/shim/spare-dir.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-spare-'));
  dirs.push(d);
  return d;
};

describe('spare directories', () => {
  it('are keyed as the shell wrapper keys them (sha256sum of "<address>/<namespace>", 32 hex)', () => {
    const shell = execFileSync(
      'sh',
      ['-c', `printf '%s/%s' "$0" "$1" | sha256sum | cut -c1-32`, '/run/c.sock', 'k8s.io'],
      {
        encoding: 'utf8',
      },
    ).trim();
    expect(spareDirFor('/run/c.sock', 'k8s.io')).toBe(`/run/passfd-broker/spare-${shell}`);
    expect(spareDirFor('/run/c.sock', 'default')).not.toBe(spareDirFor('/run/c.sock', 'k8s.io'));
  });

  it('hold a spare that is live only while its process runs and nobody has claimed it', () => {
    const dir = tmp();
    expect(readSpare(dir)).toBeNull();
    const me = identify(process.pid)!;
    const owner = { address: '/run/c.sock', namespace: 'k8s.io' };
    writeSpareRecord(dir, owner, { process: me, address: 'unix:///run/containerd/s/passfd-spare-x' });
    expect(liveSpare(dir)).toEqual({ process: me, address: 'unix:///run/containerd/s/passfd-spare-x' });
    // Another process with this pid (a recycled one) is not the spare.
    writeSpareRecord(dir, owner, {
      process: { pid: me.pid, start: me.start + 1 },
      address: 'unix:///run/containerd/s/passfd-spare-x',
    });
    expect(readSpare(dir)).not.toBeNull();
    expect(liveSpare(dir)).toBeNull();
    writeSpareRecord(dir, owner, { process: me, address: 'unix:///run/containerd/s/passfd-spare-x' });
    fs.mkdirSync(path.join(dir, 'claimed'));
    expect(liveSpare(dir)).toBeNull();
    // The claim is complete once both of the task's files are there.
    expect(readClaim(dir)).toBeNull();
    fs.writeFileSync(path.join(dir, 'claimed', 'id'), 'task-1\n');
    expect(readClaim(dir)).toBeNull();
    fs.writeFileSync(path.join(dir, 'claimed', 'bundle'), '/run/b/task-1\n');
    expect(readClaim(dir)).toEqual({ id: 'task-1', bundle: '/run/b/task-1' });
  });

  it('are removed with the socket they record', () => {
    const dir = tmp();
    const sock = path.join(tmp(), 'spare.sock');
    fs.writeFileSync(sock, '');
    writeSpareRecord(
      dir,
      { address: '/run/c.sock', namespace: 'n' },
      { process: { pid: 1, start: 1 }, address: `unix://${sock}` },
    );
    removeSpareDir(dir);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(sock)).toBe(false);
  });
});

describe('the spare action', () => {
  it('is one of the shim’s actions (started by a shim, with no task id)', () => {
    expect(parseShimFlags(['-namespace', 'n', '-address', '/c.sock', 'spare']).action).toBe('spare');
  });
});
