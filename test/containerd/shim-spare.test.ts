/**
 * Warm spare shims (`[runtime] shim_spare_idle_s`, src/shim/spare.ts) with
 * the real containerd and ctr: a shim that served a task leaves a spare,
 * the next `ctr run`'s `start` takes it (the wrapper claims it without any
 * Node start-up) and the spare serves that task completely, its log lines in
 * containerd's log, and leaves a successor; an idle spare goes after its
 * time and takes its directory and socket with it; concurrent starts share
 * one spare and the rest start their own shims; a SIGKILLed spare is passed
 * over and replaced. Off by default: the other suites run without spares.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isAlive } from '../../src/shim/process-tree.js';
import { liveSpare, readSpare, removeSpareDir, spareDirFor } from '../../src/shim/spare-dir.js';
import { waitFor } from '../support/wait.js';
import { useCtrSuite } from './support.js';

const suite = useCtrSuite({
  spare: '[runtime]\nshim_spare_idle_s = 60\n',
  brief: '[runtime]\nshim_spare_idle_s = 2\n',
});

const dir = () => spareDirFor(suite.d.address, suite.d.namespace);

/** Ends the spare that waits (a test's last one), so the leak check sees nothing of it. */
afterEach(async () => {
  const s = readSpare(dir());
  if (s) {
    try {
      process.kill(s.process.pid, 'SIGTERM');
    } catch {
      // gone already
    }
    await waitFor('the spare to end', () => !isAlive(s.process), 10_000);
  }
  // A spare killed before its handlers were in place leaves its directory and socket.
  removeSpareDir(dir());
});

describe('a warm spare shim', () => {
  it('takes the next container: the task runs in it, its log lines reach containerd, and it leaves a successor', async () => {
    const first = suite.id('spare');
    const r1 = await suite.run('spare', first, ['echo', 'one']);
    expect(r1, r1.stderr).toMatchObject({ code: 0, stdout: 'one\n' });
    const spare = await waitFor('a spare', () => liveSpare(dir()));
    const second = suite.id('spare');
    const r = await suite.run('spare', second, ['sh', '-c', 'echo two; echo err >&2; exit 3']);
    expect(r).toMatchObject({ code: 3, stdout: 'two\n', stderr: 'err\n' });
    // That task's shim was the spare: it said so in containerd's log, under the task's name.
    expect(suite.d.log()).toContain(
      `passfd-shim[${suite.d.namespace}/${second}]: a warm spare (pid ${spare.process.pid}) takes task ${second}`,
    );
    const next = await waitFor('a successor', () => liveSpare(dir()));
    expect(next.process.pid).not.toBe(spare.process.pid);
    expect(fs.existsSync(next.address.slice('unix://'.length))).toBe(true);
  });

  it('waits at a lower priority and takes its shim’s back with a task', async () => {
    const nice = (pid: number) =>
      Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
    expect(await suite.run('spare', suite.id('warm'), ['true'])).toMatchObject({ code: 0 });
    const spare = await waitFor('a spare', () => liveSpare(dir()));
    expect(nice(spare.process.pid)).toBe(10);
    const id = suite.id('detached');
    const r = await suite.d.ctr(suite.runArgs('spare', id, ['sleep', '30'], ['-d']), { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    await suite.waitTask(id, 'RUNNING');
    expect(suite.d.log()).toContain(`takes task ${id}`);
    expect(nice(spare.process.pid)).toBe(0);
    await suite.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
    await suite.waitTask(id, 'STOPPED');
    expect((await suite.ctr(['task', 'rm', id])).code).toBe(0);
    expect((await suite.ctr(['container', 'rm', id])).code).toBe(0);
  });

  it('goes after its idle time, with its directory and socket', async () => {
    expect(await suite.run('brief', suite.id('idle'), ['true'])).toMatchObject({ code: 0 });
    const spare = await waitFor('a spare', () => liveSpare(dir()));
    const socket = spare.address.slice('unix://'.length);
    await waitFor('the idle spare to exit', () => !fs.existsSync(dir()), 10_000);
    await waitFor('its socket to go', () => !fs.existsSync(socket), 2_000);
    expect(isAlive(spare.process)).toBe(false);
  });

  it('serves one of several concurrent starts; the others start their own shims', async () => {
    expect(await suite.run('spare', suite.id('warm'), ['true'])).toMatchObject({ code: 0 });
    await waitFor('a spare', () => liveSpare(dir()));
    const ids = [0, 1, 2].map(() => suite.id('race'));
    const results = await Promise.all(ids.map((id) => suite.run('spare', id, ['echo', id])));
    for (const [i, r] of results.entries()) expect(r).toMatchObject({ code: 0, stdout: `${ids[i]}\n` });
    const took = ids.filter((id) => suite.d.log().includes(`takes task ${id}`));
    expect(took).toHaveLength(1);
  });

  it('is passed over when it was SIGKILLed, and replaced', async () => {
    expect(await suite.run('spare', suite.id('warm'), ['true'])).toMatchObject({ code: 0 });
    const dead = await waitFor('a spare', () => liveSpare(dir()));
    process.kill(dead.process.pid, 'SIGKILL');
    await waitFor('it to die', () => !isAlive(dead.process));
    const id = suite.id('after');
    const r = await suite.run('spare', id, ['echo', 'fine']);
    expect(r, r.stderr).toMatchObject({ code: 0, stdout: 'fine\n' });
    expect(suite.d.log()).not.toContain(`takes task ${id}`);
    const next = await waitFor('a new spare', () => liveSpare(dir()));
    expect(next.process.pid).not.toBe(dead.process.pid);
    // The dead one's socket went with its directory.
    expect(fs.existsSync(dead.address.slice('unix://'.length))).toBe(false);
    expect(path.dirname(next.address.slice('unix://'.length))).toBe('/run/containerd/s');
  });
});
