/**
 * The agent's process guardian with real process groups: when its pipe
 * closes (the agent closed it, or died) it SIGKILLs every group it was told
 * about, members that outlived their leader included, and exits. (kill -9
 * of a real agent: test/lifecycle/run-exits.test.ts.)
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { GUARDIAN_TITLE, ProcessGuardian } from '../../src/agent/guardian.js';
import { createLogger } from '../../src/util/log.js';
import { alive, cmdline, descendants, untilGone } from '../lifecycle/support.js';

/** A detached `sh` (its own group) that starts `sleep 100` in the background and prints its pid. */
async function group(
  leaderSeconds: number,
): Promise<{ leader: number; member: number; exited: Promise<void> }> {
  const sh = spawn('sh', ['-c', `sleep 100 & echo $!; exec sleep ${leaderSeconds}`], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const member = await new Promise<number>((resolve) =>
    sh.stdout.once('data', (d) => resolve(Number(String(d)))),
  );
  const exited = new Promise<void>((resolve) => sh.once('exit', () => resolve()));
  return { leader: sh.pid!, member, exited };
}

describe('ProcessGuardian', () => {
  it('kills every tracked group when its pipe closes, members that outlived the leader too', async () => {
    const g = new ProcessGuardian(createLogger('guardian-test'));
    g.start();
    const guardianPid = descendants(process.pid).find((p) => cmdline(p).includes(GUARDIAN_TITLE));
    expect(guardianPid).toBeDefined();
    const running = await group(100);
    const orphaned = await group(0.2);
    g.track(running.leader);
    g.track(orphaned.leader);
    await orphaned.exited;
    g.leaderGone(orphaned.leader); // its `sleep 100` still holds the group
    expect(alive(orphaned.member)).toBe(true);
    g.close();
    await untilGone([running.leader, running.member, orphaned.member, guardianPid!]);
  });
});
