/**
 * containerd-shim-passfd-v2 driven directly, as containerd drives it but
 * with this test in containerd's place: `start` in a bundle (with
 * $TTRPC_ADDRESS naming an events server the test runs), the Task service
 * over ttrpc, `delete`. This reaches what `ctr` cannot: exact status codes
 * (NotImplemented, NotFound, AlreadyExists, FailedPrecondition,
 * InvalidArgument), Wait before Start, the events with their type URLs, a
 * FIFO path that does not exist, a Start that fails, and the DeleteResponse
 * of `delete` after a SIGKILLed shim. Each test checks that nothing is left:
 * processes started on the shim's behalf, mounts in the bundle, the socket,
 * the shim's temporary files.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBusyboxRootfs } from '../../src/containerd/busybox-image.js';
import { unmountUnder } from '../../src/containerd/mounts.js';
import {
  DeleteResponseSchema,
  type Envelope,
  eventsMethods,
  OCI_PROCESS_TYPE_URL,
  Status,
  TaskExitSchema,
  taskMethods,
} from '../../src/protocol/containerd-api.js';
import { MetricsSchema } from '../../src/protocol/gen/containerd/cgroups/v2/metrics_pb.js';
import { GrpcCode } from '../../src/protocol/ttrpc.js';
import { socketPathOf } from '../../src/shim/address.js';
import { identify, isAlive, killTrees, type ProcessIdentity } from '../../src/shim/process-tree.js';
import { STATE_FILE } from '../../src/shim/state-file.js';
import { TtrpcClient, TtrpcError, TtrpcServer } from '../../src/ttrpc/index.js';
import { mountsUnder } from '../../src/util/mountinfo.js';
import { requireContainerd, SHIM_BUNDLE, SHIM_WRAPPER } from './support.js';

const NS = 'shimtest';
const { O_RDONLY, O_NONBLOCK } = fs.constants;

interface Harness {
  dir: string;
  bundle: string;
  tmp: string;
  events: Envelope[];
  eventsSocket: string;
  id: string;
  close(): Promise<void>;
}

let h: Harness;
let n = 0;

beforeEach(async () => {
  requireContainerd();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pfd-shimapi-'));
  const bundle = path.join(dir, 'bundle');
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(tmp);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  const eventsSocket = path.join(dir, 'events.sock');
  const events: Envelope[] = [];
  const server = new TtrpcServer();
  server.registerTyped(eventsMethods.Forward, (req) => {
    if (req.envelope) events.push(req.envelope);
    return {};
  });
  const listener = net.createServer((s) => void server.serve(s));
  await new Promise<void>((resolve) => listener.listen(eventsSocket, resolve));
  h = {
    dir,
    bundle,
    tmp,
    events,
    eventsSocket,
    id: `api-${process.pid}-${n++}`,
    close: async () => {
      listener.close();
      await server.close();
    },
  };
});

afterEach(async () => {
  try {
    expect(await leftovers()).toEqual([]);
  } finally {
    // Whatever a failed test left: the shim and everything it started (they carry our TTRPC_ADDRESS).
    const marker = `TTRPC_ADDRESS=${h.eventsSocket}\0`;
    const left = fs.readdirSync('/proc').flatMap((name) => {
      try {
        return /^\d+$/.test(name) && fs.readFileSync(`/proc/${name}/environ`, 'utf8').includes(marker)
          ? [identify(Number(name))!]
          : [];
      } catch {
        return [];
      }
    });
    killTrees(left.filter(Boolean));
    const address = fs.existsSync(path.join(h.bundle, 'address'))
      ? fs.readFileSync(path.join(h.bundle, 'address'), 'utf8')
      : '';
    if (address) fs.rmSync(socketPathOf(address), { force: true });
    await h.close();
    unmountUnder(h.dir);
    fs.rmSync(h.dir, { recursive: true, force: true });
  }
});

/** What is left of the shim: its processes (by their environment), mounts, temporary files. */
async function leftovers(timeoutMs = 10_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const out: string[] = [];
    const marker = `TTRPC_ADDRESS=${h.eventsSocket}\0`;
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
      try {
        const env = fs.readFileSync(`/proc/${name}/environ`, 'utf8');
        const cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
        if (env.includes(marker) || (cmd.includes(h.bundle) && !cmd.startsWith('node'))) {
          out.push(`process ${name}: ${cmd.replace(/\0/g, ' ').slice(0, 120)}`);
        }
      } catch {
        // gone
      }
    }
    for (const m of mountsUnder(h.dir)) out.push(`mount ${m}`);
    for (const f of fs.readdirSync(h.tmp)) out.push(`tmp ${f}`);
    if (fs.existsSync(path.join(h.bundle, STATE_FILE))) out.push('state file');
    if (out.length === 0 || Date.now() > until) return out;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The shim binary as containerd runs it: the package's shell wrapper, or `node <bundle>` (`viaNode`). */
