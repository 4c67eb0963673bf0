// Kata agent API (package `grpc`, service `AgentService`): message schemas
// and a typed method table for generic ttrpc dispatch.
//
// What: re-exports the protobuf-es schemas generated from proto/agent.proto
// and proto/oci.proto (a field-number-exact subset of Kata's
// src/libs/protocols/protos/agent.proto and oci.proto; see the comments in
// those files), and describes each AgentService rpc as
// { service, name, path, input schema, output schema }.
//
// Why: the agent's ttrpc server and the broker's ttrpc client should not each
// hard-code which message belongs to which method. A ttrpc Request names the
// method by `service` ("grpc.AgentService") and `method` ("ExecProcess"); the
// server looks it up here, decodes the payload with `input`, and encodes its
// reply with `output`. Pure data: no I/O.
//
// `path` is the gRPC-style full name "/grpc.AgentService/ExecProcess" (what
// ttrpc-rust, used by the Kata agent, keys its method table by).

import type { DescMessage, DescMethod, MessageShape } from '@bufbuild/protobuf';
import { AgentService } from './gen/agent_pb.js';

export { type Empty, EmptySchema } from '@bufbuild/protobuf/wkt';
export * from './gen/agent_pb.js';
export * from './gen/oci_pb.js';

/** Fully qualified service name, as sent in ttrpc Request.service. */
export const AGENT_SERVICE_NAME = 'grpc.AgentService';

/** "/<service>/<method>", the gRPC-style full method name. */
export function ttrpcMethodPath(service: string, method: string): string {
  return `/${service}/${method}`;
}

export interface AgentMethod<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  /** "grpc.AgentService" (ttrpc Request.service). */
  readonly service: string;
  /** RPC name as in Kata's proto, e.g. "ExecProcess" (ttrpc Request.method). */
  readonly name: string;
  /** "/grpc.AgentService/ExecProcess". */
  readonly path: string;
  /** Schema of the request message carried in Request.payload. */
  readonly input: I;
  /** Schema of the response message carried in Response.payload. */
  readonly output: O;
}

function entry<M extends DescMethod>(m: M): AgentMethod<M['input'], M['output']> {
  return {
    service: m.parent.typeName,
    name: m.name,
    path: ttrpcMethodPath(m.parent.typeName, m.name),
    input: m.input,
    output: m.output,
  };
}

const rpc = AgentService.method;

/** Every AgentService rpc mirrored in proto/agent.proto, keyed by its Kata name. */
export const agentMethods = {
  CreateContainer: entry(rpc.createContainer),
  StartContainer: entry(rpc.startContainer),
  RemoveContainer: entry(rpc.removeContainer),
  ExecProcess: entry(rpc.execProcess),
  SignalProcess: entry(rpc.signalProcess),
  WaitProcess: entry(rpc.waitProcess),
  StatsContainer: entry(rpc.statsContainer),
  WriteStdin: entry(rpc.writeStdin),
  ReadStdout: entry(rpc.readStdout),
  ReadStderr: entry(rpc.readStderr),
  CloseStdin: entry(rpc.closeStdin),
  TtyWinResize: entry(rpc.ttyWinResize),
} as const;

export type AgentMethodName = keyof typeof agentMethods;
/** Request message type of an rpc, e.g. AgentRequest<'ExecProcess'> = ExecProcessRequest. */
export type AgentRequest<N extends AgentMethodName> = MessageShape<(typeof agentMethods)[N]['input']>;
/** Response message type of an rpc, e.g. AgentResponse<'WaitProcess'> = WaitProcessResponse. */
export type AgentResponse<N extends AgentMethodName> = MessageShape<(typeof agentMethods)[N]['output']>;

/** The same entries keyed by path ("/grpc.AgentService/ExecProcess"). */
export const agentMethodsByPath: ReadonlyMap<string, AgentMethod> = new Map(
  Object.values(agentMethods).map((m): [string, AgentMethod] => [m.path, m]),
);

/**
 * Find the rpc a ttrpc Request names (Request.service, Request.method);
 * undefined for anything not in the table (answer UNIMPLEMENTED).
 */
export function findAgentMethod(service: string, method: string): AgentMethod | undefined {
  return agentMethodsByPath.get(ttrpcMethodPath(service, method));
}
