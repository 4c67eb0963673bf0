/**
 * How a guest process reaches vsock, whichever guest it runs in: AF_VSOCK
 * sockets in a real VM, the loopback guest's stand-in otherwise. The agent
 * and the `guest` subcommand only see this interface.
 *
 * Fds handed out are connected stream sockets the caller owns (blocking, as
 * accept()/connect() return them).
 */
export interface AcceptedStream {
  fd: number;
  /** The connecting side's port: on the host, the device-assigned host port. */
  peerPort: number;
  peerCid: number;
}

export interface ConnectedStream {
  fd: number;
  localPort: number;
}

export interface VsockListener {
  readonly port: number;
  /** Stops listening; connections not yet accepted are refused from now on. */
  close(): void;
}

export interface GuestVsock {
  readonly kind: 'standin' | 'af-vsock';
  /** Listens on `port`; `onAccept` gets each connection (and owns its fd). */
  listen(port: number, onAccept: (stream: AcceptedStream) => void): Promise<VsockListener>;
  /** Connects to `port` on the host (CID 2). Rejects with an Error whose `code` is the errno name. */
  connect(port: number): Promise<ConnectedStream>;
}

/** A vsock operation failed; `code` is the errno name, `cause` the error underneath (if any). */
export class VsockError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'VsockError';
  }
}
