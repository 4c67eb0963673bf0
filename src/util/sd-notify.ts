/**
 * systemd readiness notification (`sd_notify(3)`), without libsystemd.
 *
 * A service started with `Type=notify` finds a datagram socket in
 * `$NOTIFY_SOCKET` and sends it newline-separated assignments such as
 * `READY=1`, `STOPPING=1`, `MAINPID=<pid>` or `STATUS=<text>`. The variable
 * holds either a file-system path (`/run/systemd/notify`), reached through
 * `unix-dgram.ts` (the `unix-dgram` package), or a Linux abstract name
 * (`@name`), reached through the koffi binding in
 * `native-bindings/sd-notify-abstract.ts` because `unix-dgram` cannot address
 * those. Anything else (for example systemd 254's
 * `vsock:CID:PORT`) is not supported: it is ignored with a warning.
 *
 * Notification is best effort by design: when `NOTIFY_SOCKET` is unset the
 * calls resolve `false` silently, and when the socket is missing, dead or
 * full they log one line to stderr and resolve `false`. A service must not
 * die because the supervisor went away. Only programming errors (an invalid
 * `mainPid` or a `status` with a newline) reject.
 *
 * Both native modules are loaded on first use, so importing this file costs
 * nothing for a process that never runs under systemd.
 */
import { sendDatagram } from './unix-dgram.js';

/** What `sd_notify` calls the environment; a plain object is fine in tests. */
export type NotifyEnv = Readonly<Record<string, string | undefined>>;

/**
 * Sends `state` (for example `READY=1`) to the socket named by
 * `env.NOTIFY_SOCKET`. Resolves true when the datagram was sent, false when
 * there is nothing to notify or it could not be sent (logged). Never rejects.
 */
export async function sdNotify(state: string, env: NotifyEnv = process.env): Promise<boolean> {
  const target = env.NOTIFY_SOCKET;
  if (!target) return false; // unset, or empty as systemd treats it: not supervised
  const payload = Buffer.from(state, 'utf8');
  try {
    if (target.startsWith('/')) {
      await sendDatagram(target, payload);
      return true;
    }
    if (target.startsWith('@')) {
      const { sendToAbstractSocket } = await import('../../native-bindings/sd-notify-abstract.js');
      sendToAbstractSocket(target.slice(1), payload);
      return true;
    }
    warn(`NOTIFY_SOCKET=${target} is neither an absolute path nor an abstract name (@name); not notifying`);
    return false;
  } catch (err) {
    warn(`cannot send ${JSON.stringify(state)} to NOTIFY_SOCKET=${target}: ${describe(err)}; continuing`);
    return false;
  }
}

export interface NotifyOptions {
  /** Where `NOTIFY_SOCKET` is looked up; default `process.env`. */
  env?: NotifyEnv;
  /** Adds `STATUS=<text>`, shown by `systemctl status`. One line. */
  status?: string;
}

export interface ReadyOptions extends NotifyOptions {
  /** Adds `MAINPID=<pid>`: tells systemd which process is the service's main one. */
  mainPid?: number;
}

/** `READY=1` (plus `MAINPID=` / `STATUS=` when given): start-up is complete. */
export async function notifyReady(options: ReadyOptions = {}): Promise<boolean> {
  const lines = ['READY=1'];
  if (options.mainPid !== undefined) {
    if (!Number.isSafeInteger(options.mainPid) || options.mainPid <= 0) {
      throw new RangeError(`notifyReady: mainPid must be a positive integer, got ${options.mainPid}`);
    }
    lines.push(`MAINPID=${options.mainPid}`);
  }
  return sdNotify(withStatus(lines, options.status).join('\n'), options.env);
}

/** `STOPPING=1` (plus `STATUS=` when given): the service is shutting down. */
export async function notifyStopping(options: NotifyOptions = {}): Promise<boolean> {
  return sdNotify(withStatus(['STOPPING=1'], options.status).join('\n'), options.env);
}

function withStatus(lines: string[], status: string | undefined): string[] {
  if (status === undefined) return lines;
  if (/[\n\0]/.test(status)) throw new TypeError('sd_notify: STATUS must be a single line without NUL');
  return [...lines, `STATUS=${status}`];
}

/** One line for an error from either transport (both name the errno in the message). */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.message.split('\n')[0] ?? String(err);
}

function warn(message: string): void {
  process.stderr.write(`passfd-broker: sd_notify: ${message}\n`);
}
