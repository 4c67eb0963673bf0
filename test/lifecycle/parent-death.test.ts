/**
 * Measures what util/lifeline.ts relies on, with real processes and
 * signals: PR_SET_PDEATHSIG (set by setpriv) fires when the parent *thread*
 * that forked the child exits. A child spawned from Node's main thread
 * survives worker threads coming and going and dies within milliseconds of
 * a kill -9 of its parent; one spawned from a worker thread dies with that
 * worker (why nothing in this project spawns from a worker). And the $PPID
 * guard: a parent already gone before the prctl means the program never
 * starts.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dieWithParent } from '../../src/util/lifeline.js';
import { Captured, exited } from '../support/cli.js';
import { alive, untilGone } from './support.js';

const FIXTURE = path.resolve(import.meta.dirname, 'fixtures/parent.mjs');
const started: number[] = [];

afterAll(() => {
  for (const p of started) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

function parent(mode: 'main' | 'worker') {
  const child = spawn(process.execPath, [FIXTURE, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(child.pid!);
  return { child, out: new Captured(child.stdout) };
}

describe('parent death (PR_SET_PDEATHSIG through setpriv)', () => {
  it('a child of the main thread outlives worker threads and dies within milliseconds of a kill -9 of its parent', async () => {
    const p = parent('main');
    const sleepPid = Number((await p.out.waitFor(/"child":(\d+)/))[1]);
    started.push(sleepPid);
    await p.out.waitFor(/workersDone/);
    expect(alive(sleepPid), 'alive after 4 worker threads exited').toBe(true);
    const t0 = performance.now();
    p.child.kill('SIGKILL');
    await untilGone([sleepPid], 5000);
    const ms = performance.now() - t0;
    console.log(`child gone ${ms.toFixed(1)} ms after kill -9 of its parent`);
    expect(ms).toBeLessThan(5000);
    await exited(p.child);
  });

  it('a child spawned from a worker thread dies with that thread, though the process lives', async () => {
    const p = parent('worker');
    const sleepPid = Number((await p.out.waitFor(/"child":(\d+)/))[1]);
    started.push(sleepPid);
    await p.out.waitFor(/workerExited/);
    await untilGone([sleepPid], 5000);
    expect(alive(p.child.pid!)).toBe(true);
    p.child.kill('SIGKILL');
    await exited(p.child);
  });

  it('the program never starts when the parent is already gone (the $PPID guard)', () => {
    const cmd = dieWithParent('echo', ['ran'], 'SIGKILL');
    const args = [...cmd.args];
    args[args.indexOf('lifeline') + 1] = '1'; // "our" pid is not the parent's
    const r = spawnSync(cmd.file, args, { encoding: 'utf8' });
    expect(r.status).toBe(125);
    expect(r.stdout).toBe('');
    expect(spawnSync(cmd.file, cmd.args, { encoding: 'utf8' }).stdout).toBe('ran\n');
  });
});
