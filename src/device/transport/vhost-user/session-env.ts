/**
 * The I/O a vhost-user session needs, as one injected interface: writing a
 * reply, watching and reading kick eventfds, signalling call and err
 * eventfds, mapping a memory table, closing fds. The session (session.ts)
 * and its rings (vring.ts) do nothing else to the outside world, so a test
 * can drive them with decoded messages, plain numbers for fds and a Buffer
 * for guest memory, without a socket. `nativeSessionEnv` is the real one,
 * on the front-end's socket.
 */
import {
  closeQuietly,
  eventfdRead,
  eventfdWrite,
  FdWatcher,
  WOULD_BLOCK,
  writeFd,
} from '../../../../native-bindings/index.js';
import { GuestMemory } from './memory.js';
import { type MemoryRegion, VhostUserProtocolError } from './messages.js';
import type { GuestMemoryAccess } from './virtqueue.js';

/** A mapped memory table. */
export interface MappedMemory extends GuestMemoryAccess {
  /** Unmaps it (idempotent). */
  close(): void;
}

export interface SessionEnv {
  /** Writes one reply whole on the front-end's socket; throws VhostUserProtocolError when it cannot. */
  send(reply: Buffer): void;
  /** Calls `onKick` whenever the kick eventfd `fd` is readable; returns the function that stops watching. */
  watchKick(fd: number, onKick: () => void): () => void;
  /** Reads (resets) a kick eventfd's counter; throws on a broken fd. */
  readKick(fd: number): void;
  /** Signals a call or err eventfd; throws on a broken fd. */
  signal(fd: number): void;
  /** Maps a SET_MEM_TABLE (`fds[i]` backs `regions[i]`); consumes every fd, on failure too. */
  mapMemory(regions: readonly MemoryRegion[], fds: readonly number[]): MappedMemory;
  close(fd: number): void;
}

export function nativeSessionEnv(sock: number): SessionEnv {
  return {
    send(reply) {
      const n = writeFd(sock, reply);
      if (n === WOULD_BLOCK || n !== reply.length) {
        throw new VhostUserProtocolError(`could not write a ${reply.length}-byte reply (${n})`);
      }
    },
    watchKick(fd, onKick) {
      const watcher = new FdWatcher(fd, onKick);
      watcher.want(true, false);
      return () => watcher.close();
    },
    readKick: (fd) => void eventfdRead(fd),
    signal: (fd) => void eventfdWrite(fd),
    mapMemory: (regions, fds) => GuestMemory.map(regions, fds),
    close: (fd) => closeQuietly(fd),
  };
}
