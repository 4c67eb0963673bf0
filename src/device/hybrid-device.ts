/**
 * The hybrid-vsock device (VMM side), Dragonball's protocol on a Unix socket.
 *
 * Host-initiated connections: a host program connects to the hybrid-vsock
 * socket and sends `CONNECT <port>\n` (the socket becomes the host end of a
 * connection to guest port <port>; `OK <hostport>\n` once the guest accepts)
 * or `passfd\n` plus an fd (the fd becomes the host end; `OK <hostport>\n` on
 * the socket, which is then closed). Host ports are allocated round-robin in
 * [2^30, 2^31), skipping ports in use.
 *
 * Guest-initiated connections (Firecracker convention): a guest connecting to
 * host port P is connected to the Unix socket `<hvsock path>_<P>` when the
 * access policy allows it (src/access/guest-connect.ts); nobody listening
 * there, or a refusal, means RST.
 *
 * The device core is a VsockEndpoint with CID 2; a GuestTransport (loopback
 * or vhost-user) carries its packets to the guest. Each connection's local
 * end is built here, and the host policy with it: a passed FIFO gets a
 * FifoEnd (the `keep` keeper, no drain deadline for a slow reader; see
 * passfd-end.ts), every other fd a plain FdEnd, and the CONNECT socket's end
 * first returns the stream bytes that followed its command line. The device
 * owns every fd it was given: on any failure the fd is closed and the host
 * port freed before the failure is reported (two reference bugs: a received
 * fd leaked on a bad port text, a host port leaked when adding a connection
 * failed).
 */
import { closeQuietly } from '../../native-bindings/index.js';
import { connectForGuest } from '../access/guest-connect.js';
import { UnixListener } from '../net/unix-listener.js';
import { encodeOk } from '../protocol/hybrid-vsock.js';
import { HOST_CID } from '../protocol/vsock-packet.js';
import type { Logger } from '../util/log.js';
import { LogLimiter } from '../util/log-limiter.js';
import type { VsockConnection } from './csm/connection.js';
import type { CreditPolicy } from './csm/credit.js';
import type { CloseReason } from './csm/types.js';
import { HOST_PORT_END, HOST_PORT_MIN, MAX_WAITING_CLIENTS } from './defaults.js';
import { VsockEndpoint } from './endpoint.js';
import { FdEnd } from './fd-end.js';
import { HvsockControl, type PassfdReply } from './hvsock-control.js';
import { passedFdEnd } from './passfd-end.js';
import { PortAllocator } from './port-allocator.js';
import type { GuestTransport } from './transport/transport.js';

export interface HybridDeviceOptions {
  /** The hybrid-vsock Unix socket path (Dragonball's `uds_path`). */
  hvsockPath: string;
  guestCid: number;
  log: Logger;
  maxConnections?: number;
  /** Every connection's receive window and CREDIT_UPDATE rule (default DEVICE_CREDIT: Linux's window). */
  credit?: CreditPolicy;
  /** Clients connected but still without their command, held at once (default MAX_WAITING_CLIENTS). */
  maxWaitingClients?: number;
}

/** Counters for operators and tests. */
export interface DeviceStats {
  connections: number;
  controls: number;
  invalidRequests: number;
  passfdAccepted: number;
  refused: number;
}

type Waiter = { kind: 'connect'; end: FdEnd } | { kind: 'passfd'; reply: PassfdReply };

export class HybridVsockDevice {
  readonly endpoint: VsockEndpoint;
  private readonly ports = new PortAllocator(HOST_PORT_MIN, HOST_PORT_END);
  private readonly waiters = new Map<VsockConnection, Waiter>();
  /** passfd control sockets kept open until their connection ends. */
  private readonly lingering = new Map<VsockConnection, PassfdReply>();
  private readonly controls = new Set<HvsockControl>();
  private listener: UnixListener | null = null;
  private transport: GuestTransport | null = null;
  private readonly log: Logger;
  /** Client mistakes and refusals: a flood of them must not flood the log (log-limiter.ts). */
  private readonly invalidLog: LogLimiter;
  private readonly refusedLog: LogLimiter;
  readonly stats: DeviceStats = {
    connections: 0,
    controls: 0,
    invalidRequests: 0,
    passfdAccepted: 0,
    refused: 0,
  };

  constructor(readonly options: HybridDeviceOptions) {
    this.log = options.log;
    this.invalidLog = new LogLimiter((m) => this.log.warn(m));
    this.refusedLog = new LogLimiter((m) => this.log.warn(m));
    this.endpoint = new VsockEndpoint(
      HOST_CID,
      options.guestCid,
      {
        onPeerRequest: (hdr) => {
          // `<hvsock>_<port>`, if the access policy allows that port and its listener.
          const fd = connectForGuest(options.hvsockPath, hdr.dstPort);
          if (typeof fd === 'string') return fd;
          return { localPort: hdr.dstPort, peerPort: hdr.srcPort, end: new FdEnd(fd) };
        },
        onEstablished: (conn) => this.onEstablished(conn),
        onClosed: (conn, reason, detail) => this.onClosed(conn, reason, detail),
      },
      this.log,
      {
        ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
        ...(options.credit ? { credit: options.credit } : {}),
      },
    );
  }

