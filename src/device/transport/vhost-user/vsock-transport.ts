/**
 * The vhost-user transport for the hybrid device (transport.ts): the device
 * core's packets travel in a real guest's virtqueues, the guest being a QEMU
 * started with `-device vhost-user-vsock-pci` on `socketPath`. It is the
 * generic vhost-user backend server (backend-server.ts) serving the vsock
 * device (vsock-device.ts), one QEMU at a time.
 */
import type { Logger } from '../../../util/log.js';
import type { GuestTransport, VsockBackend } from '../transport.js';
import { VhostUserServer } from './backend-server.js';
import { VhostUserVsockDevice } from './vsock-device.js';
import type { VsockQueueStats } from './vsock-queues.js';

export interface VhostUserVsockOptions {
  socketPath: string;
  guestCid: number;
  log: Logger;
}

export class VhostUserVsockTransport implements GuestTransport {
  readonly kind = 'vhost-user';
  readonly guestCid: number;
  readonly socketPath: string;
  readonly #log: Logger;
  #device: VhostUserVsockDevice | null = null;
  #server: VhostUserServer | null = null;

  constructor(opts: VhostUserVsockOptions) {
    this.guestCid = opts.guestCid;
    this.socketPath = opts.socketPath;
    this.#log = opts.log;
  }

  /** Whether a QEMU is connected. */
  get connected(): boolean {
    return this.#server?.connected ?? false;
  }

  /** QEMU connections served so far. */
  get sessions(): number {
    return this.#server?.sessions ?? 0;
  }

  /** The current session's queue statistics (null without a QEMU). */
  get stats(): VsockQueueStats | null {
    return this.connected ? (this.#device?.queues.stats ?? null) : null;
  }

  /** Starts listening on the socket path (a stale socket file there is replaced). */
  attach(backend: VsockBackend): void {
    if (this.#device) throw new Error('vhost-user transport already attached');
    this.#device = new VhostUserVsockDevice(this.guestCid, backend, this.#log);
    this.#server = new VhostUserServer(this.socketPath, this.#device, this.#log);
    this.#server.listen();
    this.#log.info(`vhost-user-vsock backend listening on ${this.socketPath} (guest CID ${this.guestCid})`);
  }

  async close(): Promise<void> {
    this.#server?.close();
  }
}
