/**
 * sd_notify through real sockets: a path datagram socket bound with
 * src/util/unix-dgram.ts, and an abstract one bound by a python3 child
 * (unix-dgram cannot bind abstract names). No mocks of the kernel; stderr is
 * only watched. Also unix-dgram.ts's own refusals and error shapes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from 'vitest';
import {
  abstractSockaddr,
  MAX_ABSTRACT_NAME_BYTES,
  sendToAbstractSocket,
} from '../../native-bindings/sd-notify-abstract.js';
import { notifyReady, notifyStopping, sdNotify } from '../../src/util/sd-notify.js';
import { DatagramError, MAX_PATH_BYTES, receiveDatagrams, sendDatagram } from '../../src/util/unix-dgram.js';

const dir = mkdtempSync(join(tmpdir(), 'sd-notify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let stderr: MockInstance;
let stderrLines: string[];
beforeEach(() => {
  stderrLines = [];
  stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderrLines.push(String(chunk));
    return true;
  });
});
afterEach(() => stderr.mockRestore());

/** A bound path datagram socket that collects what it receives. */
function pathListener(name: string): { path: string; next(): Promise<string>; close(): void } {
  const path = join(dir, name);
  const queue: string[] = [];
  const waiters: ((s: string) => void)[] = [];
  const server = receiveDatagrams(
    path,
    (msg) => {
      const w = waiters.shift();
      if (w) w(msg.toString('utf8'));
      else queue.push(msg.toString('utf8'));
    },
    (err) => {
      throw err;
    },
  );
  return {
    path,
    next: () => {
      const m = queue.shift();
      return m !== undefined ? Promise.resolve(m) : new Promise((resolve) => waiters.push(resolve));
    },
    close: () => server.close(),
  };
}

/**
 * python3 binds the abstract name `\0<name>` (exact length, no padding),
 * prints `bound`, then prints the hex of the first datagram and exits.
 */
