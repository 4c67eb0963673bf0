/**
 * Smoke test of the vhost-user-vsock backend against a real QEMU + Linux guest.
 *
 *   npm run build && npx tsx scripts/vm-smoke.ts [--kvm] [--keep] [--bulk-mib N] [--boots N]
 *
 * 1. builds the busybox initramfs (src/vm/initramfs.ts),
 * 2. starts `vmm --hvsock <dir>/h.sock --vhost-user <dir>/vu.sock` (debug log
 *    in <dir>/vmm.log) and a host listener on `<dir>/h.sock_5000`,
 * 3. boots QEMU (src/vm/qemu.ts) running scripts/vm-guest-smoke.mjs with the
 *    host's node over the 9p root,
 * 4. (a) the guest connects to host port 5000 → the listener gets a line and
 *    replies; (b) the guest listens on 1027 → `pass --port 1027 <fifo>` and
 *    `echo hi > fifo` → the guest prints what it received.
 * (c) with --bulk-mib N (default 64): N MiB guest→host (host port 5001) and
 * N MiB host→guest (a second passed fifo), SHA-256 compared on both ends.
 * --boots N boots N guests in a row against the same vmm (bulk on the first).
 * Prints timings and PASS/FAIL per step; exits non-zero on any failure.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cachedInitramfs } from '../src/vm/initramfs.js';
import { startQemu } from '../src/vm/qemu.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist/cli/passfd-broker.js');
const kvm = process.argv.includes('--kvm');
const keep = process.argv.includes('--keep');
const argNum = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const bulkMiB = argNum('--bulk-mib', 64);
const boots = argNum('--boots', 1);
/** SIGKILL the first QEMU in the middle of the guest→host bulk transfer (then boot the others normally). */
const killMidBulk = process.argv.includes('--kill-mid-bulk');
let bulkReceived = 0;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'passfd-vm-smoke-'));
const hv = path.join(dir, 'h.sock');
const vu = path.join(dir, 'vu.sock');
const results: [string, boolean, string][] = [];
const t = (since: number) => `${((Date.now() - since) / 1000).toFixed(2)} s`;
const record = (name: string, ok: boolean, detail = '') => {
  results.push([name, ok, detail]);
  process.stdout.write(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}\n`);
};

async function waitForFile(p: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > until) throw new Error(`${p} did not appear in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The guest's 1 MiB xorshift32 pattern (guest-smoke.mjs), repeated `mib` times, hashed. */
function patternSha(mib: number): { block: Buffer; sha: string } {
  const b = Buffer.alloc(1 << 20);
  let x = 1;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  const h = createHash('sha256');
  for (let i = 0; i < mib; i++) h.update(b);
  return { block: b, sha: h.digest('hex') };
}

/** Console text → our stdout, one prefixed line at a time. */
function consolePrinter(tag: string): (s: string) => void {
  let partial = '';
  return (s) => {
    partial += s.replace(/\r/g, '');
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const l of lines) process.stdout.write(`  ${tag}| ${l}\n`);
  };
}

