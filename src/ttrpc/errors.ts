// ttrpc call errors: a google.rpc.Status as a JavaScript Error.
//
// What: `TtrpcError` is what a failed ttrpc call looks like on both sides.
// A server handler throws one to answer with that status code and message; a
// client call rejects with one when the Response carries a non-OK status (or
// when the call failed locally: deadline, cancellation, closed connection).
//
// Why: containerd/ttrpc (Go) and ttrpc-rust, which the Kata runtime and agent
// use, both speak google.rpc.Status in `Response.status`; callers branch on
// the numeric code (NOT_FOUND, DEADLINE_EXCEEDED, UNIMPLEMENTED, ...), so the
// code must survive the round trip exactly. `message` is the status message
// verbatim (no "rpc error: code = ..." prefix as Go's status.Error prints),
// so what a handler threw is what the caller reads.

import { GrpcCode } from '../protocol/ttrpc.js';

const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(GrpcCode).map(([name, code]): [number, string] => [code, name]),
);

/**
 * google.rpc.Code name of a numeric code ("UNIMPLEMENTED" for 12), or
 * "CODE_<n>" for a value outside the enum (a peer may send any int32).
 */
export function grpcCodeName(code: number): string {
  return CODE_NAMES.get(code) ?? `CODE_${code}`;
}

export class TtrpcError extends Error {
  override readonly name: string = 'TtrpcError';
  /** google.rpc.Code value (GrpcCode), as carried in Response.status.code. */
  readonly code: number;
  /** Enum name of `code`, e.g. "DEADLINE_EXCEEDED". */
  readonly codeName: string;

  constructor(code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.codeName = grpcCodeName(code);
  }

  override toString(): string {
    return `${this.name} [${this.codeName}]: ${this.message}`;
  }
}

/**
 * The connection under a client went away (peer closed, socket error,
 * `close()`), so a pending or new call cannot complete. Code UNAVAILABLE, as
 * gRPC reports a broken transport; `cause` holds the socket error if any.
 */
export class TtrpcClosedError extends TtrpcError {
  override readonly name: string = 'TtrpcClosedError';

  constructor(options?: { cause?: unknown }) {
    super(GrpcCode.UNAVAILABLE, 'ttrpc connection closed', options);
  }
}

/**
 * The status a server reports for an error thrown by a handler: a
 * TtrpcError's own code and message; anything else is UNKNOWN with its
 * message (Go's convertCode falls back to Unknown for errors it does not
 * recognise). A TtrpcError that claims OK is also reported as UNKNOWN: an OK
 * status without a payload would read as success to the caller.
 */
export function statusOfError(err: unknown): { code: number; message: string } {
  if (err instanceof TtrpcError && err.code !== GrpcCode.OK) {
    return { code: err.code, message: err.message };
  }
  if (err instanceof Error) return { code: GrpcCode.UNKNOWN, message: err.message };
  return { code: GrpcCode.UNKNOWN, message: String(err) };
}
