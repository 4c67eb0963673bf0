// Doubles for the vhost-user session tests (session.test.ts), none with a
// real fd: guest RAM as a Buffer, an environment that records what the
// session does to fds (plain numbers here) and replies, a queue handler that
// records the chains it serves, and a device made of two such queues.

import {
  HOLD_CHAIN,
  type QueueHandler,
  type VhostUserDevice,
} from '../../../src/device/transport/vhost-user/device.js';
import { bits } from '../../../src/device/transport/vhost-user/features.js';
import { GuestMemoryError } from '../../../src/device/transport/vhost-user/memory.js';
import {
  decodeHeader,
  HEADER_SIZE,
  type MemoryRegion,
  type VhostUserMessage,
} from '../../../src/device/transport/vhost-user/messages.js';
import type { MappedMemory, SessionEnv } from '../../../src/device/transport/vhost-user/session-env.js';
import type { DescriptorChain } from '../../../src/device/transport/vhost-user/virtqueue.js';

export const SESSION_RAM = 1 << 20;
/** QEMU's user address of guest-physical 0. */
export const SESSION_UVA = 0x7f00_0000_0000;
const RAM = SESSION_RAM;
const UVA = SESSION_UVA;

/** Guest RAM as a plain Buffer, ring addresses at UVA + offset. */
export class BufferMemory implements MappedMemory {
  closed = false;
  constructor(readonly ram: Buffer) {}
  guest(addr: number | bigint, len: number): Buffer {
    const a = Number(addr);
    if (a + len > this.ram.length) throw new GuestMemoryError(`guest address ${a} is outside guest memory`);
    return this.ram.subarray(a, a + len);
  }
  user(addr: number | bigint, len: number): Buffer {
    return this.guest(Number(addr) - UVA, len);
  }
  close(): void {
    this.closed = true;
  }
}

/** Records what the session does to the outside world; fds are just numbers. */
export class FakeEnv implements SessionEnv {
  readonly ram = Buffer.alloc(RAM);
  replies: VhostUserMessage[] = [];
  closed: number[] = [];
  signals: number[] = [];
  readonly watched = new Map<number, () => void>();
  maps: { regions: readonly MemoryRegion[]; fds: readonly number[]; mem: BufferMemory }[] = [];
  brokenKick = -1;

  send(reply: Buffer): void {
    const h = decodeHeader(reply);
    this.replies.push({ request: h.request, flags: h.flags, payload: reply.subarray(HEADER_SIZE), fds: [] });
  }
  watchKick(fd: number, onKick: () => void): () => void {
    this.watched.set(fd, onKick);
    return () => this.watched.delete(fd);
  }
  readKick(fd: number): void {
    if (fd === this.brokenKick) throw new Error('EBADF');
  }
  signal(fd: number): void {
    this.signals.push(fd);
  }
  mapMemory(regions: readonly MemoryRegion[], fds: readonly number[]): MappedMemory {
    this.closed.push(...fds);
    const mem = new BufferMemory(this.ram);
    this.maps.push({ regions, fds, mem });
    return mem;
  }
  close(fd: number): void {
    if (fd >= 0) this.closed.push(fd);
  }
  /** The guest writes its kick eventfd. */
  kick(fd: number): void {
    this.watched.get(fd)?.();
  }
}

/** A queue handler that takes every chain (or holds them), recording the heads. */
export class RecordingQueue implements QueueHandler {
  served: number[] = [];
  malformedWhy: string[] = [];
  hold = false;
  wants = true;
  constructor(
    readonly name: string,
    readonly quietWhileServing = false,
  ) {}
  wantsChain(): boolean {
    return this.wants;
  }
  serve(chain: DescriptorChain): number {
    if (this.hold) return HOLD_CHAIN;
    this.served.push(chain.head);
    return chain.writableLen;
  }
  malformed(why: string): void {
    this.malformedWhy.push(why);
  }
}

export class FakeDevice implements VhostUserDevice {
  readonly queueCount = 2;
  readonly queues = [new RecordingQueue('q0'), new RecordingQueue('q1', true)];
  resets: string[] = [];
  stops = 0;
  afterRuns: number[] = [];
  constructor(
    readonly features = bits(40),
    readonly config: Buffer | null = Buffer.from('0123456789abcdef'),
  ) {}
  configSpace(): Buffer | null {
    return this.config;
  }
  queue(index: number): QueueHandler {
    return this.queues[index]!;
  }
  start(): void {}
  afterRun(index: number): void {
    this.afterRuns.push(index);
  }
  reset(reason: string): void {
    this.resets.push(reason);
  }
  stop(): void {
    this.stops++;
  }
}
