// ttrpc (containerd/ttrpc wire protocol) server and client for the agent API.
// Framing and envelope messages live in src/protocol/ttrpc.ts; this folder
// adds the connection handling on top. See server.ts and client.ts.

export { type TtrpcCallOptions, TtrpcClient, type TtrpcClientOptions } from './client.js';
export {
  deadlineDelayMs,
  metadataFromKeyValues,
  metadataToKeyValues,
  type TtrpcMetadata,
  type TtrpcMetadataInit,
  type TtrpcMethod,
} from './common.js';
export { grpcCodeName, statusOfError, TtrpcClosedError, TtrpcError } from './errors.js';
export {
  type TtrpcCallContext,
  type TtrpcHandler,
  TtrpcServer,
  type TtrpcServerOptions,
  type TtrpcTypedHandler,
} from './server.js';
