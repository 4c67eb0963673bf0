/**
 * The loopback guest's vsock stack: what Linux's virtio-vsock driver does in
 * a real guest, in software, inside the VMM process.
 *
 * It is a VsockEndpoint with the guest's CID whose connections' local ends
 * are socketpairs shared with guest processes: a guest process holds the
 * other end, exactly as it would hold an AF_VSOCK socket. Like the kernel:
 * - a REQUEST to a port somebody listens on is answered with RESPONSE at once
 *   (the connection waits in the listener's backlog until the process takes
 *   it); with no listener the answer is RST;
 * - a process's connect() gets an ephemeral local port (Linux picks a random
 *   start above the reserved ports and counts up), sends REQUEST, and
 *   completes on RESPONSE, fails with ECONNREFUSED on RST, ETIMEDOUT after
 *   the request timeout;
 * - credit, SHUTDOWN and RST follow the shared connection state machine.
 */
import { closeQuietly, setNonBlocking, socketPair } from '../../../../native-bindings/index.js';
import type { VsockHeader } from '../../../protocol/vsock-packet.js';
import type { Logger } from '../../../util/log.js';
import type { VsockConnection } from '../../csm/connection.js';
import type { CloseReason } from '../../csm/types.js';
import { GUEST_CREDIT } from '../../defaults.js';
import { VsockEndpoint } from '../../endpoint.js';
import { FdEnd } from '../../fd-end.js';
import { PortAllocator } from '../../port-allocator.js';

/** A guest process listening on a port: receives each accepted connection's fd. */
export interface GuestListener {
  /** Takes ownership of `fd` (one end of a fresh socketpair). */
  deliver(fd: number, peerPort: number, peerCid: number): void;
}

export interface ConnectResult {
  fd: number;
  localPort: number;
}

interface PendingConnect {
  theirs: number;
  done: (err: Error | null, result?: ConnectResult) => void;
}

const LAST_RESERVED_PORT = 1023;

export class ConnectError extends Error {
  constructor(
    readonly code: 'ECONNREFUSED' | 'ETIMEDOUT' | 'ECONNRESET' | 'EAGAIN',
    message: string,
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

export class LoopbackGuestStack {
  readonly endpoint: VsockEndpoint;
  private readonly listeners = new Map<number, GuestListener>();
  private readonly connecting = new Map<VsockConnection, PendingConnect>();
  private readonly ports: PortAllocator;

  constructor(
    readonly cid: number,
    readonly hostCid: number,
    private readonly log: Logger,
  ) {
    this.endpoint = new VsockEndpoint(
      cid,
      hostCid,
      {
        onPeerRequest: (hdr) => this.onRequest(hdr),
        onEstablished: (conn) => this.onEstablished(conn),
        onClosed: (conn, reason, detail) => this.onClosed(conn, reason, detail),
      },
      log,
      { credit: GUEST_CREDIT },
    );
    const start = LAST_RESERVED_PORT + 1 + Math.floor(Math.random() * 0x7000_0000);
    this.ports = new PortAllocator(LAST_RESERVED_PORT + 1, 0xffff_ffff, start);
  }

  /** Registers a listener; false when the port is taken (EADDRINUSE). */
  listen(port: number, listener: GuestListener): boolean {
    if (this.listeners.has(port)) return false;
    this.listeners.set(port, listener);
    return true;
  }

  unlisten(port: number, listener: GuestListener): void {
    if (this.listeners.get(port) === listener) this.listeners.delete(port);
  }

  isListening(port: number): boolean {
    return this.listeners.has(port);
  }

  private onRequest(hdr: VsockHeader) {
    const listener = this.listeners.get(hdr.dstPort);
    if (!listener) return `nobody listens on guest port ${hdr.dstPort}`;
    const [mine, theirs] = guestSocketPair();
    listener.deliver(theirs, hdr.srcPort, hdr.srcCid);
    return { localPort: hdr.dstPort, peerPort: hdr.srcPort, end: new FdEnd(mine) };
  }

  /** A guest process's connect() to `port` on the host. */
  connect(port: number, done: (err: Error | null, result?: ConnectResult) => void): void {
    const localPort = this.ports.allocate((p) => this.endpoint.portInUse(p) || this.listeners.has(p));
    if (localPort === null) {
      done(new ConnectError('EAGAIN', 'no free local vsock port'));
      return;
    }
    const [mine, theirs] = guestSocketPair();
    const end = new FdEnd(mine);
    let conn: VsockConnection;
    try {
      conn = this.endpoint.connect({ localPort, peerPort: port, end });
    } catch (err) {
      end.close();
      closeQuietly(theirs);
      done(new ConnectError('EAGAIN', (err as Error).message));
      return;
    }
    this.connecting.set(conn, { theirs, done });
  }

  private onEstablished(conn: VsockConnection): void {
    const pending = this.connecting.get(conn);
    if (!pending) return;
    this.connecting.delete(conn);
    pending.done(null, { fd: pending.theirs, localPort: conn.localPort });
  }

  private onClosed(conn: VsockConnection, reason: CloseReason, detail?: string): void {
    this.log.debug(
      `connection ${conn.localPort}→${conn.peerPort} closed: ${reason}${detail ? ` (${detail})` : ''}`,
    );
    const pending = this.connecting.get(conn);
    if (!pending) return;
    this.connecting.delete(conn);
    closeQuietly(pending.theirs);
    const code = reason === 'refused' ? 'ECONNREFUSED' : reason === 'timeout' ? 'ETIMEDOUT' : 'ECONNRESET';
    pending.done(new ConnectError(code, `connect to host port ${conn.peerPort}: ${code}`));
  }

  /** The device went away: every connection is reset, pending connects fail. */
  close(): void {
    this.endpoint.closeAll('shutdown');
    this.listeners.clear();
  }
}

/**
 * A socketpair for one guest connection: the stack's end non-blocking (it is
 * driven by readiness), the process's end blocking, as accept()/connect() on
 * AF_VSOCK return it.
 */
function guestSocketPair(): [number, number] {
  const [mine, theirs] = socketPair(false);
  setNonBlocking(mine, true);
  return [mine, theirs];
}
