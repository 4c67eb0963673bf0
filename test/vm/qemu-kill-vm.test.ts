/**
 * QEMU SIGKILLed while brokered sessions are moving data, through the
 * broker/run stack (test/vm/smoke.test.ts covers the same at the transport
 * level, with the device's own `pass` client): one VM stack for the file,
 * killed once, then a new QEMU against the same `vmm` (restartQemu), the
 * tests in order:
 * 1. warm-up on both IO paths, then the vmm's idle baseline (fds, memfd mappings);
 * 2. SIGKILL QEMU mid-transfer (stdout streaming on both paths, stdin left
 *    open): every wait() rejects within a bound, the RPC copier reports the
 *    lost connection, the passfd readers see EOF once the broker's keepers
 *    go, the vmm keeps running, logs the disconnect, unmaps guest memory and
 *    holds no fd of the killed sessions (no FIFO, no session fds: fewer fds
 *    than the idle baseline);
 * 3. a new QEMU against the same vmm serves the same Brokers again (exit
 *    code, exact bytes), and the vmm is back to its idle baseline: nothing
 *    leaked across the kill;
 * 4. the guest dies with no restart: stop() keeps the console and vmm log
 *    (both boots, the disconnects) and says where.
 */
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Session } from '../e2e/support.js';
import {
  endStdin,
  finishSession,
  IO_PATHS,
  MiB,
  Pattern,
  sha256Hex,
  startSession,
  waitUntil,
  withTimeout,
} from '../e2e/support.js';
import { fdLinks, memfdMappings, settledFdCount, useSharedVm } from './support.js';

// info: the vmm logs "QEMU connected"/"QEMU disconnected" at info.
const shared = useSharedVm({ logLevel: 'info', onVmmLog: () => {} });
const e = shared.e;
let pat: Pattern;
let idleFds = 0;
let idleMemfd = 0;

beforeAll(() => {
  pat = new Pattern(shared.dir, 'k');
});

const vmmPid = () => shared.vm.vmm.pid!;

