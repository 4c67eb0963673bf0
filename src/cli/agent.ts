/**
 * `passfd-broker agent`: the guest agent. Serves Kata's AgentService over
 * ttrpc on the agent port and accepts passfd streams on the passfd listener
 * port. In a loopback guest it reaches vsock through `--guest-dir`; inside a
 * real VM (QEMU + virtio-vsock) `--vsock` uses AF_VSOCK sockets. Without
 * `--passfd-port` the port comes from $AGENT_PASSFD_LISTENER_PORT (the kernel
 * command line's `agent.passfd_listener_port=<port>`, as Kata's agent reads it),
 * else 1027.
 * Sends READY=1 / STOPPING=1 to $NOTIFY_SOCKET.
 */
import { type Command, Option } from 'commander';
import { OUTPUT_RELAYS, type OutputRelay } from '../agent/process/output-relay.js';
import type { GuestVsock } from '../guest-vsock/types.js';
import { isOrphaned } from '../util/lifeline.js';
import { createLogger } from '../util/log.js';
import { fromEnv, onTermination, parseMs, parsePort } from './options.js';

const DEFAULT_PASSFD_PORT = 1027;

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the guest agent (ttrpc AgentService + passfd stream listener)')
    .option('--guest-dir <dir>', 'loopback guest directory (AF_VSOCK stand-in vsock.sock)')
    .option('--vsock', 'real guest: use AF_VSOCK sockets (instead of --guest-dir)', false)
    .option(
      '--passfd-port <port>',
      'vsock port for passfd streams (default $AGENT_PASSFD_LISTENER_PORT, else 1027)',
      parsePort,
    )
    .option('--agent-port <port>', 'vsock port of the ttrpc AgentService', parsePort, 1024)
    .option('--stream-wait-ms <ms>', 'how long a request waits for a passfd stream it names', parseMs, 10_000)
    .option(
      '--drain-timeout-ms <ms>',
      'after an exit, how long to wait for output held open by leftover children',
      parseMs,
      3000,
    )
    .option(
      '--standin-wait-ms <ms>',
      'with --guest-dir: wait up to <ms> for the vmm’s stand-in socket (event-driven; default 0: fail at once)',
      parseMs,
      0,
    )
    .addOption(
      new Option(
        '--output-relay <how>',
        'passfd stdout/stderr: splice, copy (read/write, larger vsock packets), or auto (copy into AF_VSOCK on kernels before 6.5, whose splice sends a packet per page; else splice)',
      )
        .choices(OUTPUT_RELAYS)
        .default('auto'),
    )
    .option('--accept-delay-ms <ms>', '(testing) delay registering accepted passfd streams', parseMs, 0)
    .action(
      async (opts: {
        guestDir?: string;
        vsock: boolean;
        passfdPort?: number;
        agentPort: number;
        streamWaitMs: number;
        drainTimeoutMs: number;
        standinWaitMs: number;
        acceptDelayMs: number;
        outputRelay: OutputRelay;
      }) => {
        const log = createLogger('agent');
        if (!opts.guestDir === !opts.vsock) {
          throw new Error('give exactly one of --guest-dir (loopback guest) or --vsock (AF_VSOCK)');
        }
        const passfdPort =
          opts.passfdPort ?? fromEnv('AGENT_PASSFD_LISTENER_PORT', parsePort) ?? DEFAULT_PASSFD_PORT;
        if (passfdPort === opts.agentPort) throw new Error('--passfd-port and --agent-port must differ');
        // The agent's modules (ttrpc, protobuf, the native bindings) load only when it runs.
        const [{ Agent }, { AfVsock }, { StandinVsock }, { notifyReady, notifyStopping }] = await Promise.all(
          [
            import('../agent/agent.js'),
            import('../guest-vsock/af-vsock.js'),
            import('../guest-vsock/standin.js'),
            import('../util/sd-notify.js'),
          ],
        );
        const vsock: GuestVsock = opts.vsock
          ? new AfVsock({
              // net.Socket cannot wrap AF_VSOCK fds: ttrpc connections come bridged over AF_UNIX.
              unixBridgePorts: [opts.agentPort],
              onBridgeError: (err) => log.warn(`ttrpc vsock bridge: ${err.message}`),
            })
          : new StandinVsock(opts.guestDir!, { waitMs: opts.standinWaitMs });
        const agent = new Agent({
          vsock,
          passfdPort,
          agentPort: opts.agentPort,
          streamWaitMs: opts.streamWaitMs,
          drainTimeoutMs: opts.drainTimeoutMs,
          acceptDelayMs: opts.acceptDelayMs,
          outputRelay: opts.outputRelay,
          // The containers' /dev template lives beside the stand-in, in the agent's private directory.
          ...(opts.guestDir ? { runtimeDir: opts.guestDir } : {}),
          log,
        });
        await agent.start();
        onTermination(async () => {
          // An orphan's supervisor (run) is gone, and its notify socket with it.
          if (!isOrphaned()) await notifyStopping();
          await agent.stop();
        });
        await notifyReady();
      },
    );
}
