/**
 * The guest agent: listens on `passfd_listener_port` for passfd streams and
 * on the agent port for ttrpc (`grpc.AgentService`), over whichever
 * GuestVsock the guest offers (the loopback stand-in or AF_VSOCK): the agent
 * code does not care which. Its processes end with it (guardian.ts).
 */
import net from 'node:net';
import { closeQuietly } from '../../native-bindings/index.js';
import type { GuestVsock, VsockListener } from '../guest-vsock/types.js';
import { TtrpcServer } from '../ttrpc/server.js';
import type { Logger } from '../util/log.js';
import { AgentService } from './agent-service.js';
import { ProcessGuardian } from './guardian.js';
import { PassfdStreams } from './passfd-streams.js';
import type { OutputRelay } from './process/output-relay.js';

export interface AgentOptions {
  vsock: GuestVsock;
  passfdPort: number;
  agentPort: number;
  /** How long a request waits for a passfd stream, and how long an unclaimed stream is kept. */
  streamWaitMs: number;
  /** Test hook: delay before a passfd stream is registered (shows the accept race is handled). */
  acceptDelayMs?: number;
  drainTimeoutMs?: number;
  /** How passfd stdout/stderr leave the agent (default 'auto': see process/output-relay.ts). */
  outputRelay?: OutputRelay;
  /** Where the agent may keep small runtime files (default: the OS temp dir). */
  runtimeDir?: string;
  log: Logger;
}

export class Agent {
  readonly streams: PassfdStreams;
  readonly service: AgentService;
  private readonly server: TtrpcServer;
  private readonly listeners: VsockListener[] = [];
  private readonly guardian: ProcessGuardian;

  constructor(private readonly opts: AgentOptions) {
    this.streams = new PassfdStreams(opts.streamWaitMs, opts.log.child('passfd'));
    this.guardian = new ProcessGuardian(opts.log.child('guardian'));
    this.service = new AgentService(
      this.streams,
      opts.log,
      {
        ...(opts.drainTimeoutMs !== undefined ? { drainTimeoutMs: opts.drainTimeoutMs } : {}),
        ...(opts.outputRelay ? { outputRelay: opts.outputRelay } : {}),
      },
      this.guardian,
      opts.runtimeDir,
    );
    this.server = new TtrpcServer({ logger: opts.log.child('ttrpc') });
    this.service.register(this.server);
  }

  async start(): Promise<void> {
    const { vsock, passfdPort, agentPort, log } = this.opts;
    this.guardian.start();
    this.listeners.push(
      await vsock.listen(passfdPort, (s) => {
        log.debug(`passfd stream from host port ${s.peerPort}`);
        if (this.opts.acceptDelayMs)
          setTimeout(() => this.streams.add(s.peerPort, s.fd), this.opts.acceptDelayMs);
        else this.streams.add(s.peerPort, s.fd);
      }),
    );
    this.listeners.push(
      await vsock.listen(agentPort, (s) => {
        let sock: net.Socket;
        try {
          sock = new net.Socket({ fd: s.fd, readable: true, writable: true });
        } catch (err) {
          closeQuietly(s.fd);
          log.warn(`ttrpc connection from port ${s.peerPort}: ${(err as Error).message}`);
          return;
        }
        void this.server.serve(sock);
      }),
    );
    log.info(
      `agent ready: ttrpc on vsock port ${agentPort}, passfd streams on ${passfdPort} (${vsock.kind})`,
    );
  }

  async stop(): Promise<void> {
    for (const l of this.listeners) l.close();
    await this.server.close();
    this.service.close();
    this.guardian.close();
    this.streams.close();
  }
}