async function main(): Promise<number> {
  process.stdout.write(`work dir ${dir}\n`);
  const t0 = Date.now();
  const { path: initrd, kernel, hit } = cachedInitramfs({ fallbackOutput: path.join(dir, 'initrd.gz') });
  process.stdout.write(
    `initramfs for ${kernel.version} ${hit ? 'from the cache' : 'built'} in ${t(t0)} (${fs.statSync(initrd).size} bytes): ${initrd}\n`,
  );

  const vmmLog = fs.openSync(path.join(dir, 'vmm.log'), 'w');
  const vmm = spawn(
    process.execPath,
    [cli, '--log-level', 'debug', 'vmm', '--hvsock', hv, '--vhost-user', vu, '--guest-cid', '3'],
    { stdio: ['ignore', vmmLog, vmmLog] },
  );
  await waitForFile(vu, 10_000);

  // (a) host listener for guest→host port 5000
  const hostLines: string[] = [];
  const server = net.createServer((s) => {
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      hostLines.push(d);
      s.write(`hello back from host\n`);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(path.join(`${hv}_5000`), r));

  // (c) guest→host bulk listener
  const expected = patternSha(bulkMiB);
  const bulkServer = net.createServer((sock) => {
    const h = createHash('sha256');
    let n = 0;
    sock.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
      bulkReceived += d.length;
    });
    sock.on('end', () => sock.end(`host-sha ${h.digest('hex')} bytes ${n}\n`));
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => bulkServer.listen(`${hv}_5001`, r));

  const vmmFds = () => fs.readdirSync(`/proc/${vmm.pid}/fd`).length;
  const fdsBefore = vmmFds();
  let code = 0;
  try {
    for (let boot = 1; boot <= boots; boot++) {
      hostLines.length = 0;
      if (!(await bootOnce(boot, boot === 1 ? bulkMiB : 0, expected.block, expected.sha))) code = 1;
    }
  } finally {
    await new Promise((r) => setTimeout(r, 500));
    const alive = vmm.exitCode === null;
    record('vmm alive after all guests', alive);
    if (alive)
      record(
        'vmm fd count back to its idle value',
        vmmFds() === fdsBefore,
        `${fdsBefore} before, ${vmmFds()} after`,
      );
    vmm.kill('SIGTERM');
    await new Promise((r) => vmm.once('exit', r));
    server.close();
    bulkServer.close();
  }

  async function bootOnce(boot: number, bulk: number, block: Buffer, sha: string): Promise<boolean> {
    const P = `[boot ${boot}] `;
    const t0 = Date.now();
    const qemu = startQemu({
      kernel: kernel.vmlinuz,
      initrd,
      vhostUserSocket: vu,
      accel: kvm ? 'kvm' : 'tcg',
      consoleLog: path.join(dir, `console-${boot}.log`),
      command: `cd ${root} && SMOKE_HOST_PORT=5000 SMOKE_GUEST_PORT=1027 SMOKE_BULK_MIB=${bulk} exec ${process.execPath} scripts/vm-guest-smoke.mjs`,
      onConsole: consolePrinter(String(boot)),
    });
    try {
      const readyMs = await qemu.ready(120_000);
      record(`${P}guest booted (/init READY)`, true, `${(readyMs / 1000).toFixed(2)} s after QEMU start`);
      const cidLine = await qemu.waitFor(/GUEST node [^\n]*local CID (\S+)\r?\n/, 120_000);
      record(`${P}guest local CID is 3`, cidLine[1] === '3', cidLine[0].trim());
      await qemu.waitFor(/GUEST LISTENING[^\n]*\n/, 120_000);
      record(`${P}guest node up, vsock listen on 1027`, true, `${t(t0)} after QEMU start`);

      const conn = await qemu.waitFor(/GUEST (CONNECTED|CONNECT-FAILED)[^\n]*\n/, 60_000);
      record(`${P}(a) guest connect to host:5000`, conn[1] === 'CONNECTED', conn[0].trim());
      if (conn[1] === 'CONNECTED') {
        await qemu.waitFor(/GUEST REPLY[^\n]*\n/, 30_000).then(
          (m) => record(`${P}(a) host reply reached guest`, m[0].includes('hello back'), m[0].trim()),
          (e: Error) => record(`${P}(a) host reply reached guest`, false, e.message.split('\n')[0]!),
        );
      }
      record(
        `${P}(a) host listener got the line`,
        hostLines.join('').includes('hello from guest'),
        JSON.stringify(hostLines.join('')),
      );

      // (b) pass a FIFO to guest port 1027, write "hi"
      const fifo = path.join(dir, `fifo-${boot}`);
      spawnSync('mkfifo', [fifo]);
      const tb = Date.now();
      const pass = spawnSync(process.execPath, [cli, 'pass', '--hvsock', hv, '--port', '1027', fifo], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      record(
        `${P}(b) pass --port 1027`,
        pass.status === 0,
        `status ${pass.status} host port ${pass.stdout.trim()} ${pass.stderr.trim()}`,
      );
      const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      fs.writeSync(w, 'hi\n');
      fs.closeSync(w);
      await qemu.waitFor(/GUEST RECEIVED[^\n]*\n/, 30_000).then(
        (m) =>
          record(
            `${P}(b) guest received via passed fifo`,
            m[0].includes('hi'),
            `${m[0].trim()} (${t(tb)} after pass)`,
          ),
        (e: Error) => record(`${P}(b) guest received via passed fifo`, false, e.message.split('\n')[0]!),
      );

      if (bulk > 0 && killMidBulk && boot === 1) {
        bulkReceived = 0;
        const until = Date.now() + 120_000;
        while (bulkReceived < 8 << 20 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
        qemu.process.kill('SIGKILL');
        const ex = await qemu.exited;
        record(
          `${P}(kill) QEMU SIGKILLed mid guest→host bulk`,
          bulkReceived >= 8 << 20,
          `after ${bulkReceived} bytes, exit ${ex}`,
        );
        await new Promise((r) => setTimeout(r, 1000));
        return !results.some(([name, ok]) => name.startsWith(P) && !ok);
      }
      if (bulk > 0) {
        const g2h = await qemu.waitFor(
          /GUEST BULK-G2H[^\n]*guest-sha (\w+) host-says host-sha (\w+) bytes (\d+)[^\n]*\n/,
          300_000,
        );
        record(
          `${P}(c) ${bulk} MiB guest→host SHA-256`,
          g2h[1] === sha && g2h[2] === sha && Number(g2h[3]) === bulk * 1048576,
          g2h[0].trim(),
        );
        const fifo2 = path.join(dir, `fifo2-${boot}`);
        spawnSync('mkfifo', [fifo2]);
        const pass2 = spawnSync(process.execPath, [cli, 'pass', '--hvsock', hv, '--port', '1027', fifo2], {
          encoding: 'utf8',
          timeout: 30_000,
        });
        record(
          `${P}(c) pass second fifo`,
          pass2.status === 0,
          `host port ${pass2.stdout.trim()} ${pass2.stderr.trim()}`,
        );
        const ws = fs.createWriteStream(fifo2);
        for (let i = 0; i < bulk; i++) {
          if (!ws.write(block)) await new Promise<void>((r) => ws.once('drain', () => r()));
        }
        ws.end();
        const h2g = await qemu.waitFor(/GUEST BULK-H2G[^\n]*guest-sha (\w+)\r?\n/, 300_000);
        record(`${P}(c) ${bulk} MiB host→guest SHA-256`, h2g[1] === sha, h2g[0].trim());
      }
      const status = await qemu.commandExit(60_000);
      record(`${P}guest command exit status 0`, status === '0', `status ${status}`);
      const qexit = await Promise.race([
        qemu.exited,
        new Promise((r) => setTimeout(() => r('timeout'), 30_000)),
      ]);
      record(`${P}QEMU powered off`, qexit === 0, `exit ${qexit}, total ${t(t0)}`);
    } catch (err) {
      record(`${P}run`, false, (err as Error).message);
    } finally {
      await qemu.stop();
    }
    return !results.some(([name, ok]) => name.startsWith(P) && !ok);
  }
  if (results.some(([, ok]) => !ok)) code = 1;
  process.stdout.write(
    `\nvmm log: ${path.join(dir, 'vmm.log')}\nconsole: ${path.join(dir, 'console.log')}\n`,
  );
  if (!keep && code === 0) fs.rmSync(dir, { recursive: true, force: true });
  return code;
}

main().then(
  (c) => process.exit(c),
  (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  },
);
