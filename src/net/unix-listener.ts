/**
 * A listening Unix stream socket served from Node's event loop: binds a
 * socket file only its owner can connect to, admits each accepted
 * connection against the process's access policy (SO_PEERCRED), hands the
 * admitted raw fds over, and removes the file on close. Used by the
 * hybrid-vsock socket, the AF_VSOCK stand-in and the vhost-user backend
 * socket.
 *
 * Binding (bind-private.ts): the file is created 0600 by bind(2) itself,
 * so no other user can connect between bind and a chmod; a path where
 * another process still answers is refused; a stale file (ECONNREFUSED) is
 * replaced, and that is logged. No directory is created: the caller names
 * one that exists.
 *
 * Accepting stops, and new connections wait in the kernel's backlog (a
 * client's connect still succeeds until the backlog is full, then fails
 * with EAGAIN), for as long as any of these holds:
 *   - owner    the owner paused it (`pause()` until `resume()`);
 *   - clients  `maxClients` accepted connections are not done yet: each
 *              counts from its accept until the owner calls the `done`
 *              it was given (the hybrid-vsock socket: until the command is
 *              read; vhost-user: one front-end at a time);
 *   - fds      accept(2) failed with EMFILE or ENFILE (or another error
 *              that is not about one connection): logged once, then one
 *              accept is retried after 10 ms, doubling up to 1 s, until
 *              one works (logged too). Level-triggered readiness would
 *              otherwise call back at once, forever: a busy loop that also
 *              starves the connections whose closing would free fds.
 * So a crowd of idle clients costs at most `maxClients` fds, and running
 * out of fds delays new clients instead of killing or spinning the process.
 */
import fs from 'node:fs';
import os from 'node:os';
import { acceptUnix, closeQuietly, FdWatcher, type SysError } from '../../native-bindings/index.js';
import { admitPeer } from '../access/admit-peer.js';
import type { Logger } from '../util/log.js';
import { listenPrivately } from './bind-private.js';

export interface UnixListenerOptions {
  /**
   * An admitted connection: owns `fd` from the call on (if it throws, the
   * listener closes `fd`). `done` (idempotent) ends the connection's count
   * against `maxClients`.
   */
  onAccept(fd: number, done: () => void): void;
  log: Logger;
  backlog?: number;
  /** Connections at once, each until its `done` (default: no cap). */
  maxClients?: number;
  /** What the counted connections are, for the log line at the cap ("clients waiting for a command"). */
  clientsAre?: string;
}

type Hold = 'owner' | 'clients' | 'fds';

const RETRY_FIRST_MS = 10;
const RETRY_MAX_MS = 1000;

/** accept(2) errors about one connection: the next accept is fine. */
const E = os.constants.errno;
const PER_CONNECTION = new Set([E.ECONNABORTED, E.EPROTO, E.EPERM, E.EINTR]);

export class UnixListener {
  private fd: number;
  private watcher: FdWatcher | null;
  private readonly holds = new Set<Hold>();
  private clients = 0;
  private readonly maxClients: number;
  /** Accepting failed for the process: since when, how often, the next attempt. */
  private retry: { since: number; attempts: number; delayMs: number; timer?: NodeJS.Timeout } | null = null;
  private readonly log: Logger;

  constructor(
    readonly socketPath: string,
    private readonly opts: UnixListenerOptions,
  ) {
    this.log = opts.log;
    this.maxClients = opts.maxClients ?? Number.POSITIVE_INFINITY;
    this.fd = listenPrivately(socketPath, opts.backlog ?? 1024);
    this.watcher = new FdWatcher(this.fd, () => this.acceptAll());
    this.watcher.want(true, false);
  }

  /** Connections accepted and not done yet. */
  get clientCount(): number {
    return this.clients;
  }

  /** Whether accepting is stopped, and why (for operators and tests). */
  get heldBy(): Hold[] {
    return [...this.holds];
  }

  /** Accepts what is pending now, while nothing holds accepting. */
  acceptAll(): void {
    while (this.watcher && this.holds.size === 0) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.fd);
      } catch (err) {
        const e = (err as SysError).errno;
        if (PER_CONNECTION.has(e)) {
          this.log.debug(`accept on ${this.socketPath}: ${(err as Error).message}`);
          continue;
        }
        this.backOff(err as Error);
        return;
      }
      this.recovered();
      if (fd === null) return;
      // A peer the policy does not allow is closed here, with one log line.
      if (admitPeer(fd, this.socketPath)) this.admit(fd);
    }
  }

  private admit(fd: number): void {
    let counted = true;
    const done = () => {
      if (!counted) return;
      counted = false;
      this.clients--;
      if (this.clients < this.maxClients) this.release('clients');
    };
    this.clients++;
    if (this.clients >= this.maxClients) {
      if (this.maxClients > 1)
        this.log.warn(
          `${this.clients} ${this.opts.clientsAre ?? 'clients'} on ${this.socketPath} (the cap): ` +
            'new connections wait in the backlog until one is done',
        );
      this.hold('clients');
    }
    try {
      this.opts.onAccept(fd, done);
    } catch (err) {
      closeQuietly(fd);
      done();
      this.log.error(`cannot serve a connection on ${this.socketPath}: ${(err as Error).message}`);
    }
  }

  /** accept(2) failed for the process (EMFILE, ENFILE, ...): stop, log once, retry with backoff. */
  private backOff(err: Error): void {
    let r = this.retry;
    if (r) {
      r.attempts++;
      r.delayMs = Math.min(r.delayMs * 2, RETRY_MAX_MS);
    } else {
      this.log.warn(
        `accept on ${this.socketPath}: ${err.message}: new connections wait in the backlog; ` +
          `retrying every ${RETRY_FIRST_MS}-${RETRY_MAX_MS} ms until an fd is free`,
      );
      r = { since: Date.now(), attempts: 1, delayMs: RETRY_FIRST_MS };
      this.retry = r;
    }
    this.hold('fds');
    r.timer = setTimeout(() => {
      this.release('fds');
      this.acceptAll();
    }, r.delayMs);
  }

  /** An accept worked (or found nothing pending) after a failure: say so once. */
  private recovered(): void {
    const r = this.retry;
    if (!r) return;
    this.retry = null;
    this.log.info(
      `accepting on ${this.socketPath} again after ${Date.now() - r.since} ms (${r.attempts} failed attempt(s))`,
    );
  }

  private hold(why: Hold): void {
    this.holds.add(why);
    this.update();
  }

  private release(why: Hold): void {
    if (!this.holds.delete(why)) return;
    this.update();
  }

  private update(): void {
    this.watcher?.want(this.holds.size === 0, false);
  }

  /** Stops accepting until `resume()`; new connections wait in the backlog. */
  pause(): void {
    this.hold('owner');
  }

  resume(): void {
    this.release('owner');
  }

  close(): void {
    clearTimeout(this.retry?.timer);
    this.retry = null;
    this.watcher?.close();
    this.watcher = null;
    closeQuietly(this.fd);
    this.fd = -1;
    fs.rmSync(this.socketPath, { force: true });
  }
}
