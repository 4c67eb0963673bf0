/**
 * The agent stays out of the data path: the bytes of a transfer never pass
 * through its memory, so its cost does not grow with the bytes the way a copy
 * through JavaScript does.
 *
 * Why it holds by construction: the stream path moves bytes with splice(2)
 * only (splice-pump.ts has no buffer, no read, no write). The test checks it
 * with the kernel's own per-thread I/O accounting rather than a stopwatch
 * (CPU time on a shared 2-core machine is too noisy to assert on; `bench`
 * reports the figures): `/proc/<pid>/task/<tid>/io` counts the bytes each
 * thread moved through read-family and write-family calls (`rchar`,
 * `wchar`), and splice(2) adds nothing to them. The same 256 MiB go from a
 * child's stdout into a socket, once through the launcher's splice pump and
 * once through a plain Node stream copy (`pipe.pipe(socket)`, what an agent
 * without splice would do), the control that shows the counters see a copy.
 * The socket's far end is read by `wc -c` in another process. CPU figures
 * are printed for the record, not asserted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
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
  /** Bytes this process read and wrote through read/write-family syscalls. */
  readBytes: number;
  writtenBytes: number;
  reads: number;
  writes: number;
}

/**
 * Read-family and write-family byte and call counts of this process's own
 * threads. `/proc/self/io` would also include the children already reaped
 * (here `dd` and `wc`, which do read and write every byte), so the threads'
 * own files under /proc/self/task are summed instead.
 */
function ioCounters(): { rchar: number; wchar: number; syscr: number; syscw: number } {
  const sum = { rchar: 0, wchar: 0, syscr: 0, syscw: 0 };
  for (const tid of readdirSync('/proc/self/task')) {
    let text: string;
    try {
      text = readFileSync(`/proc/self/task/${tid}/io`, 'utf8');
    } catch {
      continue; // the thread ended between the listing and the read
    }
    for (const line of text.trim().split('\n')) {
      const [key, value] = line.split(': ') as [string, string];
      if (key in sum) sum[key as keyof typeof sum] += Number(value);
    }
  }
  return sum;
}

async function measure(transfer: () => Promise<void>): Promise<Cost> {
  const io0 = ioCounters();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await transfer();
  const cpu = process.cpuUsage(cpu0);
  const io = ioCounters();
  return {
    user: cpu.user / 1e6,
    system: cpu.system / 1e6,
    wall: Number(process.hrtime.bigint() - t0) / 1e9,
    readBytes: io.rchar - io0.rchar,
    writtenBytes: io.wchar - io0.wchar,
    reads: io.syscr - io0.syscr,
    writes: io.syscw - io0.syscw,
  };
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

describe('agent bytes through its own memory', () => {
  it('splices 256 MiB without reading or writing one of them, where a JavaScript copy reads and writes each', async () => {
    await viaSplice(); // warm-up: module loading, first spawn
    await viaNodeStreams();
    const splice = await viaSplice();
    const js = await viaNodeStreams();
    const fmt = (c: Cost) =>
      `user ${c.user.toFixed(3)} s, sys ${c.system.toFixed(3)} s, wall ${c.wall.toFixed(2)} s, ` +
      `read ${c.readBytes} B in ${c.reads} calls, written ${c.writtenBytes} B in ${c.writes} calls`;
    console.log(`256 MiB stdout → socket\n  splice pump: ${fmt(splice)}\n  node pipe(): ${fmt(js)}`);
    // The control: a copy through JavaScript reads and writes every byte.
    expect(js.readBytes).toBeGreaterThanOrEqual(SIZE);
    expect(js.writtenBytes).toBeGreaterThanOrEqual(SIZE);
    // The pump moved the same bytes without one of them passing through a read
    // or a write of this process (the allowance covers the launcher's control
    // pipes and the test runner's own messages).
    expect(splice.readBytes).toBeLessThan(1 << 20);
    expect(splice.writtenBytes).toBeLessThan(1 << 20);
  });
});
