/**
 * Using the broker as a library, the way a runtime would: containerd has made
 * the FIFOs; we start a process whose stdio are those FIFOs through passfd,
 * then play containerd's side (write stdin, read stdout) and wait for the exit.
 *
 *   npm run build && node --import tsx examples/broker-library.ts
 *
 * (After `npm install passfd-broker` elsewhere, the same code runs as plain
 * JavaScript: only the package's public entry point is imported.)
 *
 * Against a running device, set HVSOCK=/path/to/h.sock (its agent must run);
 * otherwise an embedded vmm + agent are started and stopped.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Broker, defaultConfig, startEmbeddedStack } from 'passfd-broker';

const config = defaultConfig();
const stack = process.env.HVSOCK ? null : await startEmbeddedStack({ config });
const hvsockPath = process.env.HVSOCK ?? stack!.hvsockPath;

// containerd's part: three FIFOs named after the container.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'example-'));
const fifos = { stdin: `${dir}/c1-stdin`, stdout: `${dir}/c1-stdout`, stderr: `${dir}/c1-stderr` };
for (const f of Object.values(fifos)) execFileSync('mkfifo', [f]);

const broker = new Broker({ hvsockPath, config });
const proc = await broker.start({ containerId: 'c1', args: ['tr', 'a-z', 'A-Z'], fifos });
console.log('host ports', proc.hostPorts);

// containerd reads stdout and writes stdin (non-blocking opens: the broker's keepers hold the FIFOs).
const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
const out = new net.Socket({
  fd: fs.openSync(fifos.stdout, O_RDONLY | O_NONBLOCK),
  readable: true,
  writable: false,
});
out.on('data', (d: Buffer) => process.stdout.write(d));
const done = new Promise((r) => out.on('end', r));
const stdin = new net.Socket({
  fd: fs.openSync(fifos.stdin, O_WRONLY | O_NONBLOCK),
  readable: false,
  writable: true,
});
stdin.end('hello through passfd\n', () => {
  stdin.destroy();
  void proc.closeStdin(); // lossless: the device drains the FIFO, then the process sees EOF
});

console.log('exit status', await proc.wait()); // only once every output byte is in the FIFO
await done;
await broker.close();
await stack?.stop();
fs.rmSync(dir, { recursive: true, force: true });
