// The ConfigPath in the runtime options containerd passes a shim, read at
// the wire level: containerd writes them, as a protobuf Any, on the stdin of
// `<shim> start`, and `start` runs once per container, so it reads the two
// fields it needs with protobuf-es's BinaryReader instead of loading the
// generated schemas (~50 ms of start-up on the container's path). The shim's
// Create, which has the schemas loaded anyway, uses containerd-api.ts's
// unpackConfigPath on the same rules.
//
//   google.protobuf.Any        1: type_url (string)   2: value (bytes)
//   runtimeoptions.v1.Options  1: type_url (string)   2: config_path (string)

import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

/** Options messages that carry a config path: containerd's and CRI's older copy of the same message. */
export const RUNTIME_OPTIONS_TYPE_NAMES: ReadonlySet<string> = new Set([
  'runtimeoptions.v1.Options',
  'cri.runtimeoptions.v1.Options',
]);

/** The message name of a type URL ("<host>/" prefixes allowed, as in an Any). */
export const typeNameOf = (typeUrl: string) => typeUrl.slice(typeUrl.lastIndexOf('/') + 1);

/** Reads the string or bytes fields of a message (others are skipped). */
function fields(bytes: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (type === WireType.LengthDelimited) out.set(no, r.bytes());
    else r.skip(type, no);
  }
  return out;
}

/**
 * The ConfigPath in serialized runtime options (an Any), or undefined when
 * there is none: no bytes, another options type (runc's), an empty path.
 * Throws on bytes that are not a protobuf message.
 */
export function configPathFromOptions(any: Uint8Array): string | undefined {
  if (any.length === 0) return undefined;
  const outer = fields(any);
  const typeUrl = new TextDecoder().decode(outer.get(1) ?? new Uint8Array());
  if (!RUNTIME_OPTIONS_TYPE_NAMES.has(typeNameOf(typeUrl))) return undefined;
  const path = fields(outer.get(2) ?? new Uint8Array()).get(2);
  return path && path.length > 0 ? new TextDecoder().decode(path) : undefined;
}
