/**
 * The pipes a child's stdio is made of.
 *
 * A pipe (not the stream socket itself) is what the child gets on fds 0-2:
 * `/dev/stdout` and `/proc/self/fd/1` can be reopened on a pipe (on a socket
 * the open fails with ENXIO), and the child's end stays blocking whatever the
 * agent does with its own end (the two ends of a pipe are separate open
 * files), so the child never sees EAGAIN.
 *
 * Pipes are grown to 1 MiB (capped at /proc/sys/fs/pipe-max-size): each
 * wake-up of the splice pump then moves up to 1 MiB instead of 64 KiB, which
 * more than doubled pipe → Unix socket splice throughput when measured on
 * this project's machine kind (1 GiB: ~0.9 GiB/s with 64 KiB pipes, ~2.5 with
 * 1 MiB), for 1 MiB of kernel memory per stream. If the kernel refuses (an unprivileged user over
 * pipe-user-pages-soft) the pipe keeps its default size.
 */
import { growPipe, makePipe } from '../../../native-bindings/index.js';

export const DEFAULT_PIPE_SIZE = 1 << 20;

/** A blocking, close-on-exec pipe `[readEnd, writeEnd]`, grown towards `size` bytes. */
export function stdioPipe(size = DEFAULT_PIPE_SIZE): [number, number] {
  const fds = makePipe(false);
  growPipe(fds[0], size);
  return fds;
}
