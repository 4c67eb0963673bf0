/**
 * A VM stack that cannot start keeps its logs: the guest's agent is given an
 * option it does not know, so it exits at once, /init prints PASSFD-VM-EXIT
 * and powers off, and startVmStack fails. The error must show the console
 * tail and name a file outside the (removed) stack directory holding the
 * whole guest console and the vmm log. (stop()'s keeping of the logs when the
 * guest died by itself is checked at the end of qemu-kill-vm.test.ts.)
 */
import fs from 'node:fs';
import { expect, it } from 'vitest';
import { startVmStack } from '../../src/vm/vm-stack.js';
import { e2eConfig } from '../e2e/support.js';
import { VM_BOOT_TIMEOUT_MS } from './support.js';

it('a failed start keeps the guest console and the vmm log, and the error says where', {
  timeout: VM_BOOT_TIMEOUT_MS,
}, async () => {
  const result = await startVmStack({
    config: e2eConfig(true),
    agentArgs: ['--no-such-option'],
    startTimeoutMs: VM_BOOT_TIMEOUT_MS - 30_000,
    onVmmLog: () => {},
  }).then(
    async (vm) => {
      await vm.stop();
      return null;
    },
    (err: Error) => err,
  );
  expect(result, 'the stack must not start with a failing agent').toBeInstanceOf(Error);
  const message = result!.message;
  expect(message).toMatch(/QEMU exited \(0\) before the agent was ready/);
  expect(message).toMatch(/console tail:/);
  const m = message.match(/guest console and vmm log kept at (\S+)\)$/);
  expect(m, message).not.toBeNull();
  const kept = m![1]!;
  expect(kept).toMatch(/passfd-vm-console-.*\.log$/);
  const text = fs.readFileSync(kept, 'utf8');
  expect(text).toMatch(/===== guest console \(/);
  expect(text).toMatch(/===== passfd-vm: boot 1 /);
  expect(text).toMatch(/PASSFD-VM-READY/);
  expect(text).toMatch(/--no-such-option/);
  expect(text).toMatch(/PASSFD-VM-EXIT [1-9]/);
  expect(text).toMatch(/===== vmm log \(/);
  expect(fs.statSync(kept).mode & 0o777).toBe(0o600);
  fs.rmSync(kept);
});
