/**
 * Pins down the accept race: a request may name passfd streams the agent has
 * not accepted yet (here the agent registers each accepted stream 1.5 s
 * late); the agent waits for them, event-driven, and the run succeeds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type E2e, endStdin, finishSession, startE2e, startSession } from './support.js';

describe('passfd: streams named before the agent accepted them', () => {
  let e: E2e;
  beforeAll(async () => {
    e = await startE2e(true, ['--accept-delay-ms', '1500']);
  });
  afterAll(async () => {
    await e?.stop();
  });

  it('the run waits for the streams and succeeds (≥ 1.5 s)', async () => {
    const t0 = Date.now();
    const s = await startSession(e, ['sh', '-c', 'cat; echo err >&2; exit 4'], { keepText: true });
    await endStdin(s, [Buffer.from('in-and-out\n')]);
    expect(await s.proc.wait()).toBe(4);
    await Promise.all([s.stdout.done, s.stderr!.done]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    expect(s.stdout.text).toBe('in-and-out\n');
    expect(s.stderr!.text).toBe('err\n');
    finishSession(s);
  });
});
