/**
 * Mutation fuzzing of a running `vmm --vhost-user` through its vhost-user
 * socket: QEMU's start-up sequence cut short, its messages mutated byte by
 * byte or sent with the wrong fds (none, too many, every kind, a memfd too
 * small and unsealable), foreign requests inserted, then a guest driver
 * sending random vsock packets and scribbling over its rings, and an abrupt
 * close (cases: vhost-user-cases.ts).
 *
 * After every case: the vmm is alive and its fd count is back to the
 * warmed-up baseline within 5 s (a case that leaks or kills it fails and is
 * shrunk to a minimal input; see support/runner.ts for the seed and replay).
 * After the run: a fresh front-end boots and connects a guest stream, fds
 * are at the baseline, RSS is within RSS_MARGIN of the warmed-up baseline.
 *
 * CI budget: BUDGET_MS of search with the fixed seed; PASSFD_FUZZ_BUDGET_MS
 * sets the search time for longer runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFd, sendWithFds, WOULD_BLOCK } from '../../native-bindings/index.js';
import { bits, Feature, ProtocolFeature } from '../../src/device/transport/vhost-user/features.js';
import {
  encodeConfig,
  encodeMemoryTable,
  encodeRequest,
  encodeU64,
  encodeVringFd,
  encodeVringState,
  Req,
} from '../../src/device/transport/vhost-user/messages.js';
import { encodeHeader, makeHeader, VSOCK_HDR_SIZE, type VsockOp } from '../../src/protocol/vsock-packet.js';
import { FakeQemu, QSIZE, qemuMemoryTable, RAM, vringAddrOf } from '../device/vhost-user/qemu-sim.js';
import { stopAll } from '../support/cli.js';
import { MiB } from './support/process-health.js';
import { fuzz, fuzzSettings, fuzzTimeout } from './support/runner.js';
import { GUEST_CID, VhostUserTarget } from './support/vhost-user-target.js';
import {
  type FdKind,
  type GuestAction,
  mutateMessage,
  type VhostUserCase,
  vhostUserCaseArb,
} from './vhost-user-cases.js';

const BUDGET_MS = 20_000;
/** Resident memory the vmm may keep over its warmed-up baseline after a run (V8 returns heap lazily). */
const RSS_MARGIN = 64 * MiB;

const settings = fuzzSettings(BUDGET_MS);
const target = new VhostUserTarget();

beforeAll(async () => {
  await target.ensure();
});

afterAll(async () => {
  await target.stop();
  await stopAll();
});

/** One message as QEMU would send it: its bytes and where its fds come from. */
interface Message {
  bytes: Buffer;
  fds: (number | FdKind)[];
}

/** QEMU 7.2's start-up sequence for the stand-in QEMU `q` (as qemu-sim.ts `boot` sends it, replies not awaited). */
function startUp(q: FakeQemu): Message[] {
  const m = (req: number, payload?: Buffer, fds: (number | FdKind)[] = [], needReply = false): Message => ({
    bytes: encodeRequest(req, payload, needReply),
    fds,
  });
  const queues = [q.rx, q.tx];
  return [
    m(Req.GET_FEATURES),
    m(Req.GET_PROTOCOL_FEATURES),
    m(
      Req.SET_PROTOCOL_FEATURES,
      encodeU64(bits(ProtocolFeature.CONFIG, ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK)),
    ),
    m(Req.GET_QUEUE_NUM),
    m(Req.SET_OWNER),
    m(Req.GET_FEATURES),
    ...[0, 1].flatMap((i) => [
      m(Req.SET_VRING_CALL, encodeVringFd({ index: i, noFd: false }), ['eventfd']),
      m(Req.SET_VRING_ERR, encodeVringFd({ index: i, noFd: false }), ['eventfd']),
    ]),
    m(Req.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, payload: Buffer.alloc(8) })),
    m(Req.SET_FEATURES, encodeU64(bits(Feature.VIRTIO_F_VERSION_1, Feature.VHOST_USER_F_PROTOCOL_FEATURES))),
    m(Req.SET_MEM_TABLE, encodeMemoryTable(qemuMemoryTable()), ['ram', 'ram'], true),
    ...queues.flatMap((dq, i) => [
      m(Req.SET_VRING_NUM, encodeVringState({ index: i, num: QSIZE })),
      m(Req.SET_VRING_BASE, encodeVringState({ index: i, num: 0 })),
      m(Req.SET_VRING_ADDR, vringAddrOf(i, dq)),
      m(Req.SET_VRING_KICK, encodeVringFd({ index: i, noFd: false }), [dq.kick]),
    ]),
    ...[0, 1].map((i) => m(Req.SET_VRING_ENABLE, encodeVringState({ index: i, num: 1 }))),
    ...queues.map((dq, i) => m(Req.SET_VRING_CALL, encodeVringFd({ index: i, noFd: false }), [dq.call])),
  ];
}

