/**
 * Runs INSIDE the QEMU guest as a container process started by the agent
 * (passfd path), to observe, with the guest kernel's own syscall tracing,
 * how the agent moves this process's stdio. No mock: ftrace's
 * `syscalls:sys_{enter,exit}_splice` events, filtered on the agent's pid
 * (our parent: the agent posix_spawns us), are recorded while we
 *   1. print `SPLICE-PROBE-READY` on stderr (the host then writes stdin and closes it),
 *   2. read stdin to EOF (count + SHA-256),
 *   3. write <stdout bytes> of a fixed pattern (byte i = i % 251) to stdout,
 *   4. wait (bounded) until the trace shows the agent spliced all of them out.
 * Then tracing is switched off and one line `SPLICE-PROBE <json>` goes to
 * stderr: the RW packets the guest sent per connection (vsock tracepoint
 * virtio_transport_alloc_pkt), our stdin/stdout pipes (`pipe:[inode]`, the same inode the agent's
 * end shows), every fd the agent spliced from/to with its link and, for
 * sockets, the protocol name, both as seen when the trace started (getxattr `system.sockprotoname`: "AF_VSOCK"
 * for a vsock socket), and per (fd_in, fd_out, flags) the number of calls,
 * bytes moved and error returns. The host test checks all of it.
 *
 * Usage: node splice-probe.mjs <stdout bytes>
 * Needs root in the guest (tracefs); the guest kernel needs
 * CONFIG_FTRACE_SYSCALLS (Debian's has it).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
// The built bindings (the guest sees this checkout read-only over 9p): koffi stays in native-bindings/.
import { socketProtocolName as protoName } from '../../../dist/native-bindings/index.js';

const outBytes = Number(process.argv[2] ?? 4 << 20);
const T = '/sys/kernel/tracing';
const agent = process.ppid;
const EVENTS = ['sys_enter_splice', 'sys_exit_splice'];
/** The guest's virtio-vsock packets as the transport builds them (6.1: vsock/virtio_transport_alloc_pkt). */
const PKT = 'vsock/virtio_transport_alloc_pkt';
const RW = 5;
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const say = (line) => fs.writeSync(2, `${line}\n`);

const link = (p) => {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
};
const tw = (f, v) => fs.writeFileSync(`${T}/${f}`, v);

/** ftrace prints syscall arguments in hex without `0x` (6.1: "fd_in: 1e"), return values with it. */
const hex = (x) => BigInt(x.startsWith('0x') ? x : `0x${x}`);

/** enter/exit pairs of the agent's splice calls so far. */
function calls() {
  const text = fs.readFileSync(`${T}/trace`, 'utf8');
  const out = [];
  let open = null;
  for (const line of text.split('\n')) {
    const enter = line.match(
      /sys_splice\(fd_in: (\w+), off_in: \w+, fd_out: (\w+), off_out: \w+, len: (\w+), flags: (\w+)\)/,
    );
    if (enter) {
      const [fdIn, fdOut, len, flags] = enter.slice(1, 5).map((x) => Number(hex(x)));
      open = { fdIn, fdOut, len, flags };
      continue;
    }
    const exit = line.match(/sys_splice -> (\w+)/);
    if (exit && open) {
      out.push({ ...open, ret: Number(BigInt.asIntN(64, hex(exit[1]))) });
      open = null;
    }
  }
  return out;
}

const report = {
  kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
  agentPid: agent,
  agentCmdline: fs.readFileSync(`/proc/${agent}/cmdline`, 'utf8').split('\0').join(' ').trim(),
  stdinPipe: link('/proc/self/fd/0'),
  stdoutPipe: link('/proc/self/fd/1'),
};

if (!fs.existsSync(`${T}/trace`)) execFileSync('mount', ['-t', 'tracefs', 'tracefs', T]);
tw('tracing_on', '0');
tw('buffer_size_kb', '4096');
tw('trace', '');
for (const ev of EVENTS) {
  tw(`events/syscalls/${ev}/filter`, `common_pid == ${agent}`);
  tw(`events/syscalls/${ev}/enable`, '1');
}
// Every RW packet the guest sends while stdout flows is stdout (stdin has no reverse RW).
tw(`events/${PKT}/filter`, `op == ${RW}`);
tw(`events/${PKT}/enable`, '1');
tw('tracing_on', '1');
// The agent's fd table now, while every stdio fd of ours is open on its side
// (its stdin ends are closed once stdin reaches EOF, before the report).
const agentFds = {};
for (const fd of fs.readdirSync(`/proc/${agent}/fd`)) {
  const p = `/proc/${agent}/fd/${fd}`;
  const l = link(p);
  agentFds[fd] = { link: l, proto: l?.startsWith('socket:') ? protoName(p) : null };
}
say('SPLICE-PROBE-READY');

