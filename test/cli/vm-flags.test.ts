/**
 * The VM flags of `run` and `bench` on the built CLI: bad values and bad
 * combinations exit non-zero with one clear reason, before anything starts
 * (no QEMU is booted: each of these exits within seconds, and the ones that
 * need --vm say so without it).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Captured, exited, spawnCli, stopAll } from '../support/cli.js';

afterAll(stopAll);

async function fails(args: string[]): Promise<string> {
  const started = Date.now();
  const child = spawnCli(args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new Captured(child.stdout);
  const err = new Captured(child.stderr);
  const { code } = await exited(child, 15_000);
  expect(code, err.text).not.toBe(0);
  expect(out.text, 'nothing on stdout').toBe('');
  // Booting even a TCG guest takes ~20 s; failing before it takes one Node start.
  expect(Date.now() - started).toBeLessThan(10_000);
  return err.text;
}

describe.each(['run', 'bench'])('%s: VM flags', (cmd) => {
  const tail = cmd === 'run' ? ['--', 'true'] : ['--no-progress'];

  it('--accel, --cpus, --memory need --vm qemu', async () => {
    expect(await fails([cmd, '--cpus', '2', ...tail])).toBe('passfd-broker: --cpus requires --vm qemu\n');
    expect(await fails([cmd, '--accel', 'tcg', '--memory', '512', ...tail])).toBe(
      'passfd-broker: --accel, --memory require --vm qemu\n',
    );
  });

  it('bad values are rejected with the option and the reason', async () => {
    const cases: [string[], RegExp][] = [
      [['--cpus', '0'], /option '--cpus <n>' argument '0' is invalid\. must be a positive integer/],
      [['--cpus', 'two'], /option '--cpus <n>' argument 'two' is invalid\. must be a positive integer/],
      [['--cpus', '1.5'], /argument '1\.5' is invalid\. must be a positive integer/],
      [['--memory', '-5'], /option '--memory <MiB>' argument '-5' is invalid\. must be a positive integer/],
      [['--memory', '64'], /argument '64' is invalid\. must be at least 128/],
      [
        ['--accel', 'xen'],
        /option '--accel <kind>' argument 'xen' is invalid\. Allowed choices are tcg, kvm\./,
      ],
      [['--accel', 'KVM'], /argument 'KVM' is invalid\. Allowed choices are tcg, kvm\./],
    ];
    for (const [flags, re] of cases)
      expect(await fails([cmd, '--vm', 'qemu', ...flags, ...tail]), flags.join(' ')).toMatch(re);
  });

  it('an unknown --vm is an error naming the choices', async () => {
    expect(await fails([cmd, '--vm', 'firecracker', ...tail])).toMatch(
      /^error: option '--vm <kind>' argument 'firecracker' is invalid\. Allowed choices are qemu\./,
    );
  });
});

describe('bench --vm qemu', () => {
  it('a bad size or count fails before the guest boots', async () => {
    expect(await fails(['bench', '--vm', 'qemu', '--bytes', 'lots', '--no-progress'])).toMatch(
      /^passfd-broker: not a byte size: "lots"/,
    );
    expect(await fails(['bench', '--vm', 'qemu', '--quick', '--reps', '0', '--no-progress'])).toBe(
      'passfd-broker: --reps must be a positive integer, not 0\n',
    );
  });

  it('--cpu-prof is refused: the agent it would profile runs inside the guest', async () => {
    expect(await fails(['bench', '--vm', 'qemu', '--cpu-prof', '/tmp/never', '--no-progress'])).toBe(
      'passfd-broker: --cpu-prof profiles the loopback stack; the guest agent runs inside QEMU (drop --vm)\n',
    );
  });
});

describe('run --vm qemu', () => {
  it('--hvsock excludes --vm', async () => {
    expect(await fails(['run', '--vm', 'qemu', '--hvsock', '/nonexistent.sock', '--', 'true'])).toBe(
      'passfd-broker: --vm and --hvsock exclude each other\n',
    );
  });
});

describe('choice flags', () => {
  it('run --io and --log-level take only their choices', async () => {
    expect(await fails(['run', '--io', 'fast', '--', 'true'])).toMatch(
      /^error: option '--io <path>' argument 'fast' is invalid\. Allowed choices are passfd, rpc\./,
    );
    expect(await fails(['--log-level', 'loud', 'run', '--', 'true'])).toMatch(
      /^error: option '--log-level <level>' argument 'loud' is invalid\. Allowed choices are error, warn, info, debug\./,
    );
  });
});
