// Pure helpers: TtrpcError, status mapping, metadata, deadline conversion.

import { create } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { GrpcCode, KeyValueSchema } from '../../src/protocol/ttrpc.js';
import {
  deadlineDelayMs,
  metadataFromKeyValues,
  metadataToKeyValues,
  oversizedMessage,
} from '../../src/ttrpc/common.js';
import { grpcCodeName, statusOfError, TtrpcClosedError, TtrpcError } from '../../src/ttrpc/errors.js';

describe('TtrpcError', () => {
  it('carries code, code name and the status message verbatim', () => {
    const e = new TtrpcError(GrpcCode.UNIMPLEMENTED, 'method Foo');
    expect(e).toBeInstanceOf(Error);
    expect([e.code, e.codeName, e.message, e.name]).toEqual([
      12,
      'UNIMPLEMENTED',
      'method Foo',
      'TtrpcError',
    ]);
    expect(String(e)).toBe('TtrpcError [UNIMPLEMENTED]: method Foo');
    expect(grpcCodeName(99)).toBe('CODE_99');
  });

  it('TtrpcClosedError is an UNAVAILABLE TtrpcError', () => {
    const cause = new Error('ECONNRESET');
    const e = new TtrpcClosedError({ cause });
    expect(e).toBeInstanceOf(TtrpcError);
    expect([e.code, e.message, e.cause]).toEqual([GrpcCode.UNAVAILABLE, 'ttrpc connection closed', cause]);
  });

  it('statusOfError maps thrown values to statuses', () => {
    expect(statusOfError(new TtrpcError(5, 'nf'))).toEqual({ code: 5, message: 'nf' });
    expect(statusOfError(new TypeError('bad'))).toEqual({ code: GrpcCode.UNKNOWN, message: 'bad' });
    expect(statusOfError(7)).toEqual({ code: GrpcCode.UNKNOWN, message: '7' });
    // An "OK" error must not read as success.
    expect(statusOfError(new TtrpcError(0, 'odd')).code).toBe(GrpcCode.UNKNOWN);
  });
});

describe('metadata', () => {
  it('groups repeated keys in order, keeping keys as sent', () => {
    const kv = (key: string, value: string) => create(KeyValueSchema, { key, value });
    const md = metadataFromKeyValues([kv('a', '1'), kv('B', '2'), kv('a', '3'), kv('__proto__', 'x')]);
    expect(Object.getPrototypeOf(md)).toBe(null);
    expect({ ...md }).toEqual({ a: ['1', '3'], B: ['2'], ['__proto__']: ['x'] });
  });

  it('flattens one KeyValue per value with lowercased keys', () => {
    const kvs = metadataToKeyValues({ 'X-Id': 'q', list: ['1', '2'] });
    expect(kvs.map((k) => [k.key, k.value])).toEqual([
      ['x-id', 'q'],
      ['list', '1'],
      ['list', '2'],
    ]);
    expect(metadataToKeyValues(undefined)).toEqual([]);
  });
});

describe('deadlineDelayMs', () => {
  it('converts timeout_nano to a setTimeout delay', () => {
    expect(deadlineDelayMs(0n)).toBeUndefined();
    expect(deadlineDelayMs(-5n)).toBe(0);
    expect(deadlineDelayMs(1n)).toBe(1); // rounded up, never early
    expect(deadlineDelayMs(1_000_000n)).toBe(1);
    expect(deadlineDelayMs(1_500_000n)).toBe(2);
    expect(deadlineDelayMs(BigInt(2 ** 31 - 1) * 1_000_000n)).toBe(2 ** 31 - 1);
    // Beyond setTimeout's range: treated as no deadline instead of firing in 1 ms.
    expect(deadlineDelayMs(BigInt(2 ** 31) * 1_000_000n)).toBeUndefined();
    expect(deadlineDelayMs(9_223_372_036_854_775_807n)).toBeUndefined();
  });

  it("formats Go's oversize text", () => {
    expect(oversizedMessage(5 << 20)).toBe('message length 5242880 exceed maximum message size of 4194304');
  });
});
