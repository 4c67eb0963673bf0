/**
 * `passfd-broker vmm`: runs the hybrid-vsock device and its guest side until
 * SIGTERM/SIGINT, then removes its sockets. With the default loopback guest,
 * guest processes reach vsock through `<guest-dir>/vsock.sock` (the
 * directory is created, 0700, if it does not exist; its parent must).
 * `--config` reads the `[hypervisor]` access keys: who may connect
 * (`allowed_uids`, `allowed_gids`) and which host ports a guest may reach
 * (`guest_connect_ports`); see src/access/.
 * Sends READY=1 / STOPPING=1 to $NOTIFY_SOCKET (systemd Type=notify).
 */
import type { Command } from 'commander';
import type { LoopbackTransport } from '../device/transport/loopback/loopback-transport.js';
import type { VhostUserVsockTransport } from '../device/transport/vhost-user/vsock-transport.js';
import { isOrphaned } from '../util/lifeline.js';
import { createLogger } from '../util/log.js';
import { keepYoungGenerationSmall } from '../util/young-generation.js';
import { onTermination, parseCid } from './options.js';

interface VmmOptions {
  hvsock: string;
  guestDir?: string;
  vhostUser?: string;
  allowUnsealedMemory?: boolean;
  guestCid: number;
  config?: string;
}

export function registerVmm(program: Command): void {
  program
    .command('vmm')
    .description('run the hybrid-vsock device (VMM side) with its guest')
    .requiredOption('--hvsock <path>', 'hybrid-vsock Unix socket to serve (CONNECT and passfd)')
    .option('--guest-dir <dir>', 'loopback guest: directory for the AF_VSOCK stand-in socket (vsock.sock)')
    .option('--vhost-user <socket>', 'serve a real guest instead: vhost-user-vsock backend socket for QEMU')
    .option(
      '--allow-unsealed-memory',
      'vhost-user: take guest memory that cannot be sealed against shrinking (memory-backend-file); ' +
        'a front-end that truncates it then crashes the vmm',
    )
    .option('--guest-cid <cid>', 'guest CID', parseCid, 3)
    .option('--config <toml>', 'configuration file: the [hypervisor] access keys (see config.toml.example)')
    .action(async (opts: VmmOptions) => {
      const log = createLogger('vmm');
      // Connection storms must not leave the JavaScript heap grown for good (util/young-generation.ts).
      keepYoungGenerationSmall();
      if (!opts.guestDir === !opts.vhostUser) {
        throw new Error('give exactly one guest: --guest-dir (loopback) or --vhost-user (QEMU)');
      }
      // The device and only the guest transport asked for load when the vmm runs.
      const [{ HybridVsockDevice }, { notifyReady, notifyStopping }, { loadConfig }, access] =
        await Promise.all([
          import('../device/hybrid-device.js'),
          import('../util/sd-notify.js'),
          import('../config/load.js'),
          Promise.all([import('../access/context.js'), import('../access/policy.js')]),
        ]);
      const [{ installAccess }, { AccessPolicy }] = access;
      installAccess(AccessPolicy.fromConfig(loadConfig(opts.config).hypervisor), log.child('access'));
      const device = new HybridVsockDevice({ hvsockPath: opts.hvsock, guestCid: opts.guestCid, log });
      let transport: LoopbackTransport | VhostUserVsockTransport;
      let guestStack: LoopbackTransport['stack'] | null = null;
      if (opts.vhostUser) {
        const { VhostUserVsockTransport } = await import('../device/transport/vhost-user/vsock-transport.js');
        transport = new VhostUserVsockTransport({
          socketPath: opts.vhostUser,
          guestCid: opts.guestCid,
          log: log.child('vhost-user'),
          allowUnsealedMemory: opts.allowUnsealedMemory ?? false,
        });
        device.start(transport);
        log.info(
          `vhost-user-vsock backend on ${opts.vhostUser} (start QEMU with -device vhost-user-vsock-pci)`,
        );
      } else {
        const { LoopbackTransport } = await import('../device/transport/loopback/loopback-transport.js');
        const loopback = new LoopbackTransport(opts.guestCid, opts.guestDir!, log);
        transport = loopback;
        guestStack = loopback.stack;
        device.start(loopback);
        log.info(`loopback guest: AF_VSOCK stand-in at ${loopback.standin.socketPath}`);
      }
      // SIGUSR2: log the connection tables (device, and the loopback guest's), for operators.
      process.on('SIGUSR2', () => {
        log.info(`device connections (${device.endpoint.size}):\n  ${device.endpoint.dump().join('\n  ')}`);
        if (guestStack) {
          const guest = guestStack.endpoint;
          log.info(`guest connections (${guest.size}):\n  ${guest.dump().join('\n  ')}`);
        }
      });
      onTermination(async () => {
        // An orphan's supervisor (run) is gone, and its notify socket with it.
        if (!isOrphaned()) await notifyStopping();
        await device.stop();
        log.info('stopped');
      });
      await notifyReady();
    });
}
