// containerd's shim v2 API (containerd v1.6.20): the Task service a shim
// serves, the Events service it publishes to, the task events, and the type
// URLs containerd puts in its protobuf Anys.
//
// What: re-exports the protobuf-es schemas generated from proto/containerd/
// (field-number-exact mirrors of containerd's files; see the README there)
// and describes each rpc as a TtrpcMethod, so the shim's ttrpc server and the
// events client are typed by the same table. Pure data: no I/O.
//
// Type URLs: containerd marshals Anys with its `typeurl` package, which uses
// the bare protobuf name for protobuf messages ("containerd.events.TaskExit",
// no "type.googleapis.com/" prefix) and a registered JSON type for the OCI
// spec's Process ("types.containerd.io/opencontainers/runtime-spec/1/Process",
// the value being JSON). `packTypeurl` builds the former; `unpackOptions`
// reads a runtime's ConfigPath from the runtime options containerd sends.

import {
  create,
  type DescMessage,
  type DescService,
  fromBinary,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import { type Any, AnySchema } from '@bufbuild/protobuf/wkt';
import type { TtrpcMethod } from '../ttrpc/common.js';
import { Task } from './gen/containerd/runtime/v2/task/shim_pb.js';
import { OptionsSchema } from './gen/containerd/runtimeoptions/v1/api_pb.js';
import { Events } from './gen/containerd/services/events/ttrpc/v1/events_pb.js';
import { RUNTIME_OPTIONS_TYPE_NAMES, typeNameOf } from './runtime-options.js';

export * from './gen/containerd/events/task_pb.js';
export * from './gen/containerd/runtime/v2/task/shim_pb.js';
export * from './gen/containerd/services/events/ttrpc/v1/events_pb.js';
export * from './gen/containerd/types/mount_pb.js';
export { type ProcessInfo, ProcessInfoSchema, Status } from './gen/containerd/types/task/task_pb.js';

/** The service name containerd calls (ttrpc Request.service). */
export const TASK_SERVICE_NAME = 'containerd.task.v2.Task';
/** containerd's ttrpc events service (at $TTRPC_ADDRESS). */
export const EVENTS_SERVICE_NAME = 'containerd.services.events.ttrpc.v1.Events';

type Methods<S extends DescService> = {
  readonly [K in keyof S['method'] & string as Capitalize<K>]: TtrpcMethod<
    S['method'][K]['input'],
    S['method'][K]['output']
  >;
};

/** One TtrpcMethod per rpc of a generated service, keyed by the rpc's proto name ("Create"). */
function methodTable<S extends DescService>(service: S): Methods<S> {
  const table: Record<string, TtrpcMethod> = {};
  for (const m of service.methods) {
    table[m.name] = { service: service.typeName, name: m.name, input: m.input, output: m.output };
  }
  return table as Methods<S>;
}

/** Every rpc of containerd.task.v2.Task. */
export const taskMethods = methodTable(Task);
/** containerd.services.events.ttrpc.v1.Events/Forward. */
export const eventsMethods = methodTable(Events);

/** Event topics (containerd's runtime/events.go). */
export const TaskTopic = {
  create: '/tasks/create',
  start: '/tasks/start',
  exit: '/tasks/exit',
  delete: '/tasks/delete',
  execAdded: '/tasks/exec-added',
  execStarted: '/tasks/exec-started',
  oom: '/tasks/oom',
} as const;
export type TaskTopic = (typeof TaskTopic)[keyof typeof TaskTopic];

/** A message as containerd's typeurl marshals it (events, task metrics): the bare proto name as the type URL. */
export function packTypeurl<D extends DescMessage>(schema: D, event: MessageShape<D>): Any {
  return create(AnySchema, { typeUrl: schema.typeName, value: toBinary(schema, event) });
}

/** The OCI Process type URL containerd registers (its value is JSON). */
export const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

/**
 * The ConfigPath in a task's runtime options, or undefined when there is
 * none (no options, other options such as runc's, or an empty path). Type
 * URLs may carry a "<host>/" prefix, as an Any allows.
 */
export function unpackConfigPath(options: Any | undefined): string | undefined {
  if (!options || !RUNTIME_OPTIONS_TYPE_NAMES.has(typeNameOf(options.typeUrl))) return undefined;
  const opts = fromBinary(OptionsSchema, options.value);
  return opts.configPath || undefined;
}
