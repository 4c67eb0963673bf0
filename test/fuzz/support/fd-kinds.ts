/**
 * File descriptors of every kind a client might pass with SCM_RIGHTS, made
 * fresh for each use: the ends of pipes and socketpairs (whose other end the
 * fuzzer keeps and closes at the end of the case, so the device sees EOF),
 * a FIFO, a pty master, an eventfd, and kinds epoll cannot watch (a regular
 * file, /dev/null, a directory, a memfd) or that make no sense as a stream
 * (a listening socket, another connection to the device itself).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  closeQuietly,
  connectUnix,
  eventfd,
  listenUnix,
  makePipe,
  memfdCreate,
  openPty,
  socketPair,
} from '../../../native-bindings/index.js';

export const FD_KINDS = [
  'pipe-read',
  'pipe-write',
  'socketpair',
  'fifo',
  'pty-master',
  'eventfd',
  'regular-file',
  'dev-null',
  'directory',
  'memfd',
  'listening-socket',
  'device-connection',
] as const;
export type FdKindName = (typeof FD_KINDS)[number];

/** The kinds epoll can watch, which the device therefore takes as a connection's host end. */
export const POLLABLE_KINDS: ReadonlySet<FdKindName> = new Set<FdKindName>(
  FD_KINDS.filter((k) => !['regular-file', 'dev-null', 'directory', 'memfd'].includes(k)),
);

/** Makes fds of any kind in `dir`; `closeAll()` closes every fd it made (the passed copies and the kept ends). */
export class FdZoo {
  private readonly open = new Set<number>();
  private n = 0;

  constructor(
    private readonly dir: string,
    /** The device's own hybrid-vsock socket, for 'device-connection'. */
    private readonly devicePath: string,
  ) {}

  private keep(...fds: number[]): void {
    for (const fd of fds) this.open.add(fd);
  }

  /** A new fd of `kind` (owned by the zoo until `closeAll`). */
  make(kind: FdKindName): number {
    switch (kind) {
      case 'pipe-read':
      case 'pipe-write': {
        const [r, w] = makePipe(true);
        this.keep(r, w);
        return kind === 'pipe-read' ? r : w;
      }
      case 'socketpair': {
        const [a, b] = socketPair(true);
        this.keep(a, b);
        return a;
      }
      case 'fifo': {
        const p = path.join(this.dir, `fifo-${this.n++}`);
        execFileSync('mkfifo', ['-m', '600', p]);
        const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
        fs.rmSync(p);
        this.keep(fd);
        return fd;
      }
      case 'pty-master': {
        const pty = openPty();
        this.keep(pty.master, pty.slave);
        return pty.master;
      }
      case 'eventfd': {
        const fd = eventfd();
        this.keep(fd);
        return fd;
      }
      case 'regular-file': {
        const p = path.join(this.dir, `file-${this.n++}`);
        fs.writeFileSync(p, 'regular file contents\n');
        const fd = fs.openSync(p, 'r+');
        fs.rmSync(p);
        this.keep(fd);
        return fd;
      }
      case 'dev-null': {
        const fd = fs.openSync('/dev/null', 'r+');
        this.keep(fd);
        return fd;
      }
      case 'directory': {
        const fd = fs.openSync(this.dir, 'r');
        this.keep(fd);
        return fd;
      }
      case 'memfd': {
        const fd = memfdCreate('fuzz', 4096);
        this.keep(fd);
        return fd;
      }
      case 'listening-socket': {
        const p = path.join(this.dir, `listen-${this.n++}.sock`);
        const fd = listenUnix(p, 4);
        fs.rmSync(p);
        this.keep(fd);
        return fd;
      }
      case 'device-connection': {
        const fd = connectUnix(this.devicePath);
        this.keep(fd);
        return fd;
      }
    }
  }

  closeAll(): void {
    for (const fd of this.open) closeQuietly(fd);
    this.open.clear();
  }
}
