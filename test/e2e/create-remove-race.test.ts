/**
 * RemoveContainer while a CreateContainer or ExecProcess for that container
 * is still waiting for its passfd streams (found by the agent fuzzer). The
 * waiting request must not touch a container created later under the same
 * id; streams it claims after the removal are closed, and no process is
 * started into a container nobody can reach (nobody could kill it). Two
 * ExecProcess with one exec id do not both start.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker/broker.js';
import { type EmbeddedStack, startEmbeddedStack } from '../../src/broker/embedded-stack.js';
import { hybridConnect } from '../../src/broker/hvsock-client.js';
import { agentMethods } from '../../src/protocol/agent-api.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import type { TtrpcClient } from '../../src/ttrpc/client.js';
import { createLogger } from '../../src/util/log.js';
import { fdCount, fdsSettle } from '../support/cli.js';
import { childPids, e2eConfig, waitUntil, withTimeout } from './support.js';

const STREAM_WAIT_MS = 1500;
const ACCEPT_DELAY_MS = 300;

let stack: EmbeddedStack;
let broker: Broker;
let agent: TtrpcClient;

beforeAll(async () => {
  const config = e2eConfig(true);
  config.runtime.agent_stream_wait_ms = STREAM_WAIT_MS;
  // The agent registers each accepted stream late, so a create is sure to be waiting for it.
  stack = await startEmbeddedStack({ config, agentArgs: ['--accept-delay-ms', String(ACCEPT_DELAY_MS)] });
  broker = new Broker({ hvsockPath: stack.hvsockPath, config, log: createLogger('race-broker') });
  agent = await broker.agent();
});

afterAll(async () => {
  await broker?.close();
  await stack?.stop();
});

const create = (containerId: string, args: string[], stdoutPort = 0) =>
  agent.callTyped(agentMethods.CreateContainer, {
    containerId,
    OCI: { Process: { Args: args } },
    stdoutPort,
  });
const remove = (containerId: string) => agent.callTyped(agentMethods.RemoveContainer, { containerId });

describe('RemoveContainer during a CreateContainer that waits for its streams', () => {
  it('the waiting create, failing later, leaves a container re-created under the same id alone', async () => {
    const first = create('race-a', ['/bin/true'], 0x7fff_0000); // a stream that never comes
    const firstDone = first.catch((err) => err);
    await new Promise((r) => setTimeout(r, 100));
    await remove('race-a');
    await create('race-a', ['/bin/sleep', '30']);
    expect(await withTimeout(firstDone, 5000, 'first create')).toMatchObject({
      code: GrpcCode.DEADLINE_EXCEEDED,
    });
    // The second container is still there and can be started, signalled and waited for.
    await agent.callTyped(agentMethods.StartContainer, { containerId: 'race-a' });
    await agent.callTyped(agentMethods.SignalProcess, { containerId: 'race-a', execId: '', signal: 9 });
    const st = await agent.callTyped(agentMethods.WaitProcess, { containerId: 'race-a', execId: '' });
    expect(st.status).toBe(128 + 9);
    await remove('race-a');
  });

  it('a stream claimed after the removal is closed, and the create fails', async () => {
    const agentPid = stack.agent.pid!;
    const baseline = fdCount(agentPid);
    const { socket, hostPort } = await hybridConnect(stack.hvsockPath, 1027);
    const eof = new Promise<void>((resolve) => {
      socket.on('end', resolve);
      socket.on('close', resolve);
      socket.resume();
    });
    socket.on('error', () => {});
    const created = create('race-b', ['/bin/true'], hostPort).catch((err) => err);
    // Meanwhile StartContainer says what is going on, not "already started".
    await expect(
      agent.callTyped(agentMethods.StartContainer, { containerId: 'race-b' }),
    ).rejects.toMatchObject({
      code: GrpcCode.FAILED_PRECONDITION,
      message: 'container race-b is still being created',
    });
    await remove('race-b');
    expect(await withTimeout(created, 5000, 'create')).toMatchObject({ code: GrpcCode.NOT_FOUND });
    await withTimeout(eof, 5000, 'the agent closing the stream it claimed');
    socket.destroy();
    expect(await fdsSettle(agentPid, baseline)).toBe(baseline);
  });

  it('an exec waiting for its streams when the container is removed starts nothing', async () => {
    await create('race-c', ['/bin/sleep', '30']);
    await agent.callTyped(agentMethods.StartContainer, { containerId: 'race-c' });
    const { socket, hostPort } = await hybridConnect(stack.hvsockPath, 1027);
    socket.on('error', () => {});
    const exec = agent
      .callTyped(agentMethods.ExecProcess, {
        containerId: 'race-c',
        execId: 'late',
        process: { Args: ['/bin/sleep', '30'] },
        stdoutPort: hostPort,
      })
      .catch((err) => err);
    await remove('race-c');
    expect(await withTimeout(exec, 5000, 'exec')).toMatchObject({ code: GrpcCode.NOT_FOUND });
    const agentPid = stack.agent.pid!;
    await waitUntil(() => childPids(agentPid).length === 0, 5000, 'no process left in the agent');
    socket.destroy();
  });

  it('two ExecProcess with one exec id: the second is refused while the first waits for its stream', async () => {
    await create('race-d', ['/bin/sleep', '30']);
    await agent.callTyped(agentMethods.StartContainer, { containerId: 'race-d' });
    const streams = await Promise.all([
      hybridConnect(stack.hvsockPath, 1027),
      hybridConnect(stack.hvsockPath, 1027),
    ]);
    for (const { socket } of streams) socket.on('error', () => {});
    const exec = (stdoutPort: number) =>
      agent
        .callTyped(agentMethods.ExecProcess, {
          containerId: 'race-d',
          execId: 'twin',
          process: { Args: ['/bin/sleep', '30'] },
          stdoutPort,
        })
        .then(
          () => 'ok',
          (err) => err,
        );
    const [a, b] = await Promise.all(streams.map((s) => exec(s.hostPort)));
    expect(a).toBe('ok');
    expect(b).toMatchObject({ code: GrpcCode.ALREADY_EXISTS });
    await remove('race-d');
    const agentPid = stack.agent.pid!;
    await waitUntil(() => childPids(agentPid).length === 0, 5000, 'no process left in the agent');
    for (const { socket } of streams) socket.destroy();
  });
});
