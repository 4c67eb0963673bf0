/**
 * The generic vhost-user session (session.ts, vring.ts) without a socket or
 * a real fd: requests are decoded messages handed to `handle`, fds are plain
 * numbers the fake environment records (closed, watched, signalled), guest
 * memory is a Buffer, and the device is a recording double. Pins down the
 * handshake answers (features from the layer plus the device's, CONFIG only
 * with a config space, REPLY_ACK only when negotiated), the one code path for
 * SET_VRING_KICK/CALL/ERR (replace and close, NOFD), when a ring is served,
 * the chain loop (used entries, call signalled, a held chain given back when
 * the view is dropped, malformed chains, budgets), a ring that cannot be
 * built (err signalled once), GET_VRING_BASE and RESET_OWNER resetting a
 * live device, refused requests, and `end` releasing everything once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { bits, Feature, ProtocolFeature } from '../../../src/device/transport/vhost-user/features.js';
import {
  decodeConfig,
  encodeConfig,
  encodeMemoryTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  FLAG_NEED_REPLY,
  Req,
  VHOST_USER_VERSION,
  type VhostUserMessage,
  VhostUserProtocolError,
} from '../../../src/device/transport/vhost-user/messages.js';
import {
  QUEUE_BUDGET,
  TRANSPORT_FEATURES,
  VhostUserSession,
} from '../../../src/device/transport/vhost-user/session.js';
import { createLogger } from '../../../src/util/log.js';
import { DriverQueue } from './qemu-sim.js';
import { FakeDevice, FakeEnv, SESSION_RAM, SESSION_UVA } from './session-fakes.js';

const RAM = SESSION_RAM;
const UVA = SESSION_UVA;
const QSIZE = 8;

const msg = (
  request: number,
  payload: Buffer = Buffer.alloc(0),
  fds: number[] = [],
  needReply = false,
): VhostUserMessage => ({
  request,
  flags: VHOST_USER_VERSION | (needReply ? FLAG_NEED_REPLY : 0),
  payload,
  fds,
});
const u64 = (r: VhostUserMessage) => r.payload.readBigUInt64LE(0);
/** A microtask and an event-loop turn: queue runs scheduled now have happened. */
const settle = () => new Promise((r) => setImmediate(r));

let logLines: string[];
const sessions: VhostUserSession[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.end('test over');
});

function setup(device = new FakeDevice()) {
  logLines = [];
  const env = new FakeEnv();
  let ended = 0;
  const session = new VhostUserSession(
    device,
    env,
    createLogger('vhost-user', (l) => logLines.push(l)),
    () => ended++,
  );
  sessions.push(session);
  const queues = [new DriverQueue(env.ram, 0x10000, false), new DriverQueue(env.ram, 0x20000, false)];
  return { env, device, session, queues, ended: () => ended };
}

type Setup = ReturnType<typeof setup>;

/** QEMU's set-up of memory and both rings; kick fds 100+i, call fds 200+i, err fds 300+i. */
function boot({ session, queues }: Setup, features = TRANSPORT_FEATURES): void {
  session.handle(msg(Req.SET_FEATURES, encodeU64(features)));
  const table = encodeMemoryTable([
    { guestPhysAddr: 0n, memorySize: BigInt(RAM), userspaceAddr: BigInt(UVA), mmapOffset: 0n },
  ]);
  session.handle(msg(Req.SET_MEM_TABLE, table, [900]));
  queues.forEach((q, index) => {
    session.handle(msg(Req.SET_VRING_NUM, encodeVringState({ index, num: QSIZE })));
    session.handle(msg(Req.SET_VRING_BASE, encodeVringState({ index, num: 0 })));
    const addr = (a: number) => BigInt(UVA + a);
    session.handle(
      msg(
        Req.SET_VRING_ADDR,
        encodeVringAddr({
          index,
          flags: 0,
          descUserAddr: addr(q.desc),
          usedUserAddr: addr(q.used),
          availUserAddr: addr(q.avail),
          logGuestAddr: 0n,
        }),
      ),
    );
    session.handle(msg(Req.SET_VRING_CALL, encodeVringFd({ index, noFd: false }), [200 + index]));
    session.handle(msg(Req.SET_VRING_ERR, encodeVringFd({ index, noFd: false }), [300 + index]));
    session.handle(msg(Req.SET_VRING_KICK, encodeVringFd({ index, noFd: false }), [100 + index]));
    session.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index, num: 1 })));
  });
}