const PY_ABSTRACT_RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(b"\\0" + sys.argv[1].encode())
print("bound", flush=True)
s.settimeout(30)
print(s.recv(65536).hex(), flush=True)
`;

/** python3 receivers still running when a test ends (it failed) are killed, not left to time out. */
const children = new Set<ChildProcess>();
afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill();
  children.clear();
});

function abstractListener(name: string): { bound: Promise<void>; received: Promise<string> } {
  const child = spawn('python3', ['-c', PY_ABSTRACT_RECEIVER, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  let onBound!: () => void;
  const bound = new Promise<void>((resolve) => {
    onBound = resolve;
  });
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.startsWith('bound\n')) onBound();
  });
  const received = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`python3 exited ${code}: ${err}`));
      const lines = out.trim().split('\n');
      if (lines[0] !== 'bound' || lines.length !== 2) reject(new Error(`unexpected output: ${out} ${err}`));
      resolve(Buffer.from(lines[1] ?? '', 'hex').toString('utf8'));
    });
  });
  // Do not hang on `bound` if python3 fails before printing it.
  received.catch(() => onBound());
  return { bound, received };
}

function uniqueName(): string {
  return `passfd-sd-notify-test-${process.pid}-${randomBytes(4).toString('hex')}`;
}

describe('sdNotify to a path socket (unix-dgram)', () => {
  it('delivers READY=1', async () => {
    const l = pathListener('notify.sock');
    try {
      await expect(sdNotify('READY=1', { NOTIFY_SOCKET: l.path })).resolves.toBe(true);
      await expect(l.next()).resolves.toBe('READY=1');
    } finally {
      l.close();
    }
    expect(stderrLines).toEqual([]);
  });

  it('notifyReady with MAINPID and STATUS, notifyStopping', async () => {
    const l = pathListener('notify2.sock');
    const env = { NOTIFY_SOCKET: l.path };
    try {
      await expect(notifyReady({ env })).resolves.toBe(true);
      await expect(l.next()).resolves.toBe('READY=1');
      await expect(notifyReady({ env, mainPid: 4242, status: 'listening on 1027' })).resolves.toBe(true);
      await expect(l.next()).resolves.toBe('READY=1\nMAINPID=4242\nSTATUS=listening on 1027');
      await expect(notifyStopping({ env })).resolves.toBe(true);
      await expect(l.next()).resolves.toBe('STOPPING=1');
    } finally {
      l.close();
    }
  });

  it('rejects programming errors in the options', async () => {
    const env = { NOTIFY_SOCKET: join(dir, 'unused.sock') };
    await expect(notifyReady({ env, mainPid: 0 })).rejects.toThrow(RangeError);
    await expect(notifyReady({ env, mainPid: 1.5 })).rejects.toThrow(RangeError);
    await expect(notifyStopping({ env, status: 'two\nlines' })).rejects.toThrow(TypeError);
  });
});

describe('sdNotify to an abstract socket (koffi)', () => {
  it('delivers READY=1 to @name', async () => {
    const name = uniqueName();
    const l = abstractListener(name);
    await l.bound;
    // Delivery itself proves the address length is exactly 2 + 1 + name bytes:
    // any padding would be part of the abstract name and miss python's socket.
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: `@${name}` })).resolves.toBe(true);
    await expect(l.received).resolves.toBe('READY=1');
    expect(stderrLines).toEqual([]);
  });

  it('delivers a multi-line state from notifyReady', async () => {
    const name = uniqueName();
    const l = abstractListener(name);
    await l.bound;
    await expect(notifyReady({ env: { NOTIFY_SOCKET: `@${name}` }, mainPid: process.pid })).resolves.toBe(
      true,
    );
    await expect(l.received).resolves.toBe(`READY=1\nMAINPID=${process.pid}`);
  });

  it('an abstract name nobody bound: false, one stderr line, no throw', async () => {
    const name = uniqueName();
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: `@${name}` })).resolves.toBe(false);
    expect(stderrLines).toHaveLength(1);
    expect(stderrLines[0]).toMatch(
      /^passfd-broker: sd_notify: cannot send "READY=1" to NOTIFY_SOCKET=@.*ECONNREFUSED.*\n$/,
    );
  });
});

describe('native binding sendToAbstractSocket', () => {
  it('builds sockaddr_un of exactly 2 + 1 + name bytes', () => {
    const addr = abstractSockaddr('abc');
    expect(addr.length).toBe(6);
    expect(addr.readUInt16LE(0)).toBe(1); // AF_UNIX (x86-64 is little-endian)
    expect(addr[2]).toBe(0);
    expect(addr.subarray(3).toString()).toBe('abc');
    expect(abstractSockaddr('é').length).toBe(5); // bytes, not characters
  });

  it('throws errors carrying the errno name', () => {
    expect(() => sendToAbstractSocket(uniqueName(), 'READY=1')).toThrow(
      expect.objectContaining({ code: 'ECONNREFUSED', syscall: 'sendto' }),
    );
    expect(() => sendToAbstractSocket('x'.repeat(MAX_ABSTRACT_NAME_BYTES + 1), 'READY=1')).toThrow(
      expect.objectContaining({ code: 'ENAMETOOLONG' }),
    );
  });
});

describe('nothing to notify, or nobody listening', () => {
  it('NOTIFY_SOCKET unset or empty: false, silently', async () => {
    await expect(sdNotify('READY=1', {})).resolves.toBe(false);
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: '' })).resolves.toBe(false);
    await expect(notifyReady({ env: {} })).resolves.toBe(false);
    await expect(notifyStopping({ env: {} })).resolves.toBe(false);
    expect(stderrLines).toEqual([]);
  });

  it('a path that does not exist: false, one stderr line, no throw', async () => {
    const path = join(dir, 'missing', 'notify.sock');
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: path })).resolves.toBe(false);
    expect(stderrLines).toEqual([
      `passfd-broker: sd_notify: cannot send "READY=1" to NOTIFY_SOCKET=${path}: ENOENT; continuing\n`,
    ]);
  });

  it('a dead socket (file left behind, nobody bound): false', async () => {
    const l = pathListener('dead.sock');
    l.close();
    await expect(sdNotify('STOPPING=1', { NOTIFY_SOCKET: l.path })).resolves.toBe(false);
    expect(stderrLines).toHaveLength(1);
    expect(stderrLines[0]).toContain('ECONNREFUSED');
  });

  it('a path too long for sun_path is refused rather than truncated', async () => {
    const path = `/${'p'.repeat(107)}`;
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: path })).resolves.toBe(false);
    expect(stderrLines[0]).toContain('ENAMETOOLONG');
  });

  it('an unsupported NOTIFY_SOCKET form is ignored with a warning', async () => {
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: 'vsock:2:1234' })).resolves.toBe(false);
    await expect(sdNotify('READY=1', { NOTIFY_SOCKET: 'relative/notify.sock' })).resolves.toBe(false);
    expect(stderrLines).toHaveLength(2);
    expect(stderrLines[0]).toBe(
      'passfd-broker: sd_notify: NOTIFY_SOCKET=vsock:2:1234 is neither an absolute path nor an abstract name (@name); not notifying\n',
    );
  });
});

describe('unix-dgram.ts', () => {
  it('binding where no directory exists throws a DatagramError ENOENT (errno name, syscall)', () => {
    const path = join(dir, 'missing', 'r.sock');
    expect(() =>
      receiveDatagrams(
        path,
        () => {},
        () => {},
      ),
    ).toThrow(expect.objectContaining({ name: 'DatagramError', code: 'ENOENT', syscall: 'bind', errno: -2 }));
  });

  it('binding a path that is taken throws EADDRINUSE and leaves the first receiver working', async () => {
    const l = pathListener('taken.sock');
    try {
      expect(() =>
        receiveDatagrams(
          l.path,
          () => {},
          () => {},
        ),
      ).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
      await sendDatagram(l.path, Buffer.from('still here'));
      await expect(l.next()).resolves.toBe('still here');
    } finally {
      l.close();
    }
  });

  it('refuses paths longer than sun_path both ways instead of truncating them', async () => {
    const long = `/${'q'.repeat(MAX_PATH_BYTES)}`;
    await expect(sendDatagram(long, Buffer.from('x'))).rejects.toThrow(DatagramError);
    await expect(sendDatagram(long, Buffer.from('x'))).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    expect(() =>
      receiveDatagrams(
        long,
        () => {},
        () => {},
      ),
    ).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG', syscall: 'bind' }));
  });

  it('a send to nobody rejects with ECONNREFUSED as code', async () => {
    const l = pathListener('gone.sock');
    l.close();
    await expect(sendDatagram(l.path, Buffer.from('x'))).rejects.toMatchObject({
      code: 'ECONNREFUSED',
      syscall: 'sendto',
    });
  });
});