function shimCommand(action: 'start' | 'delete', extra: string[] = [], input?: Buffer, viaNode = false) {
  return spawnSync(
    viaNode ? process.execPath : SHIM_WRAPPER,
    [
      ...(viaNode ? [SHIM_BUNDLE] : []),
      '-namespace',
      NS,
      '-address',
      path.join(h.dir, 'containerd.sock'),
      '-publish-binary',
      '/bin/true',
      '-id',
      h.id,
      ...extra,
      action,
    ],
    {
      cwd: h.bundle,
      env: { ...process.env, TTRPC_ADDRESS: h.eventsSocket, TMPDIR: h.tmp },
      input,
      timeout: 60_000,
    },
  );
}

/** `start`, then a ttrpc client on the address it printed. */
async function startShim(viaNode = false): Promise<{ client: TtrpcClient; address: string }> {
  const r = shimCommand('start', [], undefined, viaNode);
  expect(r.status, r.stderr?.toString()).toBe(0);
  const address = r.stdout.toString();
  expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
  expect(fs.readFileSync(path.join(h.bundle, 'address'), 'utf8')).toBe(address);
  const sock = net.connect(socketPathOf(address));
  await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  return { client: new TtrpcClient(sock), address };
}

function writeSpec(args: string[], extra: Record<string, unknown> = {}): void {
  writeBusyboxRootfs(path.join(h.bundle, 'rootfs'));
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/' },
    root: { path: 'rootfs' },
    hostname: 'api-box',
    ...extra,
  };
  fs.writeFileSync(path.join(h.bundle, 'config.json'), JSON.stringify(spec));
}

function fifos(names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const p = path.join(h.dir, `${h.id}-${n}`);
    execFileSync('mkfifo', [p]);
    out[n] = p;
  }
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    if (err instanceof TtrpcError) return err.code;
    throw err;
  }
  return GrpcCode.OK;
}

async function shutdown(client: TtrpcClient, address: string): Promise<void> {
  await client.callTyped(taskMethods.Shutdown, { id: h.id }).catch(() => {});
  await client.close();
  const until = Date.now() + 10_000;
  while (fs.existsSync(socketPathOf(address)) && Date.now() < until)
    await new Promise((r) => setTimeout(r, 50));
  expect(fs.existsSync(socketPathOf(address))).toBe(false);
  // containerd runs `delete` after the shim is gone: after a clean shutdown it has nothing to do.
  const d = shimCommand('delete', ['-bundle', h.bundle]);
  expect(d.status).toBe(0);
  expect(d.stdout.length).toBe(0);
}

