/**
 * The check every accepted connection of the device's sockets passes before
 * anything reads from it: the peer's credentials as the kernel recorded
 * them at connect(2) (SO_PEERCRED, plus SO_PEERGROUPS when groups matter),
 * against the process's access policy. A refused peer's fd is closed and
 * one line is logged with its uid, gid, pid and the socket.
 */
import { closeQuietly, peerCred, peerGroups } from '../../native-bindings/index.js';
import { accessContext } from './context.js';
import type { PeerIdentity } from './policy.js';

/** The identity of the process at the other end of a connected Unix socket. */
export function peerIdentity(fd: number, withGroups: boolean): PeerIdentity {
  const cred = peerCred(fd);
  return withGroups ? { ...cred, groups: peerGroups(fd) } : cred;
}

/** True when the peer of `fd` may use the socket at `socketPath`; otherwise closes `fd` and logs why. */
export function admitPeer(fd: number, socketPath: string): boolean {
  const { policy, log } = accessContext();
  let peer: PeerIdentity;
  try {
    peer = peerIdentity(fd, false);
    if (!policy.allowsPeer(peer) && policy.checksGroups) peer = peerIdentity(fd, true);
  } catch (err) {
    closeQuietly(fd);
    log.warn(
      `refused a connection on ${socketPath}: cannot read its credentials (${(err as Error).message})`,
    );
    return false;
  }
  if (policy.allowsPeer(peer)) return true;
  closeQuietly(fd);
  log.warn(
    `refused a connection on ${socketPath} from uid ${peer.uid} gid ${peer.gid} pid ${peer.pid}: not allowed (${policy.describe()})`,
  );
  return false;
}
