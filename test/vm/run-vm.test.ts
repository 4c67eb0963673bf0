/**
 * `run --vm qemu` through the library: one QEMU guest (TCG) for the whole
 * file, started by startVmStack (vmm --vhost-user + the agent on AF_VSOCK in
 * the guest), with one Broker per IO path against it (./support.ts). The
 * commands run in the guest: `uname -r` is the guest kernel's release, not
 * the host's. Needs `npm run build` (the guest runs dist/'s agent). Fails,
 * never skips, when QEMU, the guest kernel or busybox are missing.
 */
import os from 'node:os';
import { beforeAll, describe, expect, it } from 'vitest';
import { findGuestKernel } from '../../src/vm/guest-kernel.js';
import { endStdin, finishSession, IO_PATHS, Pattern, startSession } from '../e2e/support.js';
import { useSharedVm } from './support.js';

const MIB = 64;
const shared = useSharedVm();
const e = shared.e;
let a: Pattern;

beforeAll(() => {
  a = new Pattern(shared.dir, 'a');
});

it('uname -r is the guest kernel release, not the host one', async () => {
  const s = await startSession(e.passfd, ['uname', '-r'], { keepText: true });
  await endStdin(s);
  expect(await s.proc.wait()).toBe(0);
  await s.stdout.done;
  const guest = findGuestKernel().version;
  expect(s.stdout.text.trim()).toBe(guest);
  if (guest !== os.release()) expect(s.stdout.text.trim()).not.toBe(os.release());
  finishSession(s);
});

it('the exit code propagates', async () => {
  const s = await startSession(e.passfd, ['sh', '-c', 'echo out; echo err >&2; exit 42'], { keepText: true });
  await endStdin(s);
  expect(await s.proc.wait()).toBe(42);
  await s.stdout.done;
  await s.stderr!.done;
  expect(s.stdout.text).toBe('out\n');
  expect(s.stderr!.text).toBe('err\n');
  finishSession(s);
});

describe.each(IO_PATHS)('in the VM over $name', ({ name }) => {
  it(`stdin: ${MIB} MiB, SHA-256 exact`, { timeout: 300_000 }, async () => {
    const s = await startSession(e[name], ['sha256sum'], { keepText: true });
    const wrote = await endStdin(s, a.chunks(MIB));
    expect(wrote.bytes).toBe(a.size(MIB));
    expect(await s.proc.wait()).toBe(0);
    await s.stdout.done;
    expect(s.stdout.text).toBe(`${a.hash(MIB)}  -\n`);
    finishSession(s);
  });

  it(`stdout: ${MIB} MiB, SHA-256 exact`, { timeout: 300_000 }, async () => {
    const s = await startSession(e[name], ['sh', '-c', a.shell(MIB)]);
    await endStdin(s);
    expect(await s.proc.wait()).toBe(0);
    const out = await s.stdout.done;
    expect(out.bytes).toBe(a.size(MIB));
    expect(out.hash).toBe(a.hash(MIB));
    expect((await s.stderr!.done).bytes).toBe(0);
    finishSession(s);
  });
});