describe('the Task service, as containerd calls it', () => {
  it('answers every call with containerd’s codes, Wait works before Start, and events go out', async () => {
    writeSpec(['sh', '-c', 'echo out; sleep 1000']);
    const f = fifos(['stdout', 'stderr']);
    const reader = fs.openSync(f.stdout!, O_RDONLY | O_NONBLOCK);
    const { client, address } = await startShim();
    const t = taskMethods;
    const id = h.id;
    try {
      const conn = await client.callTyped(t.Connect, { id });
      expect(conn.shimPid).toBeGreaterThan(0);
      expect(fs.readFileSync(`/proc/${conn.shimPid}/cmdline`, 'utf8')).toContain(
        'containerd-shim-passfd-v2.js',
      );
      expect(conn.version).toContain('passfd-broker');
      const created = await client.callTyped(t.Create, {
        id,
        bundle: h.bundle,
        stdout: f.stdout,
        stderr: f.stderr,
      });
      // The VM's pid: the shim itself hosts the loopback guest's device.
      expect(created.pid).toBe(conn.shimPid);
      expect(await codeOf(client.callTyped(t.Create, { id, bundle: h.bundle }))).toBe(
        GrpcCode.ALREADY_EXISTS,
      );
      const state = await client.callTyped(t.State, { id });
      expect(state).toMatchObject({
        id,
        bundle: h.bundle,
        status: Status.CREATED,
        stdout: f.stdout,
        stderr: f.stderr,
      });
      const early = client.callTyped(t.Wait, { id }); // before Start
      for (const m of [t.Pause, t.Resume, t.Checkpoint, t.Update] as const) {
        expect(await codeOf(client.callTyped(m as typeof t.Pause, { id }))).toBe(GrpcCode.UNIMPLEMENTED);
      }
      // Metrics exist only for a running task.
      expect(await codeOf(client.callTyped(t.Stats, { id }))).toBe(GrpcCode.FAILED_PRECONDITION);
      expect((await client.callTyped(t.Start, { id })).pid).toBe(conn.shimPid);
      const stats = await client.callTyped(t.Stats, { id });
      expect(stats.stats?.typeUrl).toBe('io.containerd.cgroups.v2.Metrics');
      expect(fromBinary(MetricsSchema, stats.stats!.value).pids?.current).toBeGreaterThan(0n);
      expect(await codeOf(client.callTyped(t.Start, { id }))).toBe(GrpcCode.FAILED_PRECONDITION);
      expect((await client.callTyped(t.State, { id })).status).toBe(Status.RUNNING);
      expect((await client.callTyped(t.Pids, { id })).processes.map((p) => p.pid)).toEqual([conn.shimPid]);
      expect(await codeOf(client.callTyped(t.Delete, { id }))).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(await codeOf(client.callTyped(t.State, { id: 'nope' }))).toBe(GrpcCode.NOT_FOUND);
      expect(await codeOf(client.callTyped(t.State, { id, execId: 'nope' }))).toBe(GrpcCode.NOT_FOUND);
      const badSpec = create(AnySchema, { typeUrl: 'example.com/not-a-process', value: new Uint8Array() });
      expect(await codeOf(client.callTyped(t.Exec, { id, execId: 'x', spec: badSpec }))).toBe(
        GrpcCode.INVALID_ARGUMENT,
      );
      const processJson = Buffer.from(JSON.stringify({ args: ['true'], env: ['PATH=/bin'], cwd: '/' }));
      const spec = create(AnySchema, { typeUrl: OCI_PROCESS_TYPE_URL, value: processJson });
      await client.callTyped(t.Exec, { id, execId: 'e1', spec });
      expect(await codeOf(client.callTyped(t.Exec, { id, execId: 'e1', spec }))).toBe(
        GrpcCode.ALREADY_EXISTS,
      );
      await client.callTyped(t.Start, { id, execId: 'e1' });
      const execExit = await client.callTyped(t.Wait, { id, execId: 'e1' });
      expect(execExit.exitStatus).toBe(0);
      await client.callTyped(t.Delete, { id, execId: 'e1' });
      // Shutdown is ignored while a task remains.
      await client.callTyped(t.Shutdown, { id });
      expect((await client.callTyped(t.State, { id })).status).toBe(Status.RUNNING);
      await client.callTyped(t.Kill, { id, signal: 9 });
      const exit = await early;
      expect(exit.exitStatus).toBe(137);
      expect(Number(exit.exitedAt?.seconds)).toBeGreaterThan(0);
      expect(await codeOf(client.callTyped(t.Kill, { id, signal: 9 }))).toBe(GrpcCode.NOT_FOUND);
      const gone = await client.callTyped(t.Delete, { id });
      expect(gone.exitStatus).toBe(137);
      expect(fs.readFileSync(reader).toString()).toBe('out\n');
      // Events, in order, with containerd's type URLs.
      const topics = h.events.map((e) => `${e.topic} ${e.event?.typeUrl}`);
      expect(topics).toEqual([
        '/tasks/create containerd.events.TaskCreate',
        '/tasks/start containerd.events.TaskStart',
        '/tasks/exec-added containerd.events.TaskExecAdded',
        '/tasks/exec-started containerd.events.TaskExecStarted',
        '/tasks/exit containerd.events.TaskExit',
        '/tasks/exit containerd.events.TaskExit',
        '/tasks/delete containerd.events.TaskDelete',
      ]);
      expect(h.events.every((e) => e.namespace === NS)).toBe(true);
      const initExit = fromBinary(TaskExitSchema, h.events[5]!.event!.value);
      expect(initExit).toMatchObject({ containerId: id, id, exitStatus: 137 });
    } finally {
      fs.closeSync(reader);
      await shutdown(client, address);
    }
  });

  it('a FIFO path that does not exist fails Create with the path in the error, and nothing is left', async () => {
    writeSpec(['true']);
    const { client, address } = await startShim();
    try {
      const missing = path.join(h.dir, 'no-such-dir', `${h.id}-stdout`);
      const err = await client
        .callTyped(taskMethods.Create, { id: h.id, bundle: h.bundle, stdout: missing })
        .catch((e) => e);
      expect(err).toBeInstanceOf(TtrpcError);
      expect(err.message).toContain(missing);
      expect(await codeOf(client.callTyped(taskMethods.State, { id: h.id }))).toBe(GrpcCode.NOT_FOUND);
    } finally {
      await shutdown(client, address);
    }
  });

  it('a Start that fails (the cwd vanished after Create) is cleaned up by Delete', async () => {
    writeSpec(['sleep', '100'], {
      process: {
        terminal: false,
        user: { uid: 0, gid: 0 },
        args: ['sleep', '100'],
        env: ['PATH=/bin'],
        cwd: '/work',
      },
    });
    fs.mkdirSync(path.join(h.bundle, 'rootfs/work'));
    const { client, address } = await startShim();
    try {
      await client.callTyped(taskMethods.Create, { id: h.id, bundle: h.bundle });
      fs.rmdirSync(path.join(h.bundle, 'rootfs/work'));
      const err = await client.callTyped(taskMethods.Start, { id: h.id }).catch((e) => e);
      expect(err).toBeInstanceOf(TtrpcError);
      expect(err.message).toMatch(/chdir to cwd \("\/work"\)/);
      const d = await client.callTyped(taskMethods.Delete, { id: h.id });
      expect(d.exitStatus).toBe(0);
    } finally {
      await shutdown(client, address);
    }
  });
});

