/**
 * The whole stack in one process, from the package's public entry points
 * only: the hybrid-vsock device with its loopback guest (`passfd-broker/device`),
 * the guest agent reaching that guest's vsock through the stand-in socket
 * (`passfd-broker/agent`), and a broker passing a FIFO's fd to the device
 * (`passfd-broker`). `run` does the same with three processes.
 *
 *   npm run build && node --import tsx examples/in-process-stack.ts
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Broker, createLogger, defaultConfig } from 'passfd-broker';
import { Agent, StandinVsock } from 'passfd-broker/agent';
import { HybridVsockDevice, LoopbackTransport } from 'passfd-broker/device';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'in-process-'));
const hvsockPath = path.join(dir, 'h.sock');
const guestDir = path.join(dir, 'guest');
const config = defaultConfig();
const log = createLogger('example');

// The VMM side: the device on its Unix socket, the loopback guest as its transport.
const device = new HybridVsockDevice({ hvsockPath, guestCid: config.hypervisor.guest_cid, log });
device.start(new LoopbackTransport(config.hypervisor.guest_cid, guestDir, log));

// The guest side: the agent on the guest's vsock ports.
const agent = new Agent({
  vsock: new StandinVsock(guestDir),
  passfdPort: config.runtime.passfd_listener_port,
  agentPort: config.runtime.agent_port,
  streamWaitMs: config.runtime.agent_stream_wait_ms,
  log,
});
await agent.start();

// The runtime side: containerd's FIFOs (only stdout read here), a process writing to it.
const fifos = { stdin: `${dir}/c1-stdin`, stdout: `${dir}/c1-stdout`, stderr: `${dir}/c1-stderr` };
execFileSync('mkfifo', Object.values(fifos));
const broker = new Broker({ hvsockPath, config });
const proc = await broker.start({ containerId: 'c1', args: ['uname', '-s'], fifos });
// containerd opens its reader before it waits: opened synchronously here, while the
// broker's keeper holds the FIFO (an open after the exit would wait for a writer forever).
const reader = new net.Socket({
  fd: fs.openSync(fifos.stdout, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
  readable: true,
  writable: false,
});
const output = new Promise<string>((resolve) => {
  let text = '';
  reader.on('data', (d) => {
    text += d.toString();
  });
  reader.on('end', () => resolve(text));
});
await proc.closeStdin();
console.log('exit status', await proc.wait(), 'stdout', JSON.stringify(await output));

await broker.close();
await agent.stop();
await device.stop();
fs.rmSync(dir, { recursive: true, force: true });