describe.sequential('QEMU SIGKILL under the broker', () => {
  it('warm-up on both paths, then the idle baseline of the vmm', { timeout: 120_000 }, async () => {
    for (const { name } of IO_PATHS) {
      const s = await startSession(e[name], ['sh', '-c', 'cat; echo warm >&2'], { keepText: true });
      await endStdin(s, [Buffer.from('hello')]);
      expect(await s.proc.wait()).toBe(0);
      await Promise.all([s.stdout.done, s.stderr!.done]);
      expect(s.stdout.text).toBe('hello');
      expect(s.stderr!.text).toBe('warm\n');
      finishSession(s);
    }
    // Closed connections linger up to 2 s (close handshake): wait for a stable count.
    idleFds = await settledFdCount(vmmPid(), () => true, 15_000, 2500);
    idleMemfd = memfdMappings(vmmPid());
    expect(idleMemfd, 'guest memory is mapped while QEMU runs').toBeGreaterThan(0);
    expect(shared.vm.vmmLog()).toMatch(/QEMU connected \(session 1\)/);
  });

  it('SIGKILL mid-transfer: wait() rejects promptly, vmm survives, logs it, releases everything', {
    timeout: 180_000,
  }, async () => {
    const vm = shared.vm;
    const sessions: { name: string; s: Session; waited: Promise<unknown> }[] = [];
    for (const { name } of IO_PATHS) {
      // Far more than can flow before the kill: the transfer is in progress when QEMU dies.
      const s = await startSession(e[name], ['sh', '-c', pat.shell(4096)]);
      // Keep the stdin stream open (no CloseStdin): a live stdin connection dies with the guest too.
      s.stdin.write(Buffer.alloc(64 * 1024, 1));
      const waited = s.proc.wait().then(
        (st) => ({ ok: st }),
        (err: Error) => ({ error: err.message, at: Date.now() }),
      );
      sessions.push({ name, s, waited });
    }
    await Promise.all(sessions.map(({ s }) => s.stdout.atLeast(3 * MiB, 120_000)));
    const fifoPaths = sessions.flatMap(({ s }) => Object.values(s.fifos).filter(Boolean) as string[]);
    expect(
      [...fdLinks(vmmPid()).values()].filter((l) => fifoPaths.includes(l)).length,
      'the device holds the passed FIFO fds while the transfer runs',
    ).toBeGreaterThan(0);
    const bytesAtKill = sessions.map(({ s }) => s.stdout.bytes);

    const killedAt = Date.now();
    const qemu = vm.qemu;
    qemu.process.kill('SIGKILL');
    expect(await withTimeout(qemu.exited, 10_000, 'QEMU exit after SIGKILL')).toBe('SIGKILL');

    // The broker side: every wait() rejects, promptly (no hang).
    const latency: string[] = [];
    for (const { name, waited } of sessions) {
      const r = (await withTimeout(waited, 15_000, `${name}: wait() after the kill`)) as {
        ok?: number;
        error?: string;
        at?: number;
      };
      expect(r.ok, `${name}: no exit status for a process whose guest died`).toBeUndefined();
      expect(r.error, name).toBeTruthy();
      expect(r.at! - killedAt, `${name}: rejected within 10 s of the kill`).toBeLessThan(10_000);
      latency.push(`${name} ${r.at! - killedAt} ms (${r.error})`);
    }
    console.info(`wait() rejected after the QEMU SIGKILL: ${latency.join('; ')}`);
    // The data went on flowing until the kill.
    for (const [i, { s }] of sessions.entries())
      expect(s.stdout.bytes).toBeGreaterThanOrEqual(bytesAtKill[i]!);

    // Both paths: wait() failed, so the broker let go of the FIFOs (keepers, RPC copiers) and the
    // device closed its passed ends: containerd's readers see EOF instead of waiting on the broker.
    for (const { name, s } of sessions) {
      expect(
        (await withTimeout(s.stdout.done, 15_000, `${name}: stdout EOF after the kill`)).bytes,
      ).toBeGreaterThan(0);
      await withTimeout(s.stderr!.done, 15_000, `${name}: stderr EOF after the kill`);
    }

    // The vmm: alive, logged the disconnect, unmapped guest memory, holds nothing of the dead sessions.
    expect(vm.vmm.exitCode).toBeNull();
    expect(vm.vmm.signalCode).toBeNull();
    await waitUntil(
      () => /peer gone \(QEMU disconnected\): closed [1-9]\d* connection/.test(vm.vmmLog()),
      10_000,
      'vmm logs the disconnect and the connections it closed',
    );
    expect(vm.vmmLog()).toMatch(/vhost-user: QEMU disconnected/);
    await waitUntil(() => memfdMappings(vmmPid()) === 0, 10_000, 'guest memory unmapped');
    const afterKill = await settledFdCount(vmmPid(), (n) => n < idleFds, 15_000, 1000);
    expect(afterKill, `vmm fds: idle with QEMU ${idleFds}, after the kill ${afterKill}`).toBeLessThan(
      idleFds,
    );
    console.info(`vmm fds: ${idleFds} idle with QEMU 1, ${afterKill} with no QEMU after the kill`);
    const links = [...fdLinks(vmmPid()).values()];
    expect(links.filter((l) => fifoPaths.includes(l))).toEqual([]);
    expect(links.filter((l) => l.includes('memfd:'))).toEqual([]);
    for (const { s } of sessions) finishSession(s);
  });

  it('a new QEMU against the same vmm serves the same brokers again; no fd leaked', {
    timeout: 300_000,
  }, async () => {
    const vm = shared.vm;
    const bootMs = await vm.restartQemu();
    expect(vm.boots).toBe(2);
    expect(bootMs).toBeGreaterThan(0);
    expect(vm.vmmLog()).toMatch(/QEMU connected \(session 2\)/);
    const blocks = 4;
    for (const { name } of IO_PATHS) {
      const s = await startSession(e[name], ['sh', '-c', `head -c 100000 >&2; ${pat.shell(blocks)}; exit 5`]);
      const input = Buffer.alloc(100_000, 7);
      await endStdin(s, [input]);
      expect(await s.proc.wait(), name).toBe(5);
      expect(await s.stdout.done).toEqual({ bytes: pat.size(blocks), hash: pat.hash(blocks) });
      expect(await s.stderr!.done).toEqual({ bytes: input.length, hash: sha256Hex(input) });
      finishSession(s);
    }
    expect(memfdMappings(vmmPid())).toBe(idleMemfd);
    const after = await settledFdCount(vmmPid(), (n) => n === idleFds, 20_000, 1000);
    expect(after, `vmm fds idle: ${idleFds} before the kill, ${after} after the restart`).toBe(idleFds);
    expect(vm.vmm.exitCode).toBeNull();
  });

  it('the guest dies with no restart: stop() keeps the console and vmm log and says where', {
    timeout: 60_000,
  }, async () => {
    const vm = shared.vm;
    vm.qemu.process.kill('SIGKILL');
    expect(await withTimeout(vm.qemu.exited, 10_000, 'QEMU exit')).toBe('SIGKILL');
    await vm.stop();
    const kept = vm.keptLogs;
    expect(kept).toMatch(/passfd-vm-console-.*\.log$/);
    expect(fs.existsSync(vm.dir), 'the stack directory is gone').toBe(false);
    const text = fs.readFileSync(kept!, 'utf8');
    expect(text).toMatch(/===== passfd-vm: boot 1 /);
    expect(text).toMatch(/===== passfd-vm: boot 2 /);
    expect(text).toMatch(/PASSFD-VM-READY/);
    expect(text.match(/vhost-user: QEMU disconnected/g)?.length).toBe(2);
    fs.rmSync(kept!);
  });
});