/** Every live descendant of `root` (by pid and start time, so a recycled pid is not mistaken for one). */
function descendants(root: number): ProcessIdentity[] {
  const parent = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const under = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === root) return true;
    return false;
  };
  return [...parent.keys()].filter(under).flatMap((pid) => identify(pid) ?? []);
}

describe('delete', () => {
  it('after a SIGKILLed shim: kills the guest and the container, unmounts, removes the socket, reports 137', async () => {
    writeSpec(['sh', '-c', 'sleep 1000 & exec sleep 1000']);
    // The rootfs as containerd's native snapshotter hands it over: a bind mount the shim must take off.
    const source = path.join(h.dir, 'snapshot');
    fs.renameSync(path.join(h.bundle, 'rootfs'), source);
    fs.mkdirSync(path.join(h.bundle, 'rootfs'));
    const { client, address } = await startShim();
    const conn = await client.callTyped(taskMethods.Connect, { id: h.id });
    await client.callTyped(taskMethods.Create, {
      id: h.id,
      bundle: h.bundle,
      rootfs: [{ type: 'bind', source, options: ['rbind', 'rw'] }],
    });
    await client.callTyped(taskMethods.Start, { id: h.id });
    expect(mountsUnder(h.bundle)).toEqual([path.join(h.bundle, 'rootfs')]);
    const guestPids = descendants(conn.shimPid);
    expect(guestPids.length).toBeGreaterThanOrEqual(2); // the agent, the container's processes
    process.kill(conn.shimPid, 'SIGKILL');
    await client.close();
    const d = shimCommand('delete', ['-bundle', h.bundle]);
    expect(d.status, d.stderr.toString()).toBe(0);
    const reply = fromBinary(DeleteResponseSchema, d.stdout);
    expect(reply.exitStatus).toBe(137);
    expect(Number(reply.exitedAt?.seconds)).toBeGreaterThan(0);
    // The guest died with the shim (a parent-death signal) or delete killed what was left.
    for (const p of guestPids) expect(isAlive(p), `pid ${p.pid} survived`).toBe(false);
    expect(d.stderr.toString()).toContain(`unmounted ${path.join(h.bundle, 'rootfs')}`);
    expect(fs.existsSync(socketPathOf(address))).toBe(false);
    // The image's files are untouched (delete unmounted before anything was removed).
    expect(fs.existsSync(path.join(source, 'bin/busybox'))).toBe(true);
  });

  it('start through node (no shell wrapper) launches the same shim and answers with its address', async () => {
    writeSpec(['true']);
    const { client, address } = await startShim(true);
    try {
      const c = await client.callTyped(taskMethods.Connect, { id: h.id });
      expect(c.shimPid).toBeGreaterThan(0);
      const again = shimCommand('start', [], undefined, true);
      expect(again.status).toBe(0);
      expect(again.stdout.toString()).toBe(address);
    } finally {
      await shutdown(client, address);
    }
  });

  it('start answers with the running shim’s address when its socket is already served', async () => {
    writeSpec(['true']);
    const { client, address } = await startShim();
    try {
      const again = shimCommand('start');
      expect(again.status).toBe(0);
      expect(again.stdout.toString()).toBe(address);
    } finally {
      await shutdown(client, address);
    }
  });
});

