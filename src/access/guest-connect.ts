/**
 * Guest-initiated connections: a guest connecting to host port P is bridged
 * to the Unix socket `<hvsock>_<P>` (Firecracker's convention), but only to
 * a listener the access policy allows. Whoever can create files beside the
 * hybrid-vsock socket could otherwise plant `<hvsock>_<P>` and read what the
 * guest sends, or point it at somebody else's socket with a symlink.
 *
 * The checks, in order, each refusal logged once with its reason:
 *   1. P is an allowed guest port (`guest_connect_ports`);
 *   2. the path is opened with O_PATH|O_NOFOLLOW and fstat'ed: a symlink or
 *      anything but a socket is refused; so is a socket file whose owner is
 *      not allowed;
 *   3. the connect goes through `/proc/self/fd/<that fd>`, so it reaches
 *      exactly the file that was checked (no swap between check and use);
 *   4. the listener's credentials (SO_PEERCRED of the connected socket: who
 *      called listen(2)) must be allowed.
 * Nobody listening (ENOENT, ECONNREFUSED) is not an access matter: the
 * guest gets a reset, as before, without a warning.
 */
import fs from 'node:fs';
import { closeQuietly, connectUnix } from '../../native-bindings/index.js';
import { peerIdentity } from './admit-peer.js';
import { accessContext } from './context.js';

const O_PATH = 0o10000000;

/** The connected fd for a guest's connect to host `port`, or why it is refused (the guest gets RST). */
export function connectForGuest(hvsockPath: string, port: number): number | string {
  const { policy, log } = accessContext();
  const target = `${hvsockPath}_${port}`;
  const refuse = (why: string): string => {
    const msg = `refused the guest's connection to host port ${port} (${target}): ${why}`;
    log.warn(msg);
    return msg;
  };
  if (!policy.allowsGuestPort(port)) return refuse('the port is not in hypervisor.guest_connect_ports');
  let pathFd: number;
  try {
    pathFd = fs.openSync(target, O_PATH | fs.constants.O_NOFOLLOW); // libuv adds O_CLOEXEC
  } catch (err) {
    return `no host listener at ${target} (${(err as { code?: string }).code ?? err})`;
  }
  let fd: number;
  try {
    const st = fs.fstatSync(pathFd);
    if (st.isSymbolicLink()) return refuse('it is a symlink');
    if (!st.isSocket()) return refuse('it is not a socket');
    if (!policy.allowsOwner(st.uid, st.gid))
      return refuse(`the socket file belongs to uid ${st.uid} gid ${st.gid} (${policy.describe()})`);
    try {
      fd = connectUnix(`/proc/self/fd/${pathFd}`);
    } catch (err) {
      return `no host listener at ${target} (${(err as { code?: string }).code ?? err})`;
    }
  } finally {
    closeQuietly(pathFd);
  }
  try {
    const listener = peerIdentity(fd, policy.checksGroups);
    if (policy.allowsPeer(listener)) return fd;
    closeQuietly(fd);
    return refuse(
      `its listener is uid ${listener.uid} gid ${listener.gid} pid ${listener.pid} (${policy.describe()})`,
    );
  } catch (err) {
    closeQuietly(fd);
    return refuse(`cannot read the listener's credentials (${(err as Error).message})`);
  }
}
