/**
 * `passfd-broker agent`: the guest agent. Serves Kata's AgentService over
 * ttrpc on the agent port and accepts passfd streams on the passfd listener
 * port. In a loopback guest it reaches vsock through `--guest-dir`.
 * Sends READY=1 / STOPPING=1 to $NOTIFY_SOCKET.
 */
import type { Command } from 'commander';
import { Agent } from '../agent/agent.js';
import { StandinVsock } from '../guest-vsock/standin.js';
import { createLogger } from '../util/log.js';
import { notifyReady, notifyStopping } from '../util/sd-notify.js';
import { onTermination, parseMs, parsePort } from './options.js';

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the guest agent (ttrpc AgentService + passfd stream listener)')
    .option('--guest-dir <dir>', 'loopback guest directory (AF_VSOCK stand-in vsock.sock)')
    .option('--passfd-port <port>', 'vsock port for passfd streams (passfd_listener_port)', parsePort, 1027)
    .option('--agent-port <port>', 'vsock port of the ttrpc AgentService', parsePort, 1024)
    .option('--stream-wait-ms <ms>', 'how long a request waits for a passfd stream it names', parseMs, 10_000)
    .option(
      '--drain-timeout-ms <ms>',
      'after an exit, how long to wait for output held open by leftover children',
      parseMs,
      3000,
    )
    .option('--accept-delay-ms <ms>', '(testing) delay registering accepted passfd streams', parseMs, 0)
    .action(
      async (opts: {
        guestDir?: string;
        passfdPort: number;
        agentPort: number;
        streamWaitMs: number;
        drainTimeoutMs: number;
        acceptDelayMs: number;
      }) => {
        const log = createLogger('agent');
        if (!opts.guestDir) throw new Error('--guest-dir is required for the loopback guest');
        if (opts.passfdPort === opts.agentPort) throw new Error('--passfd-port and --agent-port must differ');
        const agent = new Agent({
          vsock: new StandinVsock(opts.guestDir),
          passfdPort: opts.passfdPort,
          agentPort: opts.agentPort,
          streamWaitMs: opts.streamWaitMs,
          drainTimeoutMs: opts.drainTimeoutMs,
          acceptDelayMs: opts.acceptDelayMs,
          log,
        });
        await agent.start();
        onTermination(async () => {
          await notifyStopping();
          await agent.stop();
        });
        await notifyReady();
      },
    );
}