// The runtime options containerd writes on `start`'s stdin select the configuration file.
describe('start with runtime options', () => {
  it('reads a ConfigPath from the options on stdin and fails Create on a bad file with its name', async () => {
    writeSpec(['true']);
    const cfg = path.join(h.dir, 'bad.toml');
    fs.writeFileSync(cfg, '[runtime]\nuse_passfd = true\n');
    const { OptionsSchema } = await import('../../src/protocol/gen/containerd/runtimeoptions/v1/api_pb.js');
    const options = create(AnySchema, {
      typeUrl: 'runtimeoptions.v1.Options',
      value: toBinary(OptionsSchema, create(OptionsSchema, { configPath: cfg })),
    });
    const r = shimCommand('start', [], Buffer.from(toBinary(AnySchema, options)));
    expect(r.status).toBe(0);
    const address = r.stdout.toString();
    const sock = net.connect(socketPathOf(address));
    await new Promise((resolve) => sock.once('connect', resolve));
    const client = new TtrpcClient(sock);
    try {
      const err = await client
        .callTyped(taskMethods.Create, { id: h.id, bundle: h.bundle, options })
        .catch((e) => e);
      expect(err.message).toContain(
        `${cfg}: runtime.use_passfd = true: unknown key (did you mean use_passfd_io?)`,
      );
    } finally {
      await shutdown(client, address);
    }
  });
});
