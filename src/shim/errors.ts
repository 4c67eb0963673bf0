/**
 * The errors a shim answers containerd with. containerd turns a ttrpc
 * status code back into its own error kinds (errdefs.FromGRPC): NOT_FOUND →
 * ErrNotFound, ALREADY_EXISTS → ErrAlreadyExists, FAILED_PRECONDITION →
 * ErrFailedPrecondition, INVALID_ARGUMENT → ErrInvalidArgument,
 * UNIMPLEMENTED → ErrNotImplemented, and it acts on some of them (a
 * NotFound "process already finished" from Kill is accepted by CRI's
 * StopContainer). The messages follow runc's shim where it has one.
 */
import { GrpcCode } from '../protocol/ttrpc.js';
import { TtrpcError } from '../ttrpc/errors.js';

export const notFound = (msg: string) => new TtrpcError(GrpcCode.NOT_FOUND, msg);
export const alreadyExists = (msg: string) => new TtrpcError(GrpcCode.ALREADY_EXISTS, msg);
export const invalidArgument = (msg: string) => new TtrpcError(GrpcCode.INVALID_ARGUMENT, msg);
export const failedPrecondition = (msg: string) => new TtrpcError(GrpcCode.FAILED_PRECONDITION, msg);
/** containerd's ErrNotImplemented: "<what>: not implemented" once containerd adds its suffix. */
export const notImplemented = (what: string) => new TtrpcError(GrpcCode.UNIMPLEMENTED, `${what}`);

/** An error as a ttrpc status: TtrpcErrors keep their code (an agent's too), anything else is UNKNOWN with `context: message`. */
export function asTtrpcError(err: unknown, context: string): TtrpcError {
  if (err instanceof TtrpcError)
    return new TtrpcError(err.code, `${context}: ${err.message}`, { cause: err });
  return new TtrpcError(GrpcCode.UNKNOWN, `${context}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}
