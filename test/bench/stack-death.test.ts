/**
 * A bench measurement whose stack dies under it fails at once, not after its
 * --timeout: the vmm (the device, and with it every connection of the
 * session) is SIGKILLed in the middle of a stdin transfer on each IO path.
 * Before, the RPC-copy stdin measurement sat out its whole bound: `dd` kept
 * waiting on a FIFO that nobody drained any more. Real embedded stack, real
 * `dd` and `wc`, real FIFOs.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { stdinThroughput } from '../../src/bench/scenarios.js';
import { Broker } from '../../src/broker/broker.js';
import { type EmbeddedStack, startEmbeddedStack } from '../../src/broker/embedded-stack.js';
import { defaultConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/util/log.js';
import { cmdline, descendants } from '../lifecycle/support.js';
import { stopAll, tmpDir } from '../support/cli.js';

const GiB = 1024 ** 3;
/** Far longer than the test may take: reaching it is the failure. */
const BOUND_MS = 120_000;

/** The `wc -c` processes below `root`. */
const wcUnder = (root: number) => descendants(root).filter((p) => cmdline(p).startsWith('wc -c'));

let stack: EmbeddedStack | null = null;
const brokers: Broker[] = [];
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.close();
  await stack?.stop();
  stack = null;
  await stopAll(); // the measurement's directory
});

describe('bench stdin measurement when the vmm dies', () => {
  for (const io of ['passfd', 'rpc'] as const) {
    it(`${io}: fails within seconds, not at its --timeout`, async () => {
      const config = defaultConfig();
      stack = await startEmbeddedStack({ config });
      const mk = (passfd: boolean) => {
        const c = structuredClone(config);
        c.runtime.use_passfd_io = passfd;
        const b = new Broker({ hvsockPath: stack!.hvsockPath, config: c, log: createLogger('bench-test') });
        brokers.push(b);
        return b;
      };
      const ctx = {
        brokers: { passfd: mk(true), rpc: mk(false) },
        roles: { broker: 'self' as const, vmm: stack.vmm.pid!, agent: stack.agent.pid! },
        dir: tmpDir('passfd-bench-death-'),
        timeoutMs: BOUND_MS,
      };
      const measured = stdinThroughput(ctx, io, 8 * GiB);
      measured.catch(() => {});
      // The container (`wc -c`, the agent's child) is running and reading: kill the device.
      const agent = stack.agent.pid!;
      const until = Date.now() + 30_000;
      while (wcUnder(agent).length === 0) {
        if (Date.now() > until) throw new Error('no wc -c under the agent within 30 s');
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 200)); // bytes are flowing
      const t0 = Date.now();
      stack.vmm.kill('SIGKILL');
      const err = await measured.then(
        () => null,
        (e: unknown) => e as Error,
      );
      const took = Date.now() - t0;
      expect(err, 'the measurement must fail').toBeInstanceOf(Error);
      expect(err!.message).not.toMatch(/not done within/);
      expect(took).toBeLessThan(BOUND_MS / 4);
    }, 90_000);
  }
});
