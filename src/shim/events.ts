/**
 * Publishing task events to containerd, as containerd's shims do: each
 * event goes in an Envelope (timestamp, namespace, topic, the event as an
 * Any with containerd's bare type URL) through `Events.Forward` over ttrpc
 * on containerd's ttrpc socket ($TTRPC_ADDRESS).
 *
 * Events leave in the order they were published, one call at a time (a
 * /tasks/exit must not overtake its /tasks/start). A call that fails is
 * retried after 1 s, 2 s, … up to 5 times, reconnecting when the connection
 * broke, then dropped with an error in the log, like containerd's own
 * RemoteEventsPublisher. `publish` never throws and never blocks the
 * caller: a slow or absent containerd delays events, not tasks.
 */
import net from 'node:net';
import { create, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import {
  type Envelope,
  EnvelopeSchema,
  eventsMethods,
  packTypeurl,
  type TaskTopic,
} from '../protocol/containerd-api.js';
import { TtrpcClient } from '../ttrpc/client.js';
import type { Logger } from '../util/log.js';

const MAX_ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 5000;

export class EventPublisher {
  private readonly queue: { envelope: Envelope; attempts: number }[] = [];
  private client: TtrpcClient | null = null;
  private pumping = false;
  private closed = false;
  private idle: (() => void) | null = null;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    /** containerd's ttrpc socket (a path, or `unix://<path>`); empty: events are only logged. */
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: Logger,
  ) {}

  publish<D extends DescMessage>(topic: TaskTopic, schema: D, event: MessageInitShape<D>): void {
    if (this.closed) return;
    const envelope = create(EnvelopeSchema, {
      timestamp: timestampNow(),
      namespace: this.namespace,
      topic,
      event: packTypeurl(schema, create(schema, event)),
    });
    this.log.debug(`event ${topic}`);
    if (!this.address) return;
    this.queue.push({ envelope, attempts: 0 });
    this.pump();
  }

  private connect(): TtrpcClient {
    if (this.client && !this.client.closed) return this.client;
    const path = this.address.startsWith('unix://') ? this.address.slice(7) : this.address;
    const sock = net.connect(path);
    sock.on('error', () => {}); // the client reports it through its failed calls
    this.client = new TtrpcClient(sock, { logger: this.log.child('ttrpc') });
    return this.client;
  }

  private pump(): void {
    if (this.pumping || this.retryTimer) return;
    this.pumping = true;
    void (async () => {
      while (this.queue.length > 0) {
        const item = this.queue[0]!;
        try {
          await this.connect().callTyped(
            eventsMethods.Forward,
            { envelope: item.envelope },
            { timeoutMs: CALL_TIMEOUT_MS, metadata: { 'containerd-namespace-ttrpc': this.namespace } },
          );
          this.queue.shift();
        } catch (err) {
          item.attempts++;
          if (item.attempts >= MAX_ATTEMPTS || this.closed) {
            this.log.error(
              `dropping event ${item.envelope.topic} after ${item.attempts} attempts: ${(err as Error).message}`,
            );
            this.queue.shift();
            continue;
          }
          this.log.warn(`forward event ${item.envelope.topic}: ${(err as Error).message} (retrying)`);
          await this.client?.close();
          this.client = null;
          this.pumping = false;
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.pump();
          }, 1000 * item.attempts);
          return;
        }
      }
      this.pumping = false;
      this.idle?.();
    })();
  }

  /** Waits (at most `timeoutMs`) for queued events to go out, then closes the connection. */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.queue.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.idle = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.client?.close();
    this.client = null;
  }
}
