/**
 * The client side of a CRI streaming Exec or Attach: the URL that
 * RuntimeService.Exec/Attach returns points at the runtime's streaming
 * server (containerd's, a copy of kubelet's), which speaks Kubernetes'
 * "remotecommand" protocol. This speaks its websocket flavour, subprotocol
 * `v4.channel.k8s.io` (or the older `channel.k8s.io`), which needs nothing
 * but a websocket client (SPDY, kubectl's default, would need an SPDY
 * implementation).
 *
 * The wire, as containerd v1.6.20's server (k8s.io/apiserver wsstream)
 * does it: every binary message is one channel byte and then the payload;
 * 0 stdin (client to server), 1 stdout, 2 stderr, 3 error/status, 4 resize
 * (client to server, JSON `{"Width":w,"Height":h}`). The server first sends
 * an empty message on the lowest channel it writes (stdout, stderr or
 * status: "the stream is open"), and at the end writes the status and
 * closes the connection. In v4 the status is a JSON metav1.Status:
 * `{"status":"Success"}`, or `"Failure"` with `reason` `NonZeroExitCode`
 * and the code in `details.causes[{reason:"ExitCode",message:"7"}]`, or
 * another failure (the command could not be run). In the older protocol
 * the status channel carries only an error's text.
 *
 * What the protocol cannot do: v4 has no way to close stdin alone (v5,
 * which containerd 1.6 does not speak, added it). Closing the websocket
 * closes stdin but also ends the stream, so a command must end on its own
 * (e.g. after reading a line), not wait for EOF on stdin.
 *
 * Every stream is bounded: at its timeout the socket is terminated and the
 * result rejects; `close()` terminates it early. Nothing outlives the
 * result.
 */
import WebSocket from 'ws';

export const V4_CHANNEL_PROTOCOL = 'v4.channel.k8s.io';
export const V1_CHANNEL_PROTOCOL = 'channel.k8s.io';
export type ChannelProtocol = typeof V4_CHANNEL_PROTOCOL | typeof V1_CHANNEL_PROTOCOL;

/** The remotecommand channels. */
export const Channel = { stdin: 0, stdout: 1, stderr: 2, status: 3, resize: 4 } as const;

/** A metav1.Status as the v4 status channel carries it (the fields used here). */
export interface RemoteStatus {
  status?: 'Success' | 'Failure' | string;
  message?: string;
  reason?: string;
  code?: number;
  details?: { causes?: { reason?: string; message?: string; field?: string }[] };
}

export interface RemoteCommandResult {
  stdout: Buffer;
  stderr: Buffer;
  /**
   * The command's exit code: 0 on success, the code a NonZeroExitCode
   * failure names; null when the status says neither (an Attach's success
   * has no code either: it is 0 here) or under the older protocol's
   * failures.
   */
  exitCode: number | null;
  /** The status as received (v4), or `{ status, message }` made from the older protocol's text. */
  status: RemoteStatus;
  protocol: ChannelProtocol;
}

export interface RemoteCommandOptions {
  /** Give up (terminate the socket, reject) after this long from `open` (default 30 s). */
  timeoutMs?: number;
  /** Subprotocol offered (default v4.channel.k8s.io). */
  protocol?: ChannelProtocol;
  /** Each chunk of output as it arrives (the result still collects it all). */
  onOutput?: (stream: 'stdout' | 'stderr', data: Buffer) => void;
}

export interface TerminalSize {
  width: number;
  height: number;
}

/**
 * One open stream. `open()` resolves once the server said the stream is
 * open; then `write()` stdin, `resize()` a tty, and await `result`.
 */
