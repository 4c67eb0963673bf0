/**
 * Test side of the stream sockets: a socketpair per stream, the launcher gets
 * one end (as the agent gets a vsock connection), the test keeps the other
 * and reads or writes it through a net.Socket, as the host side would.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { countOpenFds, socketPair } from '../../native-bindings/index.js';

export interface StreamEnds {
  /** The end handed to the launcher (it owns it afterwards). */
  agent: number;
  /** The end the test keeps. */
  test: number;
}

export function streamPair(): StreamEnds {
  const [agent, test] = socketPair();
  return { agent, test };
}

export interface Collected {
  bytes: number;
  sha256: string;
  text: string;
}

export interface Collector {
  socket: net.Socket;
  /** Bytes received so far. */
  readonly received: number;
  /** Settles at EOF (the agent shut down or closed its end), after the socket is closed. */
  done: Promise<Collected>;
  /** Text received so far (only kept while below 1 MiB). */
  textSoFar(): string;
}

/** Reads the test end of an output stream to EOF, hashing as it goes. */
export function collect(fd: number, opts: { paused?: boolean } = {}): Collector {
  const socket = new net.Socket({ fd, readable: true, writable: false });
  const hash = createHash('sha256');
  const small: Buffer[] = [];
  let bytes = 0;
  socket.on('data', (d: Buffer) => {
    hash.update(d);
    bytes += d.length;
    if (bytes <= 1 << 20) small.push(d);
  });
  if (opts.paused) socket.pause();
  const done = new Promise<Collected>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('close', () =>
      resolve({ bytes, sha256: hash.digest('hex'), text: Buffer.concat(small).toString('utf8') }),
    );
  });
  return {
    socket,
    get received() {
      return bytes;
    },
    done,
    textSoFar: () => Buffer.concat(small).toString('utf8'),
  };
}

/** A writable net.Socket on the test end of an input stream. */
export function writer(fd: number): net.Socket {
  const s = new net.Socket({ fd, readable: false, writable: true });
  s.on('error', () => {
    // EPIPE when the agent closed the stream: tests look at what the child saw.
  });
  return s;
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves when `pred()` is true, polling every 5 ms; rejects after `ms`. */
export async function until(pred: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Open fds of this process, after letting pending handle closes run. */
export async function openFds(): Promise<number> {
  await sleep(20);
  return countOpenFds();
}

/** Text with the terminal's CRLF turned back into LF. */
export const unCRLF = (s: string) => s.replace(/\r\n/g, '\n');

/** Waits until the text read so far matches `re`. */
export async function untilText(c: Collector, re: RegExp, ms = 5000): Promise<void> {
  await until(() => re.test(c.textSoFar()), ms, `output matching ${re}`);
}

/** Whether `pid` runs (a zombie waiting for init to reap it does not count). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Makes a collector a slow reader: reads for ~2 ms every 10 ms. The returned
 * function stops that and leaves the socket paused (`resume()` it to drain).
 */
export function readSlowly(c: Collector): () => void {
  let pauseTimer: NodeJS.Timeout | undefined;
  const tick = setInterval(() => {
    c.socket.resume();
    pauseTimer = setTimeout(() => c.socket.pause(), 2);
  }, 10);
  return () => {
    clearInterval(tick);
    clearTimeout(pauseTimer);
    c.socket.pause();
  };
}
