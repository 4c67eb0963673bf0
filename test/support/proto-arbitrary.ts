/**
 * fast-check arbitraries for any protobuf-es message, built from its
 * descriptor: every field kind (scalars, enums, nested messages to a bounded
 * depth, lists, maps, oneofs) with values the wire format carries exactly
 * (float32-representable floats, well-formed Unicode strings, no NaN or -0,
 * which proto3 cannot tell from "unset"). Used by the codec properties of the
 * ttrpc envelope and Kata's agent messages, and by the agent fuzzer to build
 * valid requests it then mutates.
 */
import {
  create,
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  ScalarType,
} from '@bufbuild/protobuf';
import fc from 'fast-check';

export interface ProtoArbOptions {
  /** Nesting depth of message fields (deeper ones stay unset). Default 3. */
  maxDepth?: number;
  /** Elements of a list or entries of a map. Default 3. */
  maxItems?: number;
  /** Characters of a string, bytes of a bytes field. Default 16. */
  maxLength?: number;
}

const noNegZero = (x: number) => (Object.is(x, -0) ? 0 : x);

function scalarArb(t: ScalarType, o: Required<ProtoArbOptions>): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.DOUBLE:
      return fc.double({ noNaN: true }).map(noNegZero);
    case ScalarType.FLOAT:
      return fc.float({ noNaN: true }).map(noNegZero);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.integer({ min: 0, max: 2 ** 32 - 1 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.STRING:
      return fc.string({ unit: 'binary', maxLength: o.maxLength });
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: o.maxLength });
  }
}

/** A list element or map value: a scalar, an enum number or (above the depth limit: none) a message. */
function valueArb(
  f: { scalar?: ScalarType | undefined; enum?: DescEnum | undefined; message?: DescMessage | undefined },
  depth: number,
  o: Required<ProtoArbOptions>,
): fc.Arbitrary<unknown> | null {
  if (f.scalar !== undefined) return scalarArb(f.scalar, o);
  if (f.enum) return fc.constantFrom(...f.enum.values.map((v) => v.number));
  return depth > 0 && f.message ? messageInitArb(f.message, depth - 1, o) : null;
}

function fieldArb(f: DescField, depth: number, o: Required<ProtoArbOptions>): fc.Arbitrary<unknown> | null {
  switch (f.fieldKind) {
    case 'scalar':
    case 'enum':
    case 'message':
      return valueArb(f, depth, o);
    case 'list': {
      const elem = valueArb(f, depth, o);
      return elem && fc.array(elem, { maxLength: o.maxItems });
    }
    case 'map': {
      const value = valueArb(f, depth, o);
      if (!value) return null;
      // Map keys are object keys in protobuf-es: strings, or the decimal text of an integer key.
      const key = scalarArb(f.mapKey, o).map((k) => String(k));
      return fc.dictionary(key, value, { maxKeys: o.maxItems });
    }
  }
}

function messageInitArb(
  desc: DescMessage,
  depth: number,
  o: Required<ProtoArbOptions>,
): fc.Arbitrary<Record<string, unknown>> {
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of desc.fields) {
    if (f.oneof) continue;
    const arb = fieldArb(f, depth, o);
    if (arb) parts[f.localName] = arb;
  }
  for (const oneof of desc.oneofs) {
    const choices = oneof.fields.flatMap((f) => {
      const arb = fieldArb(f, depth, o);
      return arb ? [arb.map((value) => ({ case: f.localName, value }))] : [];
    });
    parts[oneof.localName] = fc.oneof(fc.constant({ case: undefined }), ...choices);
  }
  return fc.record(parts, { requiredKeys: [] });
}

/** Arbitrary messages of type `desc` (created with protobuf-es `create`). */
export function messageArb<Desc extends DescMessage>(
  desc: Desc,
  options: ProtoArbOptions = {},
): fc.Arbitrary<MessageShape<Desc>> {
  const o = { maxDepth: 3, maxItems: 3, maxLength: 16, ...options };
  return messageInitArb(desc, o.maxDepth, o).map((init) => create(desc, init as MessageInitShape<Desc>));
}