/** The case's messages: the start-up sequence cut, mutated, with foreign messages inserted. */
function messagesOf(c: VhostUserCase, q: FakeQemu): Message[] {
  const seq = startUp(q);
  for (const e of c.edits) {
    const i = e.at % seq.length;
    seq[i] = { bytes: mutateMessage(seq[i]!.bytes, e.seed), fds: e.fds ?? seq[i]!.fds };
  }
  const sent = seq.slice(0, Math.min(c.sent, seq.length));
  for (const f of c.foreign) {
    const at = f.at % (sent.length + 1);
    sent.splice(at, 0, { bytes: encodeRequest(f.request, f.payload, f.needReply), fds: f.fds });
  }
  return sent;
}

/** Reads and drops whatever the backend replied so far (the socket is non-blocking). */
function drain(q: FakeQemu): void {
  const buf = Buffer.alloc(4096);
  for (;;) {
    const n = readFd(q.sock, buf, 0, buf.length);
    if (n === WOULD_BLOCK || n === 0) return;
  }
}

/** What the guest driver does; actions whose buffers would not fit in the fake RAM are skipped. */
function guestAct(q: FakeQemu, a: GuestAction): void {
  const queue = a.kind === 'rx-buffers' ? q.rx : a.kind === 'packet' ? q.tx : a.queue === 0 ? q.rx : q.tx;
  try {
    switch (a.kind) {
      case 'packet': {
        const hdr = makeHeader({
          srcCid: GUEST_CID,
          dstCid: a.dstCid,
          srcPort: a.srcPort,
          dstPort: a.dstPort,
          op: a.op as VsockOp,
          bufAlloc: 64 * 1024,
        });
        const h = { ...hdr, type: a.type, len: a.len < 0 ? a.data.length : a.len };
        const at = q.alloc(VSOCK_HDR_SIZE + a.data.length);
        if (at + VSOCK_HDR_SIZE + a.data.length > RAM) return;
        encodeHeader(h, q.ram, at);
        a.data.copy(q.ram, at + VSOCK_HDR_SIZE);
        const descs = a.contiguous
          ? [{ addr: at, len: VSOCK_HDR_SIZE + a.data.length }]
          : [
              { addr: at, len: VSOCK_HDR_SIZE },
              ...(a.data.length > 0 ? [{ addr: at + VSOCK_HDR_SIZE, len: a.data.length }] : []),
            ];
        q.tx.offer(descs);
        break;
      }
      case 'scribble': {
        const base = a.area === 'desc' ? queue.desc : a.area === 'avail' ? queue.avail : queue.used;
        a.bytes.copy(q.ram, base + a.offset);
        break;
      }
      case 'rx-buffers':
        for (let i = 0; i < a.count; i++) q.postRx(a.size);
        break;
    }
  } catch (err) {
    if (err instanceof RangeError) return; // past the end of the fake RAM: the test's own limit
    throw err;
  }
  queue.doorbell();
}

async function runCase(c: VhostUserCase): Promise<void> {
  const q = new FakeQemu(target.socketPath);
  try {
    const messages = messagesOf(c, q);
    for (const msg of messages) {
      if (msg.bytes.length === 0) continue; // truncated to nothing: there is nothing to send
      const fds = msg.fds.map((f) =>
        typeof f === 'number' ? f : f === 'ram' ? q.memfd : target.zoo.make(f),
      );
      const n = sendWithFds(q.sock, msg.bytes, fds);
      if (n === WOULD_BLOCK) break; // the backend stopped reading (it ended the session)
      drain(q);
    }
    for (const a of c.guest) guestAct(q, a);
    await new Promise((r) => setTimeout(r, 20));
    drain(q);
  } catch (err) {
    // The backend closing the socket mid-case (EPIPE, ECONNRESET) is its right; anything else is ours.
    if (!/EPIPE|ECONNRESET/.test((err as Error).message)) throw err;
  } finally {
    q.close();
    target.endCase();
  }
  target.health.assertAlive();
  await target.health.assertFdsBack();
}

async function guarded(c: VhostUserCase): Promise<void> {
  try {
    await target.ensure();
    await runCase(c);
  } catch (err) {
    target.markDirty();
    throw err;
  }
}

describe('vmm fuzzing', () => {
  it('vhost-user socket: a mutated start-up sequence, wrong fds, foreign requests, hostile guest rings, abrupt closes', {
    timeout: fuzzTimeout(settings),
  }, async () => {
    const r = await fuzz(
      'vhost-user socket',
      'test/fuzz/vhost-user.fuzz.test.ts',
      vhostUserCaseArb,
      guarded,
      settings,
    );
    target.health.assertAlive();
    await target.freshSession();
    await target.health.assertFdsBack();
    expect(target.health.assertRssWithin(RSS_MARGIN)).toBeGreaterThan(0);
    console.log(
      `vhost-user socket fuzz: ${r.cases} cases in ${r.elapsedMs} ms (seed ${settings.seed}), ` +
        `${target.restarts} restart(s); ${target.health.describe()}`,
    );
  });
});