// 2. stdin to EOF.
const inHash = createHash('sha256');
let inBytes = 0;
const buf = Buffer.alloc(1 << 16);
for (;;) {
  const n = fs.readSync(0, buf, 0, buf.length, null);
  if (n === 0) break;
  inHash.update(buf.subarray(0, n));
  inBytes += n;
}

// 3. stdout.
const block = Buffer.alloc(1 << 16);
let written = 0;
while (written < outBytes) {
  const len = Math.min(block.length, outBytes - written);
  for (let i = 0; i < len; i++) block[i] = (written + i) % 251;
  let off = 0;
  while (off < len) off += fs.writeSync(1, block, off, len - off);
  written += len;
}

/**
 * RW packets the guest sent so far, per connection (the host's port: the
 * guest side of every passfd stream is the listener's port): how
 * many, their bytes, and how many of each size class (≤ 4 KiB, ≤ 16 KiB,
 * ≤ 64 KiB). Our stdout is one connection, our stderr another.
 */
function txPackets() {
  const conns = {};
  for (const m of fs
    .readFileSync(`${T}/trace`, 'utf8')
    .matchAll(/virtio_transport_alloc_pkt: \d+:\d+ -> \d+:(\d+) len=(\d+) /g)) {
    const len = Number(m[2]);
    conns[m[1]] ??= { port: Number(m[1]), count: 0, bytes: 0, upTo4k: 0, upTo16k: 0, upTo64k: 0 };
    const c = conns[m[1]];
    c.count++;
    c.bytes += len;
    if (len <= 4096) c.upTo4k++;
    else if (len <= 16384) c.upTo16k++;
    else c.upTo64k++;
  }
  return Object.values(conns);
}

// 4. Until the agent has sent every byte of our stdout pipe out, by splice or in packets (bounded).
const stdoutFds = () =>
  fs.readdirSync(`/proc/${agent}/fd`).filter((fd) => link(`/proc/${agent}/fd/${fd}`) === report.stdoutPipe);
const deadline = Date.now() + 60_000;
let spliced = 0;
for (;;) {
  const mine = new Set(stdoutFds().map(Number));
  spliced = calls()
    .filter((c) => mine.has(c.fdIn) && c.ret > 0)
    .reduce((s, c) => s + c.ret, 0);
  const sent = Math.max(0, ...txPackets().map((c) => c.bytes));
  if (spliced >= outBytes || sent >= outBytes || Date.now() > deadline) break;
  sleep(100);
}

tw('tracing_on', '0');
const all = calls();
const packets = txPackets();
const fds = {};
for (const fd of new Set(all.flatMap((c) => [c.fdIn, c.fdOut]))) fds[fd] = agentFds[fd] ?? null;
const groups = {};
for (const c of all) {
  const k = `${c.fdIn}>${c.fdOut}/${c.flags}`;
  groups[k] ??= { fdIn: c.fdIn, fdOut: c.fdOut, flags: c.flags, calls: 0, bytes: 0, errors: {} };
  const g = groups[k];
  g.calls++;
  if (c.ret > 0) g.bytes += c.ret;
  else if (c.ret < 0) g.errors[-c.ret] = (g.errors[-c.ret] ?? 0) + 1;
}
tw(`events/${PKT}/enable`, '0');
tw(`events/${PKT}/filter`, '0');
for (const ev of EVENTS) {
  tw(`events/syscalls/${ev}/enable`, '0');
  tw(`events/syscalls/${ev}/filter`, '0');
}
say(
  `SPLICE-PROBE ${JSON.stringify({
    ...report,
    stdin: { bytes: inBytes, sha256: inHash.digest('hex') },
    stdoutWritten: written,
    splicedFromStdout: spliced,
    fds,
    groups: Object.values(groups),
    txPackets: packets,
    lostEvents: fs.readFileSync(`${T}/trace`, 'utf8').includes('LOST'),
    sample: fs
      .readFileSync(`${T}/trace`, 'utf8')
      .split('\n')
      .filter((l) => l.includes('sys_splice'))
      .slice(0, 4),
  })}`,
);
