/**
 * `passfd-broker vmm`: runs the hybrid-vsock device and its guest side until
 * SIGTERM/SIGINT, then removes its sockets. With the default loopback guest,
 * guest processes reach vsock through `<guest-dir>/vsock.sock` (the
 * directory is created, 0700, if it does not exist; its parent must).
 * `--config` reads the `[hypervisor]` access keys: who may connect
 * (`allowed_uids`, `allowed_gids`) and which host ports a guest may reach
 * (`guest_connect_ports`); see src/access/.
 * Sends READY=1 / STOPPING=1 to $NOTIFY_SOCKET (systemd Type=notify).
 * `--credit` / `--buf-alloc` set every connection's receive window and
 * CREDIT_UPDATE rule; SIGUSR2 logs the connection tables (and the vhost-user
 * rings) and, with `--metrics <file>`, rewrites the metrics file
 * (src/device/metrics.ts), which is also written once more at exit.
 */
import { type Command, Option } from 'commander';
import { CREDIT_POLICIES, type CreditPolicyName, creditWithWindow } from '../device/defaults.js';
import type { LoopbackTransport } from '../device/transport/loopback/loopback-transport.js';
import type { VhostUserVsockTransport } from '../device/transport/vhost-user/vsock-transport.js';
import { writeJsonAtomically } from '../util/atomic-file.js';
import { isOrphaned } from '../util/lifeline.js';
import { createLogger } from '../util/log.js';
import { keepYoungGenerationSmall } from '../util/young-generation.js';
import { onTermination, parseCid, parseSize } from './options.js';

interface VmmOptions {
  hvsock: string;
  guestDir?: string;
  vhostUser?: string;
  allowUnsealedMemory?: boolean;
  guestCid: number;
  credit: CreditPolicyName;
  bufAlloc?: number;
  metrics?: string;
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
        'a front-end that truncates it then crashes the vmm (config: hypervisor.allow_unsealed_memory)',
    )
    .option('--guest-cid <cid>', 'guest CID', parseCid, 3)
    .addOption(
      new Option(
        '--credit <policy>',
        'per-connection receive window and CREDIT_UPDATE rule: linux (256 KiB, an update every 64 KiB forwarded or when the guest sees under 64 KiB free; default) or firecracker (64 KiB, an update when the guest sees under 4 KiB free)',
      )
        .choices(Object.keys(CREDIT_POLICIES))
        .default('linux'),
    )
    .option(
      '--buf-alloc <size>',
      'receive window per connection (buf_alloc), e.g. 128KiB; updates as for linux, scaled',
      parseSize,
    )
    .option('--config <toml>', 'configuration file: the [hypervisor] access keys (see config.toml.example)')
    .option('--metrics <file>', 'write the device counters as JSON to <file> on SIGUSR2 and at exit')
    .action(async (opts: VmmOptions) => {
      const log = createLogger('vmm');
      // Connection storms must not leave the JavaScript heap grown for good (util/young-generation.ts).
      keepYoungGenerationSmall();
      if (!opts.guestDir === !opts.vhostUser) {
        throw new Error('give exactly one guest: --guest-dir (loopback) or --vhost-user (QEMU)');
      }
      // The device and only the guest transport asked for load when the vmm runs.
      const [{ HybridVsockDevice }, { notifyReady, notifyStopping }, metrics, { loadConfig }, access] =
        await Promise.all([
          import('../device/hybrid-device.js'),
          import('../util/sd-notify.js'),
          import('../device/metrics.js'),
          import('../config/load.js'),
          Promise.all([import('../access/context.js'), import('../access/policy.js')]),
        ]);
      const [{ installAccess }, { AccessPolicy }] = access;
      const hypervisor = loadConfig(opts.config).hypervisor;
      installAccess(AccessPolicy.fromConfig(hypervisor), log.child('access'));
      const credit =
        opts.bufAlloc === undefined ? CREDIT_POLICIES[opts.credit] : creditWithWindow(opts.bufAlloc);
      const device = new HybridVsockDevice({
        hvsockPath: opts.hvsock,
        guestCid: opts.guestCid,
        log,
        credit,
        maxWaitingClients: hypervisor.max_waiting_clients,
      });
      let guestStack: LoopbackTransport['stack'] | null = null;
      let vhostUser: VhostUserVsockTransport | null = null;
      let seq = 0;
      const writeMetrics = () => {
        if (!opts.metrics) return;
        const doc = metrics.collectMetrics(
          {
            device,
            ...(guestStack ? { guest: guestStack.endpoint } : {}),
            ...(vhostUser ? { vhostUser } : {}),
          },
          ++seq,
        );
        try {
          writeJsonAtomically(opts.metrics, doc);
        } catch (err) {
          log.warn(`metrics file ${opts.metrics}: ${(err as Error).message}`);
        }
      };
      // SIGUSR2: log the connection tables (device, the loopback guest's, the vhost-user rings), write the
      // metrics. Handled from before the device starts: its default action would end the process.
      process.on('SIGUSR2', () => {
        log.info(`device connections (${device.endpoint.size}):\n  ${device.endpoint.dump().join('\n  ')}`);
        if (guestStack) {
          const guest = guestStack.endpoint;
          log.info(`guest connections (${guest.size}):\n  ${guest.dump().join('\n  ')}`);
        }
        if (vhostUser?.connected)
          log.info(
            `vhost-user rings:\n  ${vhostUser
              .rings()
              .map((r) => r.describe())
              .join('\n  ')}`,
          );
        writeMetrics();
      });
      if (opts.vhostUser) {
        const { VhostUserVsockTransport } = await import('../device/transport/vhost-user/vsock-transport.js');
        vhostUser = new VhostUserVsockTransport({
          socketPath: opts.vhostUser,
          guestCid: opts.guestCid,
          log: log.child('vhost-user'),
          allowUnsealedMemory: (opts.allowUnsealedMemory ?? false) || hypervisor.allow_unsealed_memory,
        });
        device.start(vhostUser);
        log.info(
          `vhost-user-vsock backend on ${opts.vhostUser} (start QEMU with -device vhost-user-vsock-pci)`,
        );
      } else {
        const { LoopbackTransport } = await import('../device/transport/loopback/loopback-transport.js');
        const loopback = new LoopbackTransport(
          opts.guestCid,
          opts.guestDir!,
          log,
          hypervisor.max_waiting_clients,
        );
        guestStack = loopback.stack;
        device.start(loopback);
        log.info(`loopback guest: AF_VSOCK stand-in at ${loopback.standin.socketPath}`);
      }
      onTermination(async () => {
        writeMetrics();
        // An orphan's supervisor (run) is gone, and its notify socket with it.
        if (!isOrphaned()) await notifyStopping();
        await device.stop();
        log.info('stopped');
      });
      await notifyReady();
    });
}