export class RemoteCommandStream {
  /** Settles when the server closed the stream (with its status), or at the timeout, or at `close()`. */
  readonly result: Promise<RemoteCommandResult>;
  private readonly stdout: Buffer[] = [];
  private readonly stderr: Buffer[] = [];
  private statusText: Buffer[] = [];
  private settle!: { resolve: (r: RemoteCommandResult) => void; reject: (e: Error) => void };
  /** Settles at the server's first message ("open"), or when the stream ends before one. */
  private readonly opened: Promise<void>;
  private openWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private done = false;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly ws: WebSocket,
    readonly url: string,
    timeoutMs: number,
    private readonly onOutput: RemoteCommandOptions['onOutput'],
  ) {
    this.result = new Promise<RemoteCommandResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.opened = new Promise<void>((resolve, reject) => {
      this.openWaiter = { resolve, reject };
    });
    // Either may be awaited late (or not at all, when open() failed): never an unhandled rejection.
    this.result.catch(noop);
    this.opened.catch(noop);
    this.timer = setTimeout(
      () => this.fail(new Error(`remote command ${url}: no end within ${timeoutMs} ms`)),
      timeoutMs,
    );
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) =>
      this.onMessage(toBuffer(data), isBinary),
    );
    ws.on('error', (err) => this.fail(new Error(`remote command ${url}: ${err.message}`)));
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
  }

  /** Opens the URL (an Exec/Attach response's `url`); resolves when the stream is open. */
  static async open(url: string, opts: RemoteCommandOptions = {}): Promise<RemoteCommandStream> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const ws = new WebSocket(url, [opts.protocol ?? V4_CHANNEL_PROTOCOL], {
      handshakeTimeout: timeoutMs,
      perMessageDeflate: false,
    });
    const stream = new RemoteCommandStream(ws, url, timeoutMs, opts.onOutput);
    await stream.opened;
    return stream;
  }

  /** The negotiated subprotocol. */
  get protocol(): ChannelProtocol {
    return this.ws.protocol === V1_CHANNEL_PROTOCOL ? V1_CHANNEL_PROTOCOL : V4_CHANNEL_PROTOCOL;
  }

  /** Sends bytes on stdin (the request must have asked for stdin). */
  write(data: string | Uint8Array): void {
    this.send(Channel.stdin, typeof data === 'string' ? Buffer.from(data) : data);
  }

  /** Sends a terminal size (the request must have asked for a tty). */
  resize(size: TerminalSize): void {
    this.send(Channel.resize, Buffer.from(JSON.stringify({ Width: size.width, Height: size.height })));
  }

  /** Ends the stream now (terminates the socket); `result` rejects if it had not settled. */
  close(): void {
    this.fail(new Error(`remote command ${this.url}: closed by the client`));
  }

  private send(channel: number, payload: Uint8Array): void {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) {
      throw new Error(`remote command ${this.url}: the stream is not open`);
    }
    const frame = Buffer.allocUnsafe(payload.length + 1);
    frame[0] = channel;
    frame.set(payload, 1);
    this.ws.send(frame, { binary: true });
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (data.length === 0) return;
    // The base64 variants are never offered here, so every message is binary.
    if (!isBinary) {
      this.fail(new Error(`remote command ${this.url}: a text message`));
      return;
    }
    this.openWaiter?.resolve();
    this.openWaiter = null;
    const payload = data.subarray(1);
    if (payload.length === 0) return;
    switch (data[0]) {
      case Channel.stdout:
        this.stdout.push(payload);
        this.onOutput?.('stdout', payload);
        break;
      case Channel.stderr:
        this.stderr.push(payload);
        this.onOutput?.('stderr', payload);
        break;
      case Channel.status:
        this.statusText.push(payload);
        break;
      default:
        break;
    }
  }

  private onClose(code: number, reason: string): void {
    const outcome = this.outcome(code, reason);
    if (outcome instanceof Error) this.fail(outcome);
    else this.finish(outcome);
  }

  /** What the stream ended with: the status channel's content, or why it is no usable status. */
  private outcome(code: number, reason: string): Omit<RemoteCommandResult, 'stdout' | 'stderr'> | Error {
    const text = Buffer.concat(this.statusText).toString();
    const protocol = this.protocol;
    if (protocol === V1_CHANNEL_PROTOCOL) {
      // The older protocol: no text is success; text is an error message without a code.
      return text === ''
        ? { exitCode: 0, status: { status: 'Success' }, protocol }
        : { exitCode: null, status: { status: 'Failure', message: text }, protocol };
    }
    if (text === '')
      return new Error(`remote command ${this.url}: closed (${code} ${reason}) without a status`);
    let status: RemoteStatus;
    try {
      status = JSON.parse(text) as RemoteStatus;
    } catch {
      return new Error(`remote command ${this.url}: a status that is not JSON: ${text}`);
    }
    const exitCode = exitCodeOf(status);
    if (status.status !== 'Success' && exitCode === null) {
      return new Error(`remote command ${this.url}: ${status.message ?? text}`);
    }
    return { exitCode, status, protocol };
  }

  private finish(r: Omit<RemoteCommandResult, 'stdout' | 'stderr'>): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.openWaiter?.resolve();
    this.settle.resolve({ stdout: Buffer.concat(this.stdout), stderr: Buffer.concat(this.stderr), ...r });
  }

  private fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.ws.terminate();
    this.openWaiter?.reject(err);
    this.settle.reject(err);
  }
}

/** The exit code a v4 status carries: 0 for Success, the ExitCode cause of a failure, else null. */
export function exitCodeOf(status: RemoteStatus): number | null {
  if (status.status === 'Success') return 0;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  if (cause?.message === undefined || !/^\d+$/.test(cause.message)) return null;
  return Number(cause.message);
}

export interface RunRemoteCommandOptions extends RemoteCommandOptions {
  /** Sent on stdin once the stream is open. */
  stdin?: string | Uint8Array;
  /** Sent on the resize channel once the stream is open (before stdin). */
  resize?: TerminalSize;
}

/** Opens `url`, sends the resize and stdin given, and resolves with the output and exit code. */
export async function runRemoteCommand(
  url: string,
  opts: RunRemoteCommandOptions = {},
): Promise<RemoteCommandResult> {
  const stream = await RemoteCommandStream.open(url, opts);
  try {
    if (opts.resize) stream.resize(opts.resize);
    if (opts.stdin !== undefined) stream.write(opts.stdin);
  } catch {
    // The stream ended before anything could be sent: its result says why (or what it returned).
  }
  return stream.result;
}

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function noop(): void {}
