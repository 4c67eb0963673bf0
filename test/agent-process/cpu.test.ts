/**
 * The agent stays out of the data path: its CPU cost for a transfer does not
 * grow with the bytes the way a copy through JavaScript does.
 *
 * Why it holds by construction: the stream path moves bytes with splice(2)
 * only (splice-pump.ts has no buffer, no read, no write), so the agent's cost
 * is one syscall per wake-up, whatever each moves. This test measures it: the
 * same 256 MiB from a child's stdout into a socket, once through the
 * launcher's splice pump and once through a plain Node stream copy
 * (`pipe.pipe(socket)`, what an agent without splice would do), in this file's
 * own worker so no other test's garbage is collected on the clock. The
 * socket's far end is read by `wc -c` in another process, so nothing in this
 * process reads the data.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { closeQuietly, makePipe, setPipeSize } from '../../native-bindings/index.js';
import { spawnContainerProcess } from '../../src/agent/process/index.js';
import { streamPair } from './helpers.js';

const SIZE = 256 << 20;
const producer = ['dd', 'if=/dev/zero', 'bs=1M', `count=${SIZE >> 20}`, 'status=none'];

/** `wc -c` on the test end of a stream; resolves with the count. */
function counter(testEnd: number): Promise<number> {
  const wc = spawn('wc', ['-c'], { stdio: [testEnd, 'pipe', 'inherit'] });
  closeQuietly(testEnd);
  let out = '';
  wc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return new Promise((resolve) => wc.on('close', () => resolve(Number(out.trim()))));
}

interface Cost {
  user: number;
  system: number;
  wall: number;
}

async function measure(transfer: () => Promise<void>): Promise<Cost> {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await transfer();
  const cpu = process.cpuUsage(cpu0);
  return { user: cpu.user / 1e6, system: cpu.system / 1e6, wall: Number(process.hrtime.bigint() - t0) / 1e9 };
}

async function viaSplice(): Promise<Cost> {
  const s = streamPair();
  const counted = counter(s.test);
  const cost = await measure(async () => {
    const proc = await spawnContainerProcess({ args: producer, stdoutFd: s.agent });
    proc.stdinPipe!.end();
    proc.stderrPipe!.resume();
    await proc.wait();
  });
  expect(await counted).toBe(SIZE);
  return cost;
}

async function viaNodeStreams(): Promise<Cost> {
  const s = streamPair();
  const counted = counter(s.test);
  const cost = await measure(async () => {
    const [r, w] = makePipe();
    setPipeSize(r, 1 << 20);
    const child: ChildProcess = spawn(producer[0]!, producer.slice(1), { stdio: ['ignore', w, 'inherit'] });
    closeQuietly(w);
    const src = new net.Socket({ fd: r, readable: true, writable: false });
    const dst = new net.Socket({ fd: s.agent, readable: false, writable: true });
    src.pipe(dst);
    await Promise.all([
      new Promise((res) => child.on('exit', res)),
      new Promise((res) => dst.on('close', res)),
    ]);
  });
  expect(await counted).toBe(SIZE);
  return cost;
}

describe('agent CPU per byte', () => {
  it('splices 256 MiB for a fraction of what a JavaScript copy costs', async () => {
    await viaSplice(); // warm-up: module loading, first spawn
    await viaNodeStreams();
    const splice = await viaSplice();
    const js = await viaNodeStreams();
    const fmt = (c: Cost) =>
      `user ${c.user.toFixed(3)} s, sys ${c.system.toFixed(3)} s, wall ${c.wall.toFixed(2)} s`;
    console.log(`256 MiB stdout → socket\n  splice pump: ${fmt(splice)}\n  node pipe(): ${fmt(js)}`);
    // The JavaScript copy pays for every chunk (user) and copies each byte twice
    // across the kernel boundary (sys); the pump pays per wake-up, copies once.
    expect(splice.user + splice.system).toBeLessThan((js.user + js.system) / 2);
    expect(splice.user).toBeLessThan(0.1);
  });
});
