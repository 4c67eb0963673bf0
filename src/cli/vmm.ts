/**
 * `passfd-broker vmm`: runs the hybrid-vsock device and its guest side until
 * SIGTERM/SIGINT, then removes its sockets. With the default loopback guest,
 * guest processes reach vsock through `<guest-dir>/vsock.sock`.
 * Sends READY=1 / STOPPING=1 to $NOTIFY_SOCKET (systemd Type=notify).
 */
import type { Command } from 'commander';
import { HybridVsockDevice } from '../device/hybrid-device.js';
import { LoopbackTransport } from '../device/transport/loopback/loopback-transport.js';
import { createLogger } from '../util/log.js';
import { notifyReady, notifyStopping } from '../util/sd-notify.js';
import { onTermination, parseCid } from './options.js';

export function registerVmm(program: Command): void {
  program
    .command('vmm')
    .description('run the hybrid-vsock device (VMM side) with its guest')
    .requiredOption('--hvsock <path>', 'hybrid-vsock Unix socket to serve (CONNECT and passfd)')
    .option('--guest-dir <dir>', 'loopback guest: directory for the AF_VSOCK stand-in socket (vsock.sock)')
    .option('--guest-cid <cid>', 'guest CID', parseCid, 3)
    .action(async (opts: { hvsock: string; guestDir?: string; guestCid: number }) => {
      const log = createLogger('vmm');
      if (!opts.guestDir) throw new Error('--guest-dir is required for the loopback guest');
      const device = new HybridVsockDevice({ hvsockPath: opts.hvsock, guestCid: opts.guestCid, log });
      const transport = new LoopbackTransport(opts.guestCid, opts.guestDir, log);
      device.start(transport);
      log.info(`loopback guest: AF_VSOCK stand-in at ${transport.standin.socketPath}`);
      // SIGUSR2: log the connection tables (device and loopback guest), for operators.
      process.on('SIGUSR2', () => {
        log.info(`device connections (${device.endpoint.size}):\n  ${device.endpoint.dump().join('\n  ')}`);
        log.info(
          `guest connections (${transport.stack.endpoint.size}):\n  ${transport.stack.endpoint.dump().join('\n  ')}`,
        );
      });
      onTermination(async () => {
        await notifyStopping();
        await device.stop();
        log.info('stopped');
      });
      await notifyReady();
    });
}
