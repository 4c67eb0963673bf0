/**
 * `passfd-broker pass`: opens a file (a FIFO: O_RDWR|O_NONBLOCK, which never
 * blocks and never fails with ENXIO), passes it to the device as the host end
 * of a connection to a guest port, prints the host port and exits.
 *
 * The device can only use an fd epoll can watch (a FIFO, a socket, a
 * terminal): anything else (a regular file, a directory, /dev/null) is
 * refused here, before it is passed, with what it is. What only the device
 * knows (nothing listening on the guest port, a full table) comes back in its
 * `ERR <reason>` line.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { errnoText } from '../util/errno-text.js';
import { parsePort } from './options.js';

const USABLE = 'passfd needs an fd the device can poll: a FIFO, a socket or a terminal';

type Bindings = typeof import('../../native-bindings/index.js');

/** An fd's kind (native-bindings fdKind), in words. */
const KIND_WORDS: Record<ReturnType<Bindings['fdKind']>, string> = {
  fifo: 'a FIFO',
  socket: 'a socket',
  char: 'a character device',
  file: 'a regular file',
  dir: 'a directory',
  block: 'a block device',
  symlink: 'a symlink',
  other: 'a special file',
};

/** Opens `file` for passing; throws a message that says why it cannot be passed. */
function openPassable(file: string, nb: Pick<Bindings, 'assertPollable' | 'fdKind'>): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new Error(`cannot open ${file}: ${errnoText(err)}`);
  }
  try {
    const kind = nb.fdKind(fd);
    if (kind === 'file' || kind === 'block') throw new Error(`${file} is ${KIND_WORDS[kind]}: ${USABLE}`);
    try {
      nb.assertPollable(fd);
    } catch (err) {
      const code = (err as { code?: string }).code ?? (err as Error).message;
      throw new Error(`${file} is ${KIND_WORDS[kind]} that epoll cannot watch (${code}): ${USABLE}`);
    }
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

export function registerPass(program: Command): void {
  program
    .command('pass')
    .description('pass a file descriptor (e.g. a FIFO) to the device; prints the host port')
    .requiredOption('--hvsock <path>', 'the device’s hybrid-vsock Unix socket')
    .requiredOption('--port <port>', 'guest vsock port to connect the fd to', parsePort)
    .option('--keep', 'keep the connection when the fd hangs up (a writer may come back)', false)
    .argument('<file>', 'file to open and pass')
    .action(async (file: string, opts: { hvsock: string; port: number; keep: boolean }) => {
      const [nb, { passFd }] = await Promise.all([
        import('../../native-bindings/index.js'),
        import('../broker/hvsock-client.js'),
      ]);
      const fd = openPassable(file, nb);
      try {
        const hostPort = await passFd(opts.hvsock, fd, opts.port, { keep: opts.keep });
        process.stdout.write(`${hostPort}\n`);
      } finally {
        fs.closeSync(fd);
      }
    });
}