/** The driver offers `n` one-descriptor writable buffers on queue `q` and kicks. */
function offer(t: Setup, q: number, n: number): number[] {
  const heads = Array.from({ length: n }, (_, i) =>
    t.queues[q]!.offer([{ addr: 0x40000 + 0x1000 * i, len: 64, flags: 2 }]),
  );
  t.env.kick(100 + q);
  return heads;
}

describe('handshake', () => {
  it('offers the layer’s ring bits plus the device’s own, MQ + REPLY_ACK + CONFIG, and the queue count', () => {
    const t = setup();
    t.session.handle(msg(Req.GET_FEATURES));
    t.session.handle(msg(Req.GET_PROTOCOL_FEATURES));
    t.session.handle(msg(Req.GET_QUEUE_NUM));
    const [f, pf, qn] = t.env.replies;
    expect(u64(f!)).toBe(TRANSPORT_FEATURES | bits(40));
    for (const b of [
      Feature.VIRTIO_F_VERSION_1,
      Feature.VIRTIO_RING_F_EVENT_IDX,
      Feature.VIRTIO_RING_F_INDIRECT_DESC,
    ])
      expect(u64(f!) & bits(b)).not.toBe(0n);
    expect(u64(pf!)).toBe(bits(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG));
    expect(u64(qn!)).toBe(2n);
  });

  it('a device without a config space is offered no CONFIG, and GET_CONFIG gets the zero-size error reply', () => {
    const t = setup(new FakeDevice(0n, null));
    t.session.handle(msg(Req.GET_PROTOCOL_FEATURES));
    expect(u64(t.env.replies[0]!)).toBe(bits(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK));
    t.session.handle(msg(Req.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, payload: Buffer.alloc(8) })));
    expect(decodeConfig(t.env.replies[1]!.payload).size).toBe(0);
  });

  it('GET_CONFIG answers the requested window of the device’s config space', () => {
    const t = setup();
    t.session.handle(msg(Req.GET_CONFIG, encodeConfig({ offset: 4, flags: 0, payload: Buffer.alloc(6) })));
    expect(decodeConfig(t.env.replies[0]!.payload).payload.toString()).toBe('456789');
  });

  it('REPLY_ACK: only once negotiated, only for need-reply requests without a reply of their own', () => {
    const t = setup();
    t.session.handle(msg(Req.SET_OWNER, undefined, [], true));
    expect(t.env.replies).toHaveLength(0);
    t.session.handle(msg(Req.SET_PROTOCOL_FEATURES, encodeU64(bits(ProtocolFeature.REPLY_ACK))));
    t.session.handle(msg(Req.SET_OWNER, undefined, [], true));
    t.session.handle(msg(Req.SET_OWNER));
    t.session.handle(msg(Req.GET_QUEUE_NUM, undefined, [], true));
    expect(t.env.replies.map((r) => [r.request, u64(r)])).toEqual([
      [Req.SET_OWNER, 0n],
      [Req.GET_QUEUE_NUM, 2n],
    ]);
  });

  it('SET_FEATURES keeps only what was offered, and warns about the rest', () => {
    const t = setup();
    t.session.handle(msg(Req.SET_FEATURES, encodeU64(TRANSPORT_FEATURES | bits(50))));
    expect(logLines.join('\n')).toMatch(/acked features we did not offer/);
  });
});

