// The server in a separate process that is killed with SIGKILL while calls
// are pending: the client must reject every one of them, over a Unix socket
// and over a socketpair end inherited by the child.

import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { closeQuietly, socketPair } from '../../native-bindings/index.js';
import { TtrpcClient } from '../../src/ttrpc/client.js';
import { TtrpcClosedError } from '../../src/ttrpc/errors.js';
import { captureLogger, connectUnix, type TempDir, tempDir } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/ttrpc-server-child.ts', import.meta.url));

const children: ChildProcess[] = [];
const dirs: TempDir[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) d.remove();
});

/** Start the fixture; resolves once it printed "ready". Its stdout lines are collected. */
function startChild(args: string[], stdio3?: number): Promise<{ child: ChildProcess; lines: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, ...args], {
    stdio: ['ignore', 'pipe', 'inherit', ...(stdio3 === undefined ? [] : [stdio3])],
  });
  children.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (line === 'ready') resolve({ child, lines });
      }
    });
    child.once('exit', (code) => reject(new Error(`server child exited early (${code})`)));
  });
}

async function waitLines(lines: string[], n: number, prefix: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (lines.filter((l) => l.startsWith(prefix)).length < n) {
    if (Date.now() > end) throw new Error(`child reported ${lines.join(',')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function killAndExpectRejections(
  child: ChildProcess,
  client: TtrpcClient,
  pending: Promise<unknown>[],
) {
  const settled = Promise.allSettled(pending); // observe the rejections before they happen
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  const results = await settled;
  for (const r of results) {
    expect(r.status).toBe('rejected');
    const err = (r as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(TtrpcClosedError);
    expect(err.message).toBe('ttrpc connection closed');
  }
  expect(client.closed).toBe(true);
  expect(client.pendingCalls).toBe(0);
  await expect(client.call('t.S', 'Echo', new Uint8Array())).rejects.toBeInstanceOf(TtrpcClosedError);
}

describe('server process dies', () => {
  it('over a Unix socket: every pending call rejects', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const path = join(dir.path, 's.sock');
    const { child, lines } = await startChild(['unix', path]);
    const client = new TtrpcClient(await connectUnix(path), { logger: captureLogger().logger });
    expect(Buffer.from(await client.call('t.S', 'Echo', Buffer.from('hi'))).toString()).toBe('hi');
    const pending = [1, 2, 3, 4].map(() => client.call('t.S', 'Hang', new Uint8Array()));
    await waitLines(lines, 4, 'hang ');
    expect(lines.filter((l) => l.startsWith('hang '))).toEqual(['hang 3', 'hang 5', 'hang 7', 'hang 9']);
    await killAndExpectRejections(child, client, pending);
  });

  it('over an inherited socketpair end: every pending call rejects', async () => {
    const [mine, theirs] = socketPair();
    let child: ChildProcess;
    let lines: string[];
    try {
      ({ child, lines } = await startChild(['fd', '3'], theirs));
    } finally {
      closeQuietly(theirs); // the child has its own copy
    }
    const client = new TtrpcClient(new net.Socket({ fd: mine, readable: true, writable: true }), {
      logger: captureLogger().logger,
    });
    expect(Buffer.from(await client.call('t.S', 'Echo', Buffer.from('yo'))).toString()).toBe('yo');
    const pending = [1, 2].map(() => client.call('t.S', 'Hang', new Uint8Array()));
    await waitLines(lines, 2, 'hang ');
    await killAndExpectRejections(child, client, pending);
  });
});