  /** Starts serving the hybrid-vsock socket (mode 0600) with `transport` as the guest side. */
  start(transport: GuestTransport): void {
    this.transport = transport;
    transport.attach(this.endpoint);
    this.listener = new UnixListener(this.options.hvsockPath, {
      onAccept: (fd, commandRead) => this.serveControl(fd, commandRead),
      log: this.log,
      maxClients: this.options.maxWaitingClients ?? MAX_WAITING_CLIENTS,
      clientsAre: 'clients waiting for a command',
    });
    this.log.info(
      `hybrid-vsock device on ${this.options.hvsockPath}, guest cid ${this.options.guestCid} (${transport.kind})`,
    );
  }

  /** A client of the hybrid-vsock socket; `commandRead` once it no longer waits for its command. */
  private serveControl(fd: number, commandRead: () => void): void {
    this.stats.controls++;
    const ctl = new HvsockControl(
      fd,
      {
        connect: (port, socketFd, preRead) =>
          this.hostConnect(port, socketFd, () => new FdEnd(socketFd, { preRead }), { kind: 'connect' }),
        passfd: (port, passed, keep, reply) => {
          this.log.debug(`passfd fd=${passed} to guest port ${port}${keep ? ' (keep)' : ''}`);
          this.hostConnect(port, passed, () => passedFdEnd(passed, keep), { kind: 'passfd', reply }, keep);
        },
        invalid: (reason) => {
          this.stats.invalidRequests++;
          this.invalidLog.log(`invalid hybrid-vsock request: ${reason}`);
        },
        unserved: (reason) => {
          this.stats.refused++;
          this.refusedLog.log(`refusing a hybrid-vsock request: ${reason}`);
        },
      },
      (done) => this.controls.delete(done),
      commandRead,
    );
    this.controls.add(ctl);
  }

  /**
   * Opens a host-initiated connection to `guestPort` whose host end is made
   * from `fd` by `open`. Never leaks the fd, its end or a port.
   */
  private hostConnect(
    guestPort: number,
    fd: number,
    open: () => FdEnd,
    request: { kind: 'connect' } | { kind: 'passfd'; reply: PassfdReply },
    keep = false,
  ): void {
    let end: FdEnd | null = null;
    const refuse = (why: string) => {
      this.stats.refused++;
      this.refusedLog.log(`refusing ${request.kind} to guest port ${guestPort}: ${why}`);
      if (end) end.close();
      else closeQuietly(fd);
      if (request.kind === 'passfd') request.reply.fail(why);
    };
    try {
      end = open(); // a FIFO's keeper may fail to open
    } catch (err) {
      refuse((err as Error).message);
      return;
    }
    if (this.endpoint.isFull) {
      refuse(`connection table full (${this.endpoint.maxConnections} connections)`);
      return;
    }
    const hostPort = this.ports.allocate((p) => this.endpoint.portInUse(p));
    if (hostPort === null) {
      refuse('no free host port');
      return;
    }
    let conn: VsockConnection;
    try {
      conn = this.endpoint.connect({ localPort: hostPort, peerPort: guestPort, end, keep });
    } catch (err) {
      // Nothing was registered: the port is free again by construction.
      refuse((err as Error).message);
      return;
    }
    this.waiters.set(conn, request.kind === 'connect' ? { kind: 'connect', end } : request);
  }

  private onEstablished(conn: VsockConnection): void {
    const waiter = this.waiters.get(conn);
    if (!waiter) return;
    this.waiters.delete(conn);
    this.stats.connections++;
    const ok = encodeOk(conn.localPort);
    if (waiter.kind === 'connect') {
      // Ahead of any stream byte (no RW has arrived yet). The socket is empty and the
      // line is tiny: one write goes through; if not, the end is unusable.
      try {
        if (waiter.end.write(ok) !== ok.length)
          conn.reset('local-error', 'local end would not take the reply');
      } catch (err) {
        conn.localFailure(err);
      }
    } else {
      this.stats.passfdAccepted++;
      waiter.reply.ok(ok);
      this.lingering.set(conn, waiter.reply);
    }
  }

  private onClosed(conn: VsockConnection, reason: CloseReason, detail?: string): void {
    this.lingering.get(conn)?.connectionClosed();
    this.lingering.delete(conn);
    const waiter = this.waiters.get(conn);
    const what = `connection host ${conn.localPort} ↔ guest ${conn.peerPort}`;
    if (waiter) {
      this.waiters.delete(conn);
      this.stats.refused++;
      this.log.info(`${what} not established: ${reason}${detail ? ` (${detail})` : ''}`);
      if (waiter.kind === 'passfd') waiter.reply.fail(refusalText(reason, conn.peerPort, detail));
      return;
    }
    const level = reason === 'done' || reason === 'peer-reset' || reason === 'shutdown' ? 'debug' : 'info';
    this.log[level](`${what} closed: ${reason}${detail ? ` (${detail})` : ''}`);
  }

  async stop(): Promise<void> {
    this.invalidLog.flush('invalid hybrid-vsock requests');
    this.refusedLog.flush('refused hybrid-vsock requests');
    this.listener?.close();
    this.listener = null;
    for (const ctl of [...this.controls]) ctl.close();
    this.endpoint.closeAll('shutdown');
    await this.transport?.close();
  }
}

/** What a passer is told (ERR line) when its connection was not established. */
function refusalText(reason: CloseReason, guestPort: number, detail?: string): string {
  // An RST is all a guest says: no listener, a full backlog, a guest out of file descriptors.
  if (reason === 'refused')
    return `the guest refused port ${guestPort} (RST: nothing listens there, or it could not take the connection)`;
  if (reason === 'timeout') return `no answer from the guest for port ${guestPort} (is a guest attached?)`;
  return `${reason}${detail ? ` (${detail})` : ''}`;
}