describe('SET_VRING_KICK / CALL / ERR', () => {
  it('a new fd replaces the old one, which is closed; NOFD closes the fd that came; extra fds are closed', () => {
    const t = setup();
    t.session.handle(msg(Req.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), [11]));
    t.session.handle(msg(Req.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), [12, 13]));
    expect(t.env.closed).toEqual([13, 11]);
    t.session.handle(msg(Req.SET_VRING_ERR, encodeVringFd({ index: 1, noFd: true }), [14]));
    expect(t.env.closed).toEqual([13, 11, 14]);
    t.session.handle(msg(Req.SET_VRING_KICK, encodeVringFd({ index: 1, noFd: false }), [15]));
    expect([...t.env.watched.keys()]).toEqual([15]);
    t.session.handle(msg(Req.SET_VRING_KICK, encodeVringFd({ index: 1, noFd: false }), [16]));
    expect([...t.env.watched.keys()]).toEqual([16]);
    expect(t.env.closed).toContain(15);
    t.session.handle(msg(Req.SET_VRING_KICK, encodeVringFd({ index: 1, noFd: true })));
    expect(t.env.watched.size).toBe(0);
    expect(logLines.join('\n')).toMatch(/polling mode .* not supported/);
  });

  it('a queue index the device does not have is refused, and the message’s fds are closed', () => {
    const t = setup();
    expect(() =>
      t.session.handle(msg(Req.SET_VRING_CALL, encodeVringFd({ index: 5, noFd: false }), [21])),
    ).toThrow(/queue index 5/);
    expect(t.env.closed).toEqual([21]);
  });

  it('an unsupported request is refused with VhostUserProtocolError', () => {
    const t = setup();
    expect(() => t.session.handle(msg(Req.SET_LOG_BASE, Buffer.alloc(16), [22]))).toThrow(
      VhostUserProtocolError,
    );
    expect(t.env.closed).toEqual([22]);
  });
});

describe('serving rings', () => {
  it('serves a ring once it is mapped, sized, addressed, kicked and enabled: chains used, call signalled', async () => {
    const t = setup();
    boot(t);
    expect(t.env.closed).toEqual([900]); // the memory fd, consumed by the mapping
    const heads = offer(t, 1, 3);
    await settle();
    expect(t.device.queues[1]!.served).toEqual(heads);
    expect(t.queues[1]!.takeUsed()).toEqual(heads.map((id) => ({ id, len: 64 })));
    expect(t.env.signals).toEqual([201]);
    expect(t.device.afterRuns).toEqual([0, 1]); // one run per ring: set-up and kick were one schedule
  });

  it('with PROTOCOL_FEATURES a kicked ring waits for SET_VRING_ENABLE; without, the kick enables it', async () => {
    const t = setup();
    boot(t);
    t.session.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 0 })));
    offer(t, 0, 1);
    await settle();
    expect(t.device.queues[0]!.served).toEqual([]);
    t.session.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 })));
    await settle();
    expect(t.device.queues[0]!.served).toHaveLength(1);

    const u = setup();
    boot(u, bits(Feature.VIRTIO_F_VERSION_1));
    u.session.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 0 })));
    u.session.handle(msg(Req.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [150]));
    offer(u, 0, 1);
    u.env.kick(150);
    await settle();
    expect(u.device.queues[0]!.served).toHaveLength(1);
  });

  it('a chain the handler holds goes back to the ring (used, len 0) when the view is dropped', async () => {
    const t = setup();
    boot(t);
    t.device.queues[0]!.hold = true;
    const [head] = offer(t, 0, 1);
    await settle();
    expect(t.queues[0]!.usedIdx()).toBe(0); // held, not returned empty
    t.session.handle(msg(Req.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 0 })));
    expect(t.queues[0]!.takeUsed()).toEqual([{ id: head, len: 0 }]);
  });

  it('a new memory table drops the views at the index reached and unmaps the old table', async () => {
    const t = setup();
    boot(t);
    offer(t, 1, 2);
    await settle();
    const table = encodeMemoryTable([
      { guestPhysAddr: 0n, memorySize: BigInt(RAM), userspaceAddr: BigInt(UVA), mmapOffset: 0n },
    ]);
    t.session.handle(msg(Req.SET_MEM_TABLE, table, [901]));
    expect(t.env.maps[0]!.mem.closed).toBe(true);
    offer(t, 1, 1);
    await settle();
    expect(t.device.queues[1]!.served).toHaveLength(3);
    t.session.handle(msg(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 })));
    expect(t.env.replies.at(-1)!.payload.readUInt32LE(4)).toBe(3);
  });

  it('a chain pointing outside guest memory is returned used (len 0) and reported to the handler', async () => {
    const t = setup();
    boot(t);
    const bad = t.queues[1]!.offer([{ addr: RAM + 0x1000, len: 64 }]);
    const [good] = offer(t, 1, 1);
    await settle();
    expect(t.queues[1]!.takeUsed()).toEqual([
      { id: bad, len: 0 },
      { id: good, len: 64 },
    ]);
    expect(t.device.queues[1]!.malformedWhy[0]).toMatch(/^q1 queue: chain \d+: .*outside guest memory/);
  });

  it('more chains than the budget: the run yields and the rest is served on the next turn', async () => {
    const t = setup();
    boot(t);
    const q = t.device.queues[1]!;
    let total = 0;
    const serve = q.serve.bind(q);
    q.serve = (chain) => {
      total++;
      t.queues[1]!.offer([{ addr: 0x50000, len: 8, flags: 2 }]); // the driver refills at once
      return serve(chain);
    };
    offer(t, 1, QSIZE);
    await settle();
    expect(total).toBe(QUEUE_BUDGET);
    await settle();
    expect(total).toBeGreaterThan(QUEUE_BUDGET);
  });

  it('a ring that cannot be built over guest memory is logged once and signals its err eventfd', async () => {
    const t = setup();
    boot(t);
    t.session.handle(
      msg(
        Req.SET_VRING_ADDR,
        encodeVringAddr({
          index: 1,
          flags: 0,
          descUserAddr: BigInt(UVA + RAM),
          usedUserAddr: BigInt(UVA),
          availUserAddr: BigInt(UVA),
          logGuestAddr: 0n,
        }),
      ),
    );
    t.env.kick(101);
    await settle();
    t.env.kick(101);
    await settle();
    expect(t.env.signals.filter((fd) => fd === 301)).toHaveLength(1);
    expect(logLines.filter((l) => /queue 1 cannot be set up/.test(l))).toHaveLength(1);
  });
});

