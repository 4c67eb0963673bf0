/**
 * `passfd-broker pass`: opens a file (a FIFO: O_RDWR|O_NONBLOCK, which never
 * blocks and never fails with ENXIO), passes it to the device as the host end
 * of a connection to a guest port, prints the host port and exits.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { parsePort } from './options.js';

export function registerPass(program: Command): void {
  program
    .command('pass')
    .description('pass a file descriptor (e.g. a FIFO) to the device; prints the host port')
    .requiredOption('--hvsock <path>', 'the device’s hybrid-vsock Unix socket')
    .requiredOption('--port <port>', 'guest vsock port to connect the fd to', parsePort)
    .option('--keep', 'keep the connection when the fd hangs up (a writer may come back)', false)
    .argument('<file>', 'file to open and pass')
    .action(async (file: string, opts: { hvsock: string; port: number; keep: boolean }) => {
      let fd: number;
      try {
        fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      } catch (err) {
        throw new Error(
          `cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      try {
        const { passFd } = await import('../broker/hvsock-client.js');
        const hostPort = await passFd(opts.hvsock, fd, opts.port, { keep: opts.keep });
        process.stdout.write(`${hostPort}\n`);
      } finally {
        fs.closeSync(fd);
      }
    });
}
