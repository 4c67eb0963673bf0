/**
 * `passfd-broker guest`: a guest process's vsock socket on the command line,
 * like `socat VSOCK-LISTEN:<port> -` and `socat - VSOCK-CONNECT:2:<port>`.
 * `listen` accepts one connection, prints `peer <hostport>` on stderr, copies
 * the stream to stdout and stdin to the stream; `connect` reaches a host
 * listener on `<hvsock path>_<port>`. Stdin EOF half-closes the stream; the
 * command exits when the stream's far side has finished sending.
 */
import net from 'node:net';
import type { Command } from 'commander';
import type { AcceptedStream, GuestVsock, VsockListener } from '../guest-vsock/types.js';
import { parsePort } from './options.js';

async function guestVsock(opts: { guestDir?: string }): Promise<GuestVsock> {
  if (!opts.guestDir)
    throw new Error('--guest-dir is required (the loopback guest directory of a running vmm)');
  const { StandinVsock } = await import('../guest-vsock/standin.js');
  return new StandinVsock(opts.guestDir);
}

/** Copies stdin → stream and stream → stdout; resolves when the stream has ended and stdout is flushed. */
function relay(fd: number): Promise<void> {
  return new Promise((resolve) => {
    const sock = new net.Socket({ fd, readable: true, writable: true });
    process.stdin.pipe(sock);
    sock.pipe(process.stdout, { end: false });
    sock.on('end', () => {
      process.stdin.unpipe(sock);
      process.stdin.destroy();
      process.stdout.write('', () => resolve());
    });
    sock.on('error', (err) => {
      process.stderr.write(`passfd-broker guest: ${err.message}\n`);
      process.exitCode = 1;
      resolve();
    });
  });
}

export function registerGuest(program: Command): void {
  const guest = program
    .command('guest')
    .description('a guest process’s vsock socket (loopback guest), like socat VSOCK-LISTEN / VSOCK-CONNECT')
    .option('--guest-dir <dir>', 'loopback guest directory (holds vsock.sock)');

  guest
    .command('listen')
    .description('accept one connection on a guest vsock port and relay it to stdin/stdout')
    .argument('<port>', 'guest vsock port', parsePort)
    .action(async (port: number) => {
      const vsock = await guestVsock(guest.opts());
      const { closeQuietly } = await import('../../native-bindings/index.js');
      // Accept exactly one connection, then stop listening (later ones are refused).
      const stream = await new Promise<AcceptedStream>((resolve, reject) => {
        let listener: VsockListener | null = null;
        let got: AcceptedStream | null = null;
        vsock
          .listen(port, (accepted) => {
            if (got) {
              closeQuietly(accepted.fd);
              return;
            }
            got = accepted;
            listener?.close();
            resolve(accepted);
          })
          .then((l) => {
            listener = l;
            if (got) l.close();
          }, reject);
      });
      process.stderr.write(`peer ${stream.peerPort}\n`);
      await relay(stream.fd);
    });

  guest
    .command('connect')
    .description('connect to a host vsock port (the host listener on <hvsock>_<port>) and relay stdin/stdout')
    .argument('<port>', 'host vsock port', parsePort)
    .action(async (port: number) => {
      const vsock = await guestVsock(guest.opts());
      const stream = await vsock.connect(port);
      process.stderr.write(`local ${stream.localPort}\n`);
      await relay(stream.fd);
    });
}
