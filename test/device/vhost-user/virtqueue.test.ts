/**
 * The test plays the guest driver: it writes descriptor tables and the
 * available ring into a memfd mapping, the device side reads them through
 * GuestMemory, exactly as with QEMU (ring addresses in "user" space, buffer
 * addresses guest-physical).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type Mapping, memfdCreate, mmapShared } from '../../../native-bindings/index.js';
import { GuestMemory } from '../../../src/device/transport/vhost-user/memory.js';
import {
  SplitVirtqueue,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  VirtqueueError,
  vringNeedEvent,
} from '../../../src/device/transport/vhost-user/virtqueue.js';

const RAM = 1 << 20;
const UVA = 0x7f55_0000_0000;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;

interface Desc {
  addr: number;
  len: number;
  flags?: number;
  next?: number;
}

/** The guest driver's side of one split queue. */
class Driver {
  availIdx = 0;
  constructor(
    readonly ram: Buffer,
    readonly size: number,
  ) {}
  writeDesc(i: number, d: Desc, table = DESC): void {
    const o = table + 16 * i;
    this.ram.writeBigUInt64LE(BigInt(d.addr), o);
    this.ram.writeUInt32LE(d.len, o + 8);
    this.ram.writeUInt16LE(d.flags ?? 0, o + 12);
    this.ram.writeUInt16LE(d.next ?? 0, o + 14);
  }
  /** Writes a chain at table slots `first, first+1, ...` linked by NEXT, and makes it available. */
  offer(first: number, descs: Desc[]): void {
    descs.forEach((d, k) => {
      const last = k === descs.length - 1;
      this.writeDesc(first + k, {
        ...d,
        flags: (d.flags ?? 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next: last ? 0 : first + k + 1,
      });
    });
    this.publish(first);
  }
  publish(head: number): void {
    this.ram.writeUInt16LE(head, AVAIL + 4 + 2 * (this.availIdx % this.size));
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.ram.writeUInt16LE(this.availIdx, AVAIL + 2);
  }
  usedIdx(): number {
    return this.ram.readUInt16LE(USED + 2);
  }
  used(n: number): { id: number; len: number } {
    const o = USED + 4 + 8 * (n % this.size);
    return { id: this.ram.readUInt32LE(o), len: this.ram.readUInt32LE(o + 4) };
  }
  set availFlags(f: number) {
    this.ram.writeUInt16LE(f, AVAIL);
  }
  set usedEvent(v: number) {
    this.ram.writeUInt16LE(v, AVAIL + 4 + 2 * this.size);
  }
  get availEvent(): number {
    return this.ram.readUInt16LE(USED + 4 + 8 * this.size);
  }
}

const open: { mem: GuestMemory; backing: Mapping }[] = [];
afterEach(() => {
  for (const o of open.splice(0)) {
    o.mem.close();
    o.backing.unmap();
  }
});

function setup(size = 8, opts: { indirect?: boolean; eventIdx?: boolean; base?: number } = {}) {
  const fd = memfdCreate('guest', RAM);
  const backing = mmapShared(fd, 0, RAM);
  // GuestMemory consumes (closes) the fd; `backing` is the test's own view as the guest.
  const mem = GuestMemory.map(
    [{ guestPhysAddr: 0n, memorySize: BigInt(RAM), userspaceAddr: BigInt(UVA), mmapOffset: 0n }],
    [fd],
  );
  open.push({ mem, backing });
  const drv = new Driver(backing.view, size);
  if (opts.base) drv.availIdx = opts.base;
  const vq = new SplitVirtqueue(mem, {
    size,
    descAddr: BigInt(UVA + DESC),
    availAddr: UVA + AVAIL,
    usedAddr: UVA + USED,
    ...opts,
  });
  return { drv, vq, ram: backing.view };
}

describe('SplitVirtqueue', () => {
  it('pops a chain as readable then writable views into guest memory, and returns it used', () => {
    const { drv, vq, ram } = setup();
    ram.write('header..', 0x10000);
    ram.write('payload', 0x11000);
    drv.offer(0, [
      { addr: 0x10000, len: 8 },
      { addr: 0x11000, len: 7 },
      { addr: 0x20000, len: 4096, flags: VIRTQ_DESC_F_WRITE },
    ]);
    expect(vq.availableCount()).toBe(1);
    const chain = vq.popChain()!;
    expect(chain.head).toBe(0);
    expect(chain.readable.map((b) => b.toString())).toEqual(['header..', 'payload']);
    expect(chain.readableLen).toBe(15);
    expect(chain.writableLen).toBe(4096);
    chain.writable[0]!.write('reply'); // straight into guest memory
    expect(ram.subarray(0x20000, 0x20005).toString()).toBe('reply');
    expect(vq.popChain()).toBeNull();
    vq.pushUsed(chain.head, 5);
    expect(drv.usedIdx()).toBe(1);
    expect(drv.used(0)).toEqual({ id: 0, len: 5 });
    expect(vq.lastAvailIdx).toBe(1);
  });

  it('takes chains in ring order and wraps the 16-bit indices', () => {
    const { drv, vq } = setup(4, { base: 0xfffe });
    for (let round = 0; round < 3; round++) {
      drv.offer(2, [{ addr: 0x10000, len: 1 }]);
      drv.offer(0, [{ addr: 0x10000, len: 2, flags: VIRTQ_DESC_F_WRITE }]);
      const a = vq.popChain()!;
      const b = vq.popChain()!;
      expect([a.head, b.head]).toEqual([2, 0]);
      vq.pushUsed(a.head, 0);
      vq.pushUsed(b.head, 2);
    }
    expect(vq.lastAvailIdx).toBe((0xfffe + 6) & 0xffff);
    expect(drv.usedIdx()).toBe((0xfffe + 6) & 0xffff);
  });

  it('detects a cycle and an overlong chain, consumes the chain and keeps the queue usable', () => {
    const { drv, vq } = setup(4);
    drv.writeDesc(0, { addr: 0x10000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    drv.writeDesc(1, { addr: 0x10000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    drv.publish(0);
    let err: unknown;
    try {
      vq.popChain();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VirtqueueError);
    expect((err as VirtqueueError).head).toBe(0);
    expect((err as Error).message).toMatch(/loop/);
    vq.pushUsed(0, 0);
    // A good chain afterwards still works.
    drv.offer(2, [{ addr: 0x10000, len: 1 }]);
    expect(vq.popChain()!.head).toBe(2);
    expect(vq.broken).toBeNull();
  });

  it('rejects descriptors outside guest memory, bad indices, and readable-after-writable', () => {
    const { drv, vq } = setup(4);
    drv.offer(0, [{ addr: RAM - 8, len: 16 }]);
    expect(() => vq.popChain()).toThrow(VirtqueueError);
    drv.offer(0, [{ addr: 2 ** 62, len: 1 }]);
    expect(() => vq.popChain()).toThrow(/outside guest memory/);
    drv.writeDesc(0, { addr: 0x10000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 9 });
    drv.publish(0);
    expect(() => vq.popChain()).toThrow(/descriptor index 9/);
    drv.publish(7);
    expect(() => vq.popChain()).toThrow(/head index 7/);
    drv.offer(0, [
      { addr: 0x10000, len: 1, flags: VIRTQ_DESC_F_WRITE },
      { addr: 0x10000, len: 1 },
    ]);
    expect(() => vq.popChain()).toThrow(/readable descriptor after a writable/);
    expect(vq.popChain()).toBeNull();
    expect(vq.lastAvailIdx).toBe(5);
  });

  it('breaks the queue when avail.idx runs more than size ahead', () => {
    const { drv, vq, ram } = setup(4);
    ram.writeUInt16LE(9, AVAIL + 2);
    expect(() => vq.popChain()).toThrow(VirtqueueError);
    expect(vq.broken).toMatch(/ahead/);
    drv.availIdx = 0;
    expect(() => vq.popChain()).toThrow(VirtqueueError);
  });

  it('refuses rings outside guest memory and bad sizes', () => {
    const { vq } = setup(4);
    expect(vq.size).toBe(4);
    const mem = GuestMemory.empty();
    expect(() => new SplitVirtqueue(mem, { size: 4, descAddr: UVA, availAddr: UVA, usedAddr: UVA })).toThrow(
      /outside guest memory/,
    );
    expect(() => new SplitVirtqueue(mem, { size: 6, descAddr: 0, availAddr: 0, usedAddr: 0 })).toThrow(
      /bad queue size/,
    );
  });

  it('follows indirect tables when negotiated, and rejects them otherwise', () => {
    const { drv, vq, ram } = setup(4, { indirect: true });
    const TABLE = 0x8000;
    ram.write('req', 0x10000);
    drv.writeDesc(0, { addr: 0x10000, len: 3, flags: VIRTQ_DESC_F_NEXT, next: 1 }, TABLE);
    drv.writeDesc(1, { addr: 0x20000, len: 64, flags: VIRTQ_DESC_F_WRITE }, TABLE);
    drv.writeDesc(3, { addr: TABLE, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
    drv.publish(3);
    const chain = vq.popChain()!;
    expect(chain.head).toBe(3);
    expect(chain.readable[0]!.toString()).toBe('req');
    expect(chain.writableLen).toBe(64);
    // A cycle inside the indirect table.
    drv.writeDesc(1, { addr: 0x20000, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 }, TABLE);
    drv.publish(3);
    expect(() => vq.popChain()).toThrow(/loop/);
    // Indirect with NEXT, a nested one, and a table not a multiple of 16.
    drv.writeDesc(2, { addr: TABLE, len: 32, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 0 });
    drv.publish(2);
    expect(() => vq.popChain()).toThrow(/with NEXT/);
    drv.writeDesc(0, { addr: TABLE, len: 16, flags: VIRTQ_DESC_F_INDIRECT }, TABLE);
    drv.publish(3);
    expect(() => vq.popChain()).toThrow(/nested/);
    drv.writeDesc(1, { addr: TABLE, len: 24, flags: VIRTQ_DESC_F_INDIRECT });
    drv.publish(1);
    expect(() => vq.popChain()).toThrow(/24 bytes/);

    const plain = setup(4).drv;
    const plainVq = new SplitVirtqueue(open.at(-1)!.mem, {
      size: 4,
      descAddr: UVA + DESC,
      availAddr: UVA + AVAIL,
      usedAddr: UVA + USED,
    });
    plain.writeDesc(0, { addr: TABLE, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
    plain.publish(0);
    expect(() => plainVq.popChain()).toThrow(/without INDIRECT_DESC/);
  });

  it('honours VIRTQ_AVAIL_F_NO_INTERRUPT and sets NO_NOTIFY on request (no EVENT_IDX)', () => {
    const { drv, vq, ram } = setup(4);
    drv.offer(0, [{ addr: 0x10000, len: 1 }]);
    vq.pushUsed(vq.popChain()!.head, 0);
    expect(vq.needsNotify()).toBe(true);
    drv.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    expect(vq.needsNotify()).toBe(false);
    vq.disableNotification();
    expect(ram.readUInt16LE(USED) & VIRTQ_USED_F_NO_NOTIFY).toBe(1);
    expect(vq.enableNotification()).toBe(false);
    expect(ram.readUInt16LE(USED) & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
    drv.offer(1, [{ addr: 0x10000, len: 1 }]);
    expect(vq.enableNotification()).toBe(true); // arrived meanwhile: process before sleeping
  });

  it('implements EVENT_IDX: writes avail_event, interrupts only past used_event', () => {
    const { drv, vq } = setup(8, { eventIdx: true });
    expect(vq.enableNotification()).toBe(false);
    expect(drv.availEvent).toBe(0);
    for (let i = 0; i < 3; i++) drv.offer(i, [{ addr: 0x10000, len: 1 }]);
    const heads = [vq.popChain()!, vq.popChain()!, vq.popChain()!].map((c) => c.head);
    expect(drv.availEvent).toBe(3); // the driver kicks when it makes entry 3 available
    drv.usedEvent = 1; // the driver wants an interrupt once used.idx passes 1
    vq.pushUsed(heads[0]!, 0);
    expect(vq.needsNotify()).toBe(true); // first decision always notifies
    vq.pushUsed(heads[1]!, 0); // used.idx 1 -> 2 crosses used_event 1
    expect(vq.needsNotify()).toBe(true);
    vq.pushUsed(heads[2]!, 0); // 2 -> 3: driver asked for nothing more
    expect(vq.needsNotify()).toBe(false);
    drv.usedEvent = 3;
    drv.offer(0, [{ addr: 0x10000, len: 1 }]);
    vq.pushUsed(vq.popChain()!.head, 0); // 3 -> 4 crosses 3
    expect(vq.needsNotify()).toBe(true);
  });

  it('vring_need_event matches the virtio definition, across wrap-around', () => {
    expect(vringNeedEvent(5, 6, 5)).toBe(true);
    expect(vringNeedEvent(5, 5, 4)).toBe(false);
    expect(vringNeedEvent(0xffff, 1, 0xfffe)).toBe(true);
    expect(vringNeedEvent(2, 1, 0xfffe)).toBe(false);
  });
});
