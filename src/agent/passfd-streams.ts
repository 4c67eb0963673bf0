/**
 * The agent's passfd streams: connections accepted on `passfd_listener_port`,
 * keyed by their peer (host) port, waiting for the request that names them.
 *
 * The race Kata met: the runtime's ExecProcess can arrive before the listener
 * has accepted the stream it names (the passfd and the RPC travel on
 * different connections). Kata retried 3×100 ms and gave up. Here `take`
 * waits, event-driven, until the stream arrives or a bound passes (default
 * 10 s); and the other way round, a stream that nobody claims within the same
 * bound is closed, so a runtime that passed fds and then died leaks nothing.
 */
import { closeQuietly } from '../../native-bindings/index.js';
import type { Logger } from '../util/log.js';

export class StreamWaitError extends Error {
  constructor(
    readonly port: number,
    waitedMs: number,
  ) {
    super(`no passfd stream from host port ${port} within ${waitedMs} ms`);
    this.name = 'StreamWaitError';
  }
}

interface Parked {
  fd: number;
  timer: NodeJS.Timeout;
}

interface Waiter {
  resolve: (fd: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class PassfdStreams {
  private readonly parked = new Map<number, Parked>();
  private readonly waiters = new Map<number, Waiter>();

  constructor(
    private readonly waitMs: number,
    private readonly log: Logger,
  ) {}

  get parkedCount(): number {
    return this.parked.size;
  }

  /** A stream was accepted from host port `peerPort`; the registry owns `fd` now. */
  add(peerPort: number, fd: number): void {
    const waiter = this.waiters.get(peerPort);
    if (waiter) {
      this.waiters.delete(peerPort);
      clearTimeout(waiter.timer);
      waiter.resolve(fd);
      return;
    }
    const old = this.parked.get(peerPort);
    if (old) {
      // Host ports are unique while a connection lives: an old entry is a dead one.
      clearTimeout(old.timer);
      closeQuietly(old.fd);
    }
    const timer = setTimeout(() => {
      if (this.parked.get(peerPort)?.fd !== fd) return;
      this.parked.delete(peerPort);
      closeQuietly(fd);
      this.log.warn(`closing passfd stream from host port ${peerPort}: unclaimed for ${this.waitMs} ms`);
    }, this.waitMs);
    timer.unref();
    this.parked.set(peerPort, { fd, timer });
  }

  /** The stream from host `port`, now or as soon as it is accepted; rejects after the bound. */
  take(port: number): Promise<number> {
    const p = this.parked.get(port);
    if (p) {
      this.parked.delete(port);
      clearTimeout(p.timer);
      return Promise.resolve(p.fd);
    }
    if (this.waiters.has(port))
      return Promise.reject(new Error(`host port ${port} is already being waited for`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(port);
        reject(new StreamWaitError(port, this.waitMs));
      }, this.waitMs);
      this.waiters.set(port, { resolve, reject, timer });
    });
  }

  /** Closes every parked stream and fails every waiter. */
  close(): void {
    for (const [, p] of this.parked) {
      clearTimeout(p.timer);
      closeQuietly(p.fd);
    }
    this.parked.clear();
    for (const [port, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new StreamWaitError(port, 0));
    }
    this.waiters.clear();
  }
}
