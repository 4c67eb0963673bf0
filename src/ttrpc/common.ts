// Pieces the ttrpc server and client share: the method descriptor they are
// typed by, request metadata, and the status texts both sides produce.
//
// Why here: the texts mirror containerd/ttrpc (Go) so that an error from this
// implementation reads the same as one from the Go or Rust peer a Kata
// engineer knows ("context deadline exceeded", "message length ... exceed
// maximum message size of ..."); keeping them in one place keeps server and
// client consistent.

import { create, type DescMessage } from '@bufbuild/protobuf';
import { type KeyValue, KeyValueSchema, TTRPC_MAX_PAYLOAD } from '../protocol/ttrpc.js';

/**
 * What the typed helpers need to know about an rpc. `AgentMethod` from
 * src/protocol/agent-api.ts has this shape, so `agentMethods.WaitProcess`
 * can be passed directly.
 */
export interface TtrpcMethod<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  /** Fully qualified service name, ttrpc Request.service ("grpc.AgentService"). */
  readonly service: string;
  /** Method name, ttrpc Request.method ("WaitProcess"). */
  readonly name: string;
  readonly input: I;
  readonly output: O;
}

/**
 * Request metadata as a server receives it: each key with its values in
 * arrival order. Keys are kept exactly as sent (Go's MD.fromRequest does the
 * same; Go clients lowercase keys when they set them). The object has no
 * prototype, so a key such as "__proto__" or "constructor" is plain data.
 */
export type TtrpcMetadata = Record<string, string[]>;

/** Metadata a client sends: one value or several per key. */
export type TtrpcMetadataInit = Readonly<Record<string, string | readonly string[]>>;

export function metadataFromKeyValues(kvs: readonly KeyValue[]): TtrpcMetadata {
  const md: TtrpcMetadata = Object.create(null);
  for (const { key, value } of kvs) {
    const list = md[key];
    if (list) list.push(value);
    else md[key] = [value];
  }
  return md;
}

/**
 * Flatten metadata into Request.metadata, one KeyValue per value. Keys are
 * lowercased, as Go's MD.Set/Append do, so a Go server's case-insensitive
 * lookup and this server's exact-key record agree.
 */
export function metadataToKeyValues(md: TtrpcMetadataInit | undefined): KeyValue[] {
  if (!md) return [];
  const out: KeyValue[] = [];
  for (const [rawKey, values] of Object.entries(md)) {
    const key = rawKey.toLowerCase();
    for (const value of typeof values === 'string' ? [values] : values) {
      out.push(create(KeyValueSchema, { key, value }));
    }
  }
  return out;
}

/** Status message for an expired deadline (Go's context.DeadlineExceeded text). */
export const DEADLINE_EXCEEDED_MESSAGE = 'context deadline exceeded';
/** Status message for a call cancelled by its caller or its connection (Go's context.Canceled text). */
export const CANCELLED_MESSAGE = 'context canceled';

/** Go's OversizedMessageErr text (RESOURCE_EXHAUSTED), for a frame over 4 MiB. */
export function oversizedMessage(length: number): string {
  return `message length ${length} exceed maximum message size of ${TTRPC_MAX_PAYLOAD}`;
}

/** Largest delay setTimeout honours; longer ones fire after 1 ms instead. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Milliseconds until a ttrpc `timeout_nano` deadline, for setTimeout:
 * undefined for 0 (no deadline, as in Go's getRequestContext) and for
 * deadlines beyond setTimeout's range (~24.8 days, which would otherwise
 * overflow into an immediate timeout); 0 for a negative value (a Go client
 * computes it as time.Until(deadline), which is negative once the deadline
 * has passed). Rounded up, so a deadline never fires early.
 */
export function deadlineDelayMs(timeoutNano: bigint): number | undefined {
  if (timeoutNano === 0n) return undefined;
  if (timeoutNano < 0n) return 0;
  const ms = (timeoutNano + 999_999n) / 1_000_000n;
  return ms > BigInt(MAX_TIMER_MS) ? undefined : Number(ms);
}
