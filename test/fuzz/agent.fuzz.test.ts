/**
 * Mutation fuzzing of a running `agent` over ttrpc (`CONNECT 1024` through a
 * running `vmm`): mutated requests of every AgentService method, unknown
 * services and methods, bad stream ids, frame types and flags, deadlines,
 * oversized, large and truncated frames, garbage, closes mid-frame, and
 * passfd-style streams named as a process's stdio (or bogus ports).
 *
 * After every case: containers the case may have created are removed, the
 * agent has no child process left, the agent and the vmm are alive and their
 * fd counts are back to the warmed-up baselines; every reply the agent sent
 * was a well-formed ttrpc response on a stream id that was sent. After the
 * run: a real container (CreateContainer + StartContainer + WaitProcess of
 * /bin/cat through passfd) works, fds are at the baselines, RSS within
 * RSS_MARGIN. Failures are shrunk on a fresh pair of processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAll } from '../support/cli.js';
import { type AgentCase, agentCaseArb, CONTAINER_IDS } from './agent-ttrpc-cases.js';
import { AgentTarget, STREAM_WAIT_MS } from './support/agent-target.js';
import {
  type Action,
  assertAgentReplies,
  buildConnection,
  hasReply,
  scanAsAgent,
} from './support/agent-wire.js';
import { MiB } from './support/process-health.js';
import { RawClient } from './support/raw-client.js';
import { fuzz, fuzzSettings, fuzzTimeout } from './support/runner.js';

const AGENT_BUDGET_MS = 40_000;
/** As for the vmm fuzzer: V8 returns memory lazily, so the margin is generous. */
const RSS_MARGIN = 64 * MiB;
const AGENT_PORT = 1024;
const PASSFD_PORT = 1027;

const settings = fuzzSettings(AGENT_BUDGET_MS);
const target = new AgentTarget();
let filtered = 0;

beforeAll(async () => {
  await target.ensure();
});

afterAll(async () => {
  await target.stop();
  await stopAll();
});

/** `CONNECT <port>` on the hybrid-vsock socket; resolves the client and the host port of the connection. */
async function hybridConnect(
  port: number,
  clients: RawClient[],
): Promise<{ client: RawClient; hostPort: number }> {
  // Replies of ReadStdout can be 1 MiB: keep enough of what the agent sends to check it whole.
  const client = new RawClient(target.hvsock, 8 * 1024 * 1024);
  clients.push(client);
  client.send(Buffer.from(`CONNECT ${port}\n`));
  await client.waitFor(() => client.received.includes(0x0a), 5000);
  const m = /^OK (\d+)\n/.exec(client.received.toString('latin1'));
  if (!m)
    throw new Error(
      `CONNECT ${port}: the device answered ${JSON.stringify(client.received.toString('latin1'))}`,
    );
  client.received = client.received.subarray(m[0].length);
  return { client, hostPort: Number(m[1]) };
}

async function runConnection(actions: Action[], conn: RawClient, streams: RawClient[]): Promise<void> {
  for (const a of actions) {
    switch (a.kind) {
      case 'send':
        if (!(await conn.sendAll(a.data))) return;
        if (a.settle) await conn.settled();
        if (a.awaitId !== undefined) await conn.waitFor(() => hasReply(conn.received, a.awaitId!), 2000);
        break;
      case 'stream-data':
        streams[a.stream]?.send(a.data);
        break;
      case 'stream-close':
        streams[a.stream]?.close();
        break;
      case 'pause':
        await conn.waitFor(() => false, a.ms);
        break;
      case 'shutdown-write':
        conn.shutdownWrite();
        break;
      case 'close':
        conn.close();
        return;
    }
    conn.drain();
  }
}

async function runAgentCase(c: AgentCase): Promise<void> {
  const clients: RawClient[] = [];
  let spawns = false;
  const containerIds = new Set(CONTAINER_IDS);
  try {
    const streams: RawClient[] = [];
    const streamPorts: number[] = [];
    for (let i = 0; i < c.streams; i++) {
      const { client, hostPort } = await hybridConnect(PASSFD_PORT, clients);
      streams.push(client);
      streamPorts.push(hostPort);
    }
    const plans = c.conns.map((steps) => {
      const actions = buildConnection(steps, streamPorts);
      return { actions, scan: scanAsAgent(actions) };
    });
    const unsafe = plans.find((p) => p.scan.unsafe !== null);
    if (unsafe) {
      filtered++;
      return; // never sent: the agent would run something outside the safe list
    }
    for (const p of plans) {
      spawns ||= p.scan.spawns;
      for (const id of p.scan.containerIds) containerIds.add(id);
    }
    const conns = await Promise.all(plans.map(() => hybridConnect(AGENT_PORT, clients)));
    await Promise.all(plans.map((p, i) => runConnection(p.actions, conns[i]!.client, streams)));
    await Promise.all(conns.map(({ client }) => client.waitFor(() => false, 50)));
    for (const [i, p] of plans.entries()) assertAgentReplies(conns[i]!.client.received, p.scan);
  } finally {
    for (const cl of clients) cl.close();
  }
  // A request whose connection closed may still be claiming its streams; it gives up after STREAM_WAIT_MS.
  if (spawns) await new Promise((r) => setTimeout(r, STREAM_WAIT_MS + 100));
  await target.removeContainers(containerIds);
  target.vmm.health.assertAlive();
  target.agentHealth.assertAlive();
  await target.agentHealth.assertFdsBack();
  await target.vmm.health.assertFdsBack();
}

/** Runs `body` on live processes; after a failure the next case gets a fresh pair (a leak stays leaked). */
async function guarded(body: () => Promise<void>): Promise<void> {
  try {
    await target.ensure();
    await body();
  } catch (err) {
    target.markDirty();
    throw err;
  }
}

describe('agent fuzzing', () => {
  it('ttrpc: mutated AgentService requests, bad frames and stream ids, stdio streams and bogus ports', {
    timeout: fuzzTimeout(settings),
  }, async () => {
    const file = 'test/fuzz/agent.fuzz.test.ts';
    const r = await fuzz('agent ttrpc', file, agentCaseArb, (c) => guarded(() => runAgentCase(c)), settings);
    target.vmm.health.assertAlive();
    target.agentHealth.assertAlive();
    await target.freshRequest();
    await target.agentHealth.assertFdsBack();
    await target.vmm.health.assertFdsBack();
    const rss = target.agentHealth.assertRssWithin(RSS_MARGIN);
    target.vmm.health.assertRssWithin(RSS_MARGIN);
    expect(rss).toBeGreaterThan(0);
    console.log(
      `agent ttrpc fuzz: ${r.cases} cases in ${r.elapsedMs} ms (seed ${settings.seed}), ${filtered} not sent ` +
        `(unsafe command), ${target.vmm.restarts} restart(s); ${target.agentHealth.describe()}; ${target.vmm.health.describe()}`,
    );
  });
});