describe('stopping and ending', () => {
  it('GET_VRING_BASE stops a used ring, returns its next index, and resets the live device once', async () => {
    const t = setup();
    boot(t);
    offer(t, 1, 2);
    await settle();
    t.session.handle(msg(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 })));
    t.session.handle(msg(Req.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 })));
    expect(t.env.replies.map((r) => [r.payload.readUInt32LE(0), r.payload.readUInt32LE(4)])).toEqual([
      [1, 2],
      [0, 0],
    ]);
    expect(t.device.resets).toEqual(['guest stopped the device']);
    expect(t.env.watched.size).toBe(0);
    expect(t.env.closed).toEqual(expect.arrayContaining([100, 101]));
  });

  it('RESET_OWNER stops every ring at index 0 and resets a live device', async () => {
    const t = setup();
    boot(t);
    offer(t, 1, 2);
    await settle();
    t.session.handle(msg(Req.RESET_OWNER));
    expect(t.device.resets).toEqual(['RESET_OWNER']);
    t.session.handle(msg(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 })));
    expect(t.env.replies.at(-1)!.payload.readUInt32LE(4)).toBe(0);
  });

  it('end() closes every ring fd, unmaps memory, resets and stops the device, once; later kicks do nothing', async () => {
    const t = setup();
    boot(t);
    t.session.end('QEMU disconnected');
    t.session.end('again');
    expect(t.env.closed).toEqual(expect.arrayContaining([100, 101, 200, 201, 300, 301]));
    expect(t.env.maps[0]!.mem.closed).toBe(true);
    expect(t.device.resets).toEqual(['QEMU disconnected']);
    expect(t.device.stops).toBe(1);
    expect(t.ended()).toBe(1);
    t.session.kick(1);
    await settle();
    expect(t.device.queues[1]!.served).toEqual([]);
  });

  it('a kick eventfd that fails to read ends the session with an error', () => {
    const t = setup();
    boot(t);
    t.env.brokenKick = 101;
    t.env.kick(101);
    expect(t.session.closed).toBe(true);
    expect(logLines.join('\n')).toMatch(/kick fd of queue 1: EBADF/);
  });
});
