/**
 * The long-lived shim: serves containerd's Task service (task-service.ts)
 * over ttrpc on the task's socket, with its sandbox booting from the first
 * moment (sandbox-slot.ts), its log lines on stderr (the bundle's `log`
 * FIFO: they appear in containerd's log), and events published to
 * containerd's ttrpc socket ($TTRPC_ADDRESS).
 *
 * Launched by `start` (start.ts: `PASSFD_SHIM_LAUNCH=1`, containerd's
 * `start` arguments, its stdin, a pipe as fd 3), it does `start`'s work:
 * reads the runtime options on stdin (a ConfigPath), and if a shim already
 * answers on the task's socket (address.ts) reports that shim's address and
 * exits (the tasks of one pod share a shim: address.ts); else it binds the socket, writes `<bundle>/address` and reports
 * `READY unix://<socket>` (or `ERROR <why>`) on fd 3. Started by hand, it
 * serves `-socket`.
 *
 * Start-up order is for speed, since it is on every container's path: bind
 * the socket and report, then start booting the guest, and only then load
 * the ttrpc server, the protobuf code and the Task service; connections
 * that arrive meanwhile wait, paused.
 *
 * It records in the bundle what a `delete` would need if it died
 * (state-file.ts), and ends after Shutdown with no task left, or on
 * SIGTERM/SIGINT: the guest is stopped (its processes with it), its
 * directories removed, then the socket, and the process exits.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tty from 'node:tty';
import { configPathFromOptions } from '../protocol/runtime-options.js';
import { createLogger, type Logger, parseLevel, setLogLevel } from '../util/log.js';
import { withPrivateUmask } from '../util/private-umask.js';
import {
  readAddressFile,
  shimGroupId,
  socketAnswers,
  socketPathFor,
  socketPathOf,
  toAddress,
  writeAddressFile,
} from './address.js';
import { LAUNCH_ENV, type ShimFlags } from './flags.js';

/** fd 3: the pipe `start` waits on. */
const READY_FD = 3;

function tellStart(line: string): void {
  try {
    fs.writeSync(READY_FD, `${line}\n`);
    fs.closeSync(READY_FD);
  } catch {
    // Not started by `start` (run by hand): nobody to tell.
  }
}

/** The runtime options' ConfigPath, from stdin (what containerd gives `start`), if any. */
function readOptionsConfig(): string | undefined {
  // isatty, not process.stdin: that would open a stream on fd 0 the shim then holds for its life.
  if (tty.isatty(0)) return undefined;
  let data: Buffer;
  try {
    data = fs.readFileSync(0);
  } catch {
    return undefined;
  }
  return configPathFromOptions(data);
}

/**
 * Binds the socket, 0600 from bind(2) on (listen binds synchronously, under
 * the private umask), replacing a stale file a dead shim left (`start` has
 * checked that nobody answers there).
 */
export async function bind(listener: net.Server, socketPath: string): Promise<void> {
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      withPrivateUmask(() =>
        listener.listen(socketPath, () => {
          listener.off('error', reject);
          resolve();
        }),
      );
    });
  fs.mkdirSync(socketPath.slice(0, socketPath.lastIndexOf('/')), { recursive: true, mode: 0o711 });
  try {
    await listen();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    fs.rmSync(socketPath, { force: true });
    await listen();
  }
  fs.chmodSync(socketPath, 0o600);
}

/** A listening socket whose connections wait, paused, until `serve` is given a handler. */
export class PausedListener {
  readonly server: net.Server;
  private early: net.Socket[] = [];
  private handler: ((sock: net.Socket) => void) | null = null;

  constructor() {
    this.server = net.createServer({ pauseOnConnect: true }, (sock) => {
      if (this.handler) this.handler(sock);
      else this.early.push(sock);
    });
  }

  /** Hands every connection, those that waited first, to `handler`. */
  serve(handler: (sock: net.Socket) => void): void {
    this.handler = handler;
    for (const sock of this.early.splice(0)) handler(sock);
  }
}

/** Where the shim's log lines go: containerd's log (stderr is the bundle's `log` FIFO). */
export function setUpLogging(flags: ShimFlags): void {
  setLogLevel(flags.debug ? 'debug' : (parseLevel(process.env.PASSFD_LOG) ?? 'info'));
  // containerd may stop reading the log FIFO (it went away): never die of that.
  process.stderr.on('error', () => {});
  process.stdout.on('error', () => {});
}

export async function serve(flags: ShimFlags): Promise<void> {
  const bundle = flags.bundle || process.cwd();
  setUpLogging(flags);
  const log = createLogger(`passfd-shim[${flags.namespace}/${flags.id}]`);
  const launched = process.env[LAUNCH_ENV] === '1';
  // Not for the guest's processes, which inherit the environment.
  delete process.env[LAUNCH_ENV];
  let optionsConfig: string | undefined;
  let socketPath: string;
  if (launched) {
    optionsConfig = readOptionsConfig();
    const group = shimGroupId(bundle, flags.id);
    socketPath = socketPathFor(flags.address, flags.namespace, group);
    // A shim for this task's group runs already: containerd is to talk to it. It answers on the
    // group's socket, or, if it was a warm spare when it took the pod's sandbox, on the address
    // in the sandbox's bundle (beside this one).
    const peer = group !== flags.id ? readAddressFile(path.join(path.dirname(bundle), group)) : undefined;
    for (const candidate of [socketPath, ...(peer?.startsWith('unix://') ? [socketPathOf(peer)] : [])]) {
      if (await socketAnswers(candidate)) {
        writeAddressFile(bundle, toAddress(candidate));
        tellStart(`READY ${toAddress(candidate)}`);
        process.exit(0);
      }
    }
  } else {
    if (!flags.socket) throw new Error('-socket is required when the shim is not launched by start');
    socketPath = socketPathOf(flags.socket);
  }
  const address = toAddress(socketPath);
  const listener = new PausedListener();
  try {
    await bind(listener.server, socketPath);
  } catch (err) {
    tellStart(`ERROR cannot listen on ${socketPath}: ${(err as Error).message}`);
    throw err;
  }
  if (launched) writeAddressFile(bundle, address);
  tellStart(`READY ${address}`);
  // Spares only for shims containerd starts (by hand, a shim is a test's or a debugging session's).
  await runShim({ flags, bundle, log, socketPath, listener, prestart: { optionsConfig }, spares: launched });
}

