/**
 * Support for the end-to-end suite: one embedded stack (real `vmm` + `agent`
 * from dist/) per test file, a Broker in the test process, and the test
 * playing containerd around it: it makes the FIFOs (mkfifo), opens its own
 * ends after `broker.start` (reader O_RDONLY|O_NONBLOCK, writer
 * O_WRONLY|O_NONBLOCK), hashes what it reads and writes.
 *
 * Data is a deterministic pattern (a random 1 MiB block from a file, then
 * its counter line, repeated), so a shell in the container produces exactly
 * what the test expects without the test having to see it twice, and lost,
 * duplicated or reordered blocks change the hash.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { GUARDIAN_TITLE } from '../../src/agent/guardian.js';
import { Broker, type BrokeredProcess } from '../../src/broker/broker.js';
import { type EmbeddedStack, startEmbeddedStack } from '../../src/broker/embedded-stack.js';
import type { FifoPaths } from '../../src/broker/fifo-set.js';
import { type Config, defaultConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/util/log.js';
import { tmpDir } from '../support/cli.js';

export const MiB = 1024 * 1024;
export const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;

export function e2eConfig(passfd: boolean): Config {
  const c = defaultConfig();
  c.runtime.use_passfd_io = passfd;
  return c;
}

export const IO_PATHS = [
  { name: 'passfd', passfd: true },
  { name: 'rpc', passfd: false },
] as const;

export interface E2e {
  stack: EmbeddedStack;
  broker: Broker;
  config: Config;
  /** Scratch directory of this file (FIFOs, pattern sources, outputs). */
  dir: string;
  nextId(prefix?: string): string;
  stop(): Promise<void>;
}

