/**
 * A live `vmm` + `agent` pair for the agent fuzzer (the agent as the e2e
 * tests run it: a CLI child on the loopback guest's stand-in), restarted
 * together after a failed case. A Broker in the test process gives the fresh
 * valid request (CreateContainer + StartContainer + WaitProcess of
 * /bin/true through passfd, with containerd-style FIFOs) and removes the
 * containers a case may have created.
 */

import { Broker } from '../../../src/broker/broker.js';
import { agentMethods } from '../../../src/protocol/agent-api.js';
import { GrpcCode } from '../../../src/protocol/ttrpc.js';
import { TtrpcError } from '../../../src/ttrpc/errors.js';
import { createLogger } from '../../../src/util/log.js';
import {
  childPids,
  e2eConfig,
  HashingReader,
  makeFifos,
  openWriter,
  removeFifos,
  waitUntil,
  withTimeout,
  writeAndClose,
} from '../../e2e/support.js';
import { Captured, spawnCli, stopChild } from '../../support/cli.js';
import { keepLog, ProcessHealth } from './process-health.js';
import { VmmTarget } from './vmm-target.js';

/** How long the agent waits for a passfd stream a request names: short, so bogus ports fail fast. */
export const STREAM_WAIT_MS = 150;
/**
 * The agent registers each accepted stream this late (its test hook), so
 * requests naming a case's streams really wait for them, and whatever else the
 * case sends meanwhile (RemoveContainer, a second exec) races with the wait.
 */
export const ACCEPT_DELAY_MS = 60;

export class AgentTarget {
  readonly vmm = new VmmTarget();
  agentHealth!: ProcessHealth;
  broker!: Broker;
  private agent: ReturnType<typeof spawnCli> | null = null;
  private agentLog: Captured | null = null;
  private freshId = 0;

  get hvsock(): string {
    return this.vmm.hvsock;
  }

  get agentPid(): number {
    return this.agent!.pid!;
  }

  markDirty(): void {
    this.vmm.markDirty();
  }

  /** Both processes running, warmed up, baselines taken; a fresh pair after a crash or a failed case. */
  async ensure(): Promise<void> {
    const restarts = this.vmm.restarts;
    const agentDead = !this.agent || this.agent.exitCode !== null || this.agent.signalCode !== null;
    if (agentDead) this.vmm.markDirty();
    await this.vmm.ensure();
    if (this.agent && this.vmm.restarts === restarts && !agentDead) return;
    await this.stopAgent();
    const agent = spawnCli(
      [
        'agent',
        '--guest-dir',
        this.vmm.vmm.guestDir,
        '--stream-wait-ms',
        String(STREAM_WAIT_MS),
        '--accept-delay-ms',
        String(ACCEPT_DELAY_MS),
      ],
      {
        env: { ...process.env, PASSFD_LOG: process.env.PASSFD_LOG ?? 'info' },
      },
    );
    this.agent = agent;
    this.agentLog = new Captured(agent.stderr);
    await this.agentLog.waitFor(/agent ready/);
    const log = this.agentLog;
    this.agentHealth = new ProcessHealth(
      'agent',
      agent.pid!,
      () =>
        agent.exitCode !== null || agent.signalCode !== null
          ? `${agent.signalCode ?? `exit ${agent.exitCode}`}`
          : null,
      () => log.text.split('\n').slice(-15).join('\n'),
    );
    this.broker = new Broker({
      hvsockPath: this.hvsock,
      config: e2eConfig(true),
      log: createLogger('fuzz-broker'),
    });
    for (let i = 0; i < 3; i++) await this.freshRequest();
    await new Promise((r) => setTimeout(r, 200));
    this.vmm.health.takeBaseline();
    this.agentHealth.takeBaseline();
  }

  /** A real container through passfd: CreateContainer, StartContainer, stdin, stdout, WaitProcess → 0. */
  async freshRequest(): Promise<void> {
    const id = `fresh-${process.pid}-${this.freshId++}`;
    const fifos = makeFifos(this.vmm.scratch, id);
    try {
      const proc = await withTimeout(
        this.broker.start({ containerId: id, args: ['/bin/cat'], fifos }),
        10_000,
        'CreateContainer + StartContainer',
      );
      const stdout = new HashingReader(fifos.stdout, true);
      const stderr = new HashingReader(fifos.stderr!);
      await writeAndClose(openWriter(fifos.stdin), [Buffer.from('fresh request\n')]);
      await proc.closeStdin();
      const code = await withTimeout(proc.wait(), 10_000, 'WaitProcess');
      await withTimeout(stdout.done, 10_000, 'stdout EOF');
      stdout.close();
      stderr.close();
      if (code !== 0 || stdout.text !== 'fresh request\n') {
        throw new Error(`fresh container: exit ${code}, stdout ${JSON.stringify(stdout.text)}`);
      }
    } finally {
      removeFifos(fifos);
    }
  }

  /** Removes containers a case may have created (NOT_FOUND is fine), then waits until the agent has no child. */
  async removeContainers(ids: Iterable<string>): Promise<void> {
    const client = await this.broker.agent();
    for (const containerId of ids) {
      try {
        await client.callTyped(agentMethods.RemoveContainer, { containerId }, { timeoutMs: 5000 });
      } catch (err) {
        if (!(err instanceof TtrpcError && err.code === GrpcCode.NOT_FOUND)) throw err;
      }
    }
    const pid = this.agentPid;
    await waitUntil(
      () => childPids(pid).length === 0,
      5000,
      `agent's child processes to end: ${childPids(pid)}`,
    ).catch((err: Error) => {
      this.agentHealth.assertAlive();
      throw err;
    });
  }

  private async stopAgent(): Promise<void> {
    await this.broker?.close().catch(() => {});
    if (!this.agent) return;
    await stopChild(this.agent);
    keepLog('agent', this.agent.pid!, this.agentLog?.text ?? '');
  }

  async stop(): Promise<void> {
    await this.stopAgent();
    await this.vmm.stop();
  }
}