export interface RunShimOptions {
  flags: ShimFlags;
  /** The bundle of the task the shim was started for. */
  bundle: string;
  log: Logger;
  socketPath: string;
  listener: PausedListener;
  /** Boot the guest now with the configuration `start` found (a spare leaves it to Create). */
  prestart?: { optionsConfig: string | undefined };
  /**
   * Start a warm spare for the next task (spare.ts): for a shim `start`
   * launched, as its configuration's `shim_spare_idle_s` says; a spare that
   * took a task starts its successor as it was told (the environment).
   */
  spares: boolean;
}

/**
 * The shim once its socket is bound and containerd knows its address: the
 * guest, the Task service, the state record, and the end.
 */
export async function runShim(o: RunShimOptions): Promise<void> {
  const { flags, bundle, log, socketPath, listener } = o;
  const address = toAddress(socketPath);
  // The guest first: its processes start while the rest of the shim loads.
  const [{ loadShimConfig }, { SandboxSlot }, { Sandbox }, state, tree, spares] = await Promise.all([
    import('./config.js'),
    import('./sandbox-slot.js'),
    import('./sandbox.js'),
    import('./state-file.js'),
    import('./process-tree.js'),
    import('./spare-launch.js'),
  ]);
  const me = tree.identify(process.pid)!;
  let guest: { processes: { name: string; pid: number }[]; dirs: string[] } = { processes: [], dirs: [] };
  // Every bundle of a task this shim serves (a pod's, or just the one) carries the record, so
  // whichever `delete` containerd runs first after a crash finds the guest to clean up.
  const bundles = new Set([bundle]);
  const record = () => {
    for (const b of bundles) recordIn(b);
  };
  const recordIn = (b: string) => {
    try {
      state.writeState(b, {
        shim: me,
        socket: socketPath,
        processes: guest.processes.flatMap((p) => {
          const id = tree.identify(p.pid);
          return id ? [{ name: p.name, ...id }] : [];
        }),
        dirs: guest.dirs,
      });
    } catch (err) {
      log.warn(`cannot record the shim's state in ${b}: ${(err as Error).message}`);
    }
  };
  record();
  const guestLevel = flags.debug ? 'debug' : 'warn';
  const slot = new SandboxSlot(async (cfg) => {
    const sandbox = await Sandbox.start({
      config: cfg.config,
      ...(cfg.path ? { configPath: cfg.path } : {}),
      bundle,
      log,
      logLevel: guestLevel,
    });
    guest = { processes: sandbox.processes, dirs: sandbox.dirs };
    record();
    return sandbox;
  }, log);
  // A warm spare for the next task's `start`: how long it may wait (0: none).
  let spareIdleMs = o.spares ? spares.spareIdleFromEnv() : 0;
  if (o.prestart) {
    try {
      const cfg = loadShimConfig(o.prestart.optionsConfig);
      if (o.spares) spareIdleMs = cfg.config.runtime.shim_spare_idle_s * 1000;
      slot.prestart(cfg);
    } catch (err) {
      // Create loads it again and reports the error to containerd.
      log.error((err as Error).message);
    }
  }

  const [{ TtrpcServer }, { EventPublisher }, { TaskService }, { SHIM_VERSION }] = await Promise.all([
    import('../ttrpc/server.js'),
    import('./events.js'),
    import('./task-service.js'),
    import('./version.js'),
  ]);
  const events = new EventPublisher(process.env.TTRPC_ADDRESS ?? '', flags.namespace, log.child('events'));
  const ttrpc = new TtrpcServer({ logger: log.child('ttrpc') });
  let ending = false;
  const end = async (why: string) => {
    if (ending) return;
    ending = true;
    log.info(`exiting: ${why}`);
    await slot.stop();
    for (const b of bundles) state.removeState(b);
    await events.close();
    listener.server.close();
    await ttrpc.close();
    fs.rmSync(socketPath, { force: true });
    process.exit(0);
  };
  const service = new TaskService({
    namespace: flags.namespace,
    log,
    events,
    sandboxes: slot,
    version: SHIM_VERSION,
    onShutdown: () => {
      // Nothing is left to clean up: say so before containerd runs `delete`.
      for (const b of bundles) state.removeState(b);
      setImmediate(() => void end('shutdown'));
    },
    onTaskCreated: (b) => {
      bundles.add(b);
      recordIn(b);
    },
    onTaskDeleted: (b) => {
      bundles.delete(b);
      state.removeState(b);
    },
  });
  service.register(ttrpc);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void end(sig));
  listener.server.on('error', (err) => log.error(`listener: ${err.message}`));
  listener.serve((sock) => {
    sock.on('error', () => {});
    void ttrpc.serve(sock);
    sock.resume();
  });
  log.info(`serving ${address} (pid ${process.pid})`);
  // For the next container's `start` (at a lower priority than this task's start).
  if (spareIdleMs > 0) spares.startSpare(flags, spareIdleMs, log);
}
