/**
 * The loopback transport: joins the device to the software guest stack in
 * the same process, packet by packet, with no encoding and no queue between
 * them — each side's RX queue *is* the queue.
 *
 * A pump moves packets both ways until neither side has any due, in one
 * shared buffer: the device reads a host fd straight into it, the guest stack
 * writes it straight to a guest process's socket (and the reverse), so a
 * chunk costs one read(2) and one write(2), as a guest kernel copying into
 * its own buffers would. The pump runs as a microtask after the event that
 * made packets due (latency), and yields to the event loop after a budget of
 * packets (fairness with every other fd this process serves).
 */
import { HOST_CID } from '../../../protocol/vsock-packet.js';
import type { Logger } from '../../../util/log.js';
import { LOOPBACK_MAX_PAYLOAD, MAX_WAITING_CLIENTS } from '../../defaults.js';
import type { GuestTransport, VsockBackend } from '../transport.js';
import { LoopbackGuestStack } from './guest-stack.js';
import { StandinServer } from './standin-server.js';

/** Packets moved per pump run before yielding to the event loop. */
const PUMP_BUDGET = 256;

export class LoopbackTransport implements GuestTransport {
  readonly kind = 'loopback';
  readonly stack: LoopbackGuestStack;
  readonly standin: StandinServer;
  private backend: VsockBackend | null = null;
  private readonly buf = Buffer.allocUnsafe(LOOPBACK_MAX_PAYLOAD);
  private scheduled = false;
  private pumping = false;
  private closed = false;

  constructor(
    readonly guestCid: number,
    guestDir: string,
    log: Logger,
    /** Guest processes connected to the stand-in but without their request yet, held at once. */
    maxWaitingClients = MAX_WAITING_CLIENTS,
  ) {
    this.stack = new LoopbackGuestStack(guestCid, HOST_CID, log.child('guest'));
    this.standin = new StandinServer(guestDir, this.stack, log.child('standin'), maxWaitingClients);
  }

  attach(backend: VsockBackend): void {
    this.backend = backend;
    backend.onRxPending = () => this.schedule();
    this.stack.endpoint.onRxPending = () => this.schedule();
    this.standin.start();
  }

  private schedule(): void {
    if (this.scheduled || this.pumping || this.closed) return;
    this.scheduled = true;
    queueMicrotask(() => this.pump());
  }

  private pump(): void {
    this.scheduled = false;
    const device = this.backend;
    if (!device || this.closed) return;
    const guest = this.stack.endpoint;
    this.pumping = true;
    let budget = PUMP_BUDGET;
    try {
      while (budget > 0) {
        let moved = false;
        const toGuest = device.nextPacket(this.buf);
        if (toGuest) {
          guest.handlePacket(toGuest, toGuest.len > 0 ? this.buf.subarray(0, toGuest.len) : undefined);
          moved = true;
          budget--;
        }
        const toHost = guest.nextPacket(this.buf);
        if (toHost) {
          device.handlePacket(toHost, toHost.len > 0 ? this.buf.subarray(0, toHost.len) : undefined);
          moved = true;
          budget--;
        }
        if (!moved) break;
      }
    } finally {
      this.pumping = false;
    }
    if (budget <= 0 && (device.hasPendingRx() || guest.hasPendingRx())) {
      this.scheduled = true;
      setImmediate(() => this.pump());
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.standin.close();
    this.stack.close();
    this.backend?.guestGone?.('loopback guest stopped');
  }
}