export async function startE2e(passfd: boolean, agentArgs: string[] = []): Promise<E2e> {
  const config = e2eConfig(passfd);
  const stack = await startEmbeddedStack({ config, agentArgs });
  const broker = new Broker({ hvsockPath: stack.hvsockPath, config, log: createLogger('e2e-broker') });
  const dir = tmpDir('passfd-e2e-');
  let n = 0;
  return {
    stack,
    broker,
    config,
    dir,
    nextId: (prefix = 'c') => `${prefix}${process.pid}-${n++}`,
    stop: async () => {
      await broker.close();
      await stack.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** containerd-style FIFOs `<dir>/<id>-stdin|stdout|stderr` (mkfifo). */
export interface Fifos {
  stdin: string;
  stdout: string;
  stderr: string | undefined;
}

export function makeFifos(dir: string, id: string, withStderr = true): Fifos {
  const f = {
    stdin: path.join(dir, `${id}-stdin`),
    stdout: path.join(dir, `${id}-stdout`),
    stderr: withStderr ? path.join(dir, `${id}-stderr`) : undefined,
  };
  for (const p of Object.values(f)) if (p) execFileSync('mkfifo', ['-m', '600', p]);
  return f;
}

export function removeFifos(f: FifoPaths): void {
  for (const p of Object.values(f)) if (p) fs.rmSync(p, { force: true });
}

/** A FIFO reader as containerd opens it, hashing every byte; `done` resolves at EOF. */
export class HashingReader {
  readonly socket: net.Socket;
  bytes = 0;
  private readonly hash = createHash('sha256');
  readonly done: Promise<{ bytes: number; hash: string }>;
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  text = '';
  constructor(
    fifo: string,
    private readonly keepText = false,
  ) {
    this.socket = new net.Socket({
      fd: fs.openSync(fifo, O_RDONLY | O_NONBLOCK),
      readable: true,
      writable: false,
    });
    this.socket.on('data', (d: Buffer) => {
      this.bytes += d.length;
      this.hash.update(d);
      if (this.keepText) this.text += d.toString('latin1');
      for (const w of this.waiters.filter((x) => this.bytes >= x.n)) w.resolve();
    });
    this.done = new Promise((resolve, reject) => {
      this.socket.on('end', () => resolve({ bytes: this.bytes, hash: this.hash.digest('hex') }));
      this.socket.on('error', reject);
    });
  }
  /** Resolves once at least `n` bytes have been read (bounded). */
  atLeast(n: number, timeoutMs = 20_000): Promise<void> {
    if (this.bytes >= n) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => this.waiters.push({ n, resolve })),
      timeoutMs,
      `reader: ${n} bytes (have ${this.bytes})`,
    );
  }
  close(): void {
    this.socket.destroy();
  }
}

/** containerd's stdin writer: O_WRONLY|O_NONBLOCK (succeeds at once: the broker's keeper is a reader). */
export function openWriter(fifo: string): net.Socket {
  const s = new net.Socket({ fd: fs.openSync(fifo, O_WRONLY | O_NONBLOCK), readable: false, writable: true });
  return s;
}

/** Writes every chunk with backpressure, ends and closes the writer; resolves the SHA-256 and byte count. */
export async function writeAndClose(
  sock: net.Socket,
  chunks: Iterable<Buffer>,
): Promise<{ bytes: number; hash: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  const failed = new Promise<never>((_, reject) => sock.once('error', reject));
  for (const c of chunks) {
    h.update(c);
    bytes += c.length;
    if (!sock.write(c)) await Promise.race([new Promise((r) => sock.once('drain', r)), failed]);
  }
  await Promise.race([new Promise<void>((r) => sock.end(r)), failed]);
  sock.destroy();
  return { bytes, hash: h.digest('hex') };
}

/** The deterministic data pattern: block i = <1 MiB random source> + `${i}\n`. */
export class Pattern {
  readonly src: Buffer;
  readonly file: string;
  constructor(dir: string, name: string, blockSize = MiB) {
    this.src = randomBytes(blockSize);
    this.file = path.join(dir, `${name}.src`);
    fs.writeFileSync(this.file, this.src);
  }
  *chunks(blocks: number): Generator<Buffer> {
    for (let i = 0; i < blocks; i++) {
      yield this.src;
      yield Buffer.from(`${i}\n`);
    }
  }
  size(blocks: number): number {
    let n = 0;
    for (let i = 0; i < blocks; i++) n += this.src.length + `${i}\n`.length;
    return n;
  }
  hash(blocks: number): string {
    const h = createHash('sha256');
    for (const c of this.chunks(blocks)) h.update(c);
    return h.digest('hex');
  }
  /**
   * A POSIX sh loop writing `blocks` blocks to its stdout; `progress` (a file)
   * gets the number of blocks written so far, `pause` a `sleep` between blocks.
   */
  shell(blocks: number, opts: { progress?: string; pause?: string } = {}): string {
    const prog = opts.progress ? ` echo $((i+1)) > '${opts.progress}';` : '';
    const pause = opts.pause ? ` sleep ${opts.pause};` : '';
    return `i=0; while [ $i -lt ${blocks} ]; do cat '${this.file}'; echo $i;${prog}${pause} i=$((i+1)); done`;
  }
}

/** A process started through the broker with the test holding containerd's ends of its FIFOs. */
export interface Session {
  proc: BrokeredProcess;
  fifos: Fifos;
  stdout: HashingReader;
  stderr: HashingReader | null;
  stdin: net.Socket;
}

export async function startSession(
  e: E2e,
  args: string[],
  opts: { keepText?: boolean; terminal?: boolean } = {},
): Promise<Session> {
  const id = e.nextId();
  const fifos = makeFifos(e.dir, id, !opts.terminal);
  const proc = await e.broker.start({
    containerId: id,
    args,
    fifos,
    ...(opts.terminal ? { terminal: true } : {}),
  });
  const stdout = new HashingReader(fifos.stdout, opts.keepText);
  const stderr = fifos.stderr ? new HashingReader(fifos.stderr, opts.keepText) : null;
  const stdin = openWriter(fifos.stdin);
  stdin.on('error', () => {});
  return { proc, fifos, stdout, stderr, stdin };
}

/** containerd's side of "no more stdin": close our writer, then CloseStdin. */
export async function endStdin(s: Session, chunks: Iterable<Buffer> = []) {
  const r = await writeAndClose(s.stdin, chunks);
  await s.proc.closeStdin();
  return r;
}

export function finishSession(s: Session): void {
  s.stdout.close();
  s.stderr?.close();
  s.stdin.destroy();
  removeFifos(s.fifos);
}

/**
 * Reads what a non-blocking fd holds right now, synchronously (no await, so
 * nothing else in this process runs meanwhile): the chunks, their total, and
 * whether the reads ended at EOF (every writer gone) rather than EAGAIN.
 * Bounded at `maxReads` reads of 1 MiB.
 */
export function drainNow(fd: number, maxReads = 1024): { chunks: Buffer[]; bytes: number; eof: boolean } {
  const chunks: Buffer[] = [];
  let bytes = 0;
  const buf = Buffer.alloc(MiB);
  for (let i = 0; i < maxReads; i++) {
    let n: number;
    try {
      n = fs.readSync(fd, buf);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
    if (n === 0) return { chunks, bytes, eof: true };
    chunks.push(Buffer.from(buf.subarray(0, n)));
    bytes += n;
  }
  return { chunks, bytes, eof: false };
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, bound]).finally(() => clearTimeout(t));
}

/** Bounded wait for a condition on OS state the test cannot get an event for (a file's size). */
export async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function fileSize(p: string): number {
  try {
    return fs.statSync(p).size;
  } catch {
    return 0;
  }
}

/** Direct children of `pid` (all threads). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const txt = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (txt) out.push(...txt.split(/\s+/).map(Number));
    } catch {
      // thread gone
    }
  }
  // The agent's process guardian lives as long as the agent: not a leak.
  return out.filter((p) => !readCmdline(p).includes(GUARDIAN_TITLE));
}

function readCmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}
