/**
 * Who may use the device, and which host ports a guest may reach: the
 * access policy, as data and pure decisions (no I/O; admit-peer.ts and
 * guest-connect.ts apply it to sockets).
 *
 * Peers. A process connecting to one of the device's sockets (hybrid-vsock,
 * the loopback guest's `vsock.sock`, vhost-user) is admitted when its uid
 * is the device's own or root's, is listed in `allowed_uids`, or when its
 * effective gid or one of its supplementary groups is listed in
 * `allowed_gids`. Root and the device's own uid are always allowed: either
 * can read the device's memory and fds anyway, so refusing them would
 * protect nothing. The same rule decides whose listener a guest-initiated
 * connection may reach (`<hvsock>_<P>`).
 *
 * Guest ports. `guest_connect_ports` is "any" (Firecracker's convention:
 * the host opts in per port by listening on `<hvsock>_<P>`; nothing
 * listening means the guest gets a reset) or an explicit list, a second lock
 * for hosts where the directory of the socket is shared.
 */
import type { HypervisorConfig } from '../config/schema.js';

export interface PeerIdentity {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary groups (SO_PEERGROUPS), when known. */
  groups?: readonly number[];
}

export interface AccessPolicyOptions {
  /** Extra uids allowed besides `selfUid` and root. */
  uids?: readonly number[];
  /** Gids allowed (effective or supplementary group of the peer). */
  gids?: readonly number[];
  /** Host ports a guest may connect to; "any" (default) or a list. */
  guestPorts?: readonly number[] | 'any';
  /** The device's own uid (default: this process's effective uid). */
  selfUid?: number;
}

export class AccessPolicy {
  readonly uids: ReadonlySet<number>;
  readonly gids: ReadonlySet<number>;
  readonly guestPorts: ReadonlySet<number> | 'any';

  constructor(opts: AccessPolicyOptions = {}) {
    const self = opts.selfUid ?? process.geteuid?.() ?? 0;
    this.uids = new Set([0, self, ...(opts.uids ?? [])]);
    this.gids = new Set(opts.gids ?? []);
    const ports = opts.guestPorts ?? 'any';
    this.guestPorts = ports === 'any' ? 'any' : new Set(ports);
  }

  /** The policy a configuration's `[hypervisor]` section asks for. */
  static fromConfig(h: HypervisorConfig): AccessPolicy {
    return new AccessPolicy({
      uids: h.allowed_uids,
      gids: h.allowed_gids,
      guestPorts: h.guest_connect_ports,
    });
  }

  /** Whether a process with these credentials may connect (or be connected to). */
  allowsPeer(peer: PeerIdentity): boolean {
    if (this.uids.has(peer.uid) || this.gids.has(peer.gid)) return true;
    return (peer.groups ?? []).some((g) => this.gids.has(g));
  }

  /** Whether supplementary groups could change the answer (worth asking the kernel for them). */
  get checksGroups(): boolean {
    return this.gids.size > 0;
  }

  /** Whether a file owned by `uid`:`gid` may stand for an allowed listener. */
  allowsOwner(uid: number, gid: number): boolean {
    return this.uids.has(uid) || this.gids.has(gid);
  }

  allowsGuestPort(port: number): boolean {
    return this.guestPorts === 'any' || this.guestPorts.has(port);
  }

  /** "uids 0,1000; gids none", for log lines that say why. */
  describe(): string {
    const list = (s: ReadonlySet<number>) => (s.size ? [...s].sort((a, b) => a - b).join(',') : 'none');
    return `uids ${list(this.uids)}; gids ${list(this.gids)}`;
  }
}
