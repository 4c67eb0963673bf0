import { describe, expect, it } from 'vitest';
import {
  encodeConnect,
  encodeErr,
  encodeOk,
  encodePassfd,
  encodePassfdPayload,
  HYBRID_MAX_ERR_LINE,
  HYBRID_MAX_LINE,
  HybridCommandParser,
  type HybridCommandResult,
  HybridProtocolError,
  type HybridProtocolErrorCode,
  OkReplyParser,
  parsePassfdPayload,
} from '../../src/protocol/hybrid-vsock.js';

const b = (s: string) => Buffer.from(s, 'latin1');

/** Feed `input` split into the given chunks; return the first non-null result. */
function feed<T>(parser: { push(c: Buffer): T | null }, chunks: Buffer[]): T | null {
  for (const c of chunks) {
    const r = parser.push(c);
    if (r !== null) return r;
  }
  return null;
}

/** Every way of splitting `input` in two, plus byte-by-byte and whole. */
function splits(input: Buffer): Buffer[][] {
  const out: Buffer[][] = [[input], [...input].map((x) => Buffer.from([x]))];
  for (let i = 0; i <= input.length; i++) out.push([input.subarray(0, i), input.subarray(i)]);
  return out;
}

function expectCode(fn: () => unknown, code: HybridProtocolErrorCode): HybridProtocolError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(HybridProtocolError);
    expect((e as HybridProtocolError).code).toBe(code);
    return e as HybridProtocolError;
  }
  throw new Error(`expected HybridProtocolError ${code}, nothing thrown`);
}

/** Collect the result when all of `input` is fed according to `chunks`, including rest from later chunks. */
function parseCommand(chunks: Buffer[]): HybridCommandResult | null {
  const p = new HybridCommandParser();
  for (let i = 0; i < chunks.length; i++) {
    const r = p.push(chunks[i]!);
    if (r !== null) return { command: r.command, rest: Buffer.concat([r.rest, ...chunks.slice(i + 1)]) };
  }
  return null;
}

describe('HybridCommandParser', () => {
  it.each([
    ['CONNECT 1024\n', { kind: 'connect', port: 1024 }],
    ['connect 1024\n', { kind: 'connect', port: 1024 }],
    ['CoNnEcT 5\n', { kind: 'connect', port: 5 }],
    ['CONNECT 0\n', { kind: 'connect', port: 0 }],
    ['CONNECT 4294967295\n', { kind: 'connect', port: 4294967295 }],
    ['CONNECT 1024\r\n', { kind: 'connect', port: 1024 }],
    ['passfd\n', { kind: 'passfd' }],
    ['PASSFD\n', { kind: 'passfd' }],
    ['PassFd\r\n', { kind: 'passfd' }],
  ])('parses %j', (line, command) => {
    const r = new HybridCommandParser().push(b(line));
    expect(r).not.toBeNull();
    expect(r!.command).toEqual(command);
    expect(r!.rest.length).toBe(0);
  });

  it('returns the bytes after the newline as rest, for every split position', () => {
    const input = b('CONNECT 1027\nhello\x00\xff world');
    for (const chunks of splits(input)) {
      const r = parseCommand(chunks);
      expect(r?.command).toEqual({ kind: 'connect', port: 1027 });
      expect(r?.rest).toEqual(b('hello\x00\xff world'));
    }
  });

  it('parses passfd split at every position and hands back following bytes', () => {
    const input = b('passfd\n1027 keep');
    for (const chunks of splits(input)) {
      const r = parseCommand(chunks);
      expect(r?.command).toEqual({ kind: 'passfd' });
      expect(r?.rest).toEqual(b('1027 keep'));
    }
  });

  it('returns null while the line is incomplete and ignores empty chunks', () => {
    const p = new HybridCommandParser();
    expect(p.push(Buffer.alloc(0))).toBeNull();
    expect(p.push(b('CONN'))).toBeNull();
    expect(p.buffered).toBe(4);
    expect(p.push(b('ECT 9'))).toBeNull();
    expect(p.push(b('\n'))).toEqual({ command: { kind: 'connect', port: 9 }, rest: Buffer.alloc(0) });
  });

  it('accepts a line of exactly 32 bytes including the newline', () => {
    // No valid command is that long, so check that the line reaches the
    // parser (bad-port) rather than tripping the length limit.
    const line = `CONNECT ${'1'.repeat(HYBRID_MAX_LINE - 9)}\n`;
    expect(line.length).toBe(HYBRID_MAX_LINE);
    for (const chunks of splits(b(line)))
      expectCode(() => feed(new HybridCommandParser(), chunks), 'bad-port');
  });

  it('rejects 32 bytes without a newline as line-too-long, for every split', () => {
    const line = b(`CONNECT ${'1'.repeat(HYBRID_MAX_LINE - 8)}\n`); // newline is the 33rd byte
    for (const chunks of splits(line)) {
      expectCode(() => feed(new HybridCommandParser(), chunks), 'line-too-long');
    }
    expectCode(() => new HybridCommandParser().push(Buffer.alloc(100, 0x41)), 'line-too-long');
  });

  it('detects line-too-long as soon as 32 bytes without newline are buffered', () => {
    const p = new HybridCommandParser();
    expect(p.push(Buffer.alloc(31, 0x41))).toBeNull();
    expectCode(() => p.push(b('A')), 'line-too-long');
  });

  it.each([
    ['CONNECT abc\n', 'bad-port'],
    ['CONNECT -1\n', 'bad-port'],
    ['CONNECT +1\n', 'bad-port'],
    ['CONNECT 01024\n', 'bad-port'],
    ['CONNECT 00\n', 'bad-port'],
    ['CONNECT 4294967296\n', 'bad-port'],
    ['CONNECT 99999999999\n', 'bad-port'],
    ['CONNECT 1.5\n', 'bad-port'],
    ['CONNECT 1e3\n', 'bad-port'],
    ['CONNECT 0x10\n', 'bad-port'],
    ['CONNECT  1024\n', 'bad-port'],
    ['CONNECT 1024 \n', 'bad-port'],
    ['CONNECT 1024\r\r\n', 'bad-port'],
    ['CONNECT \n', 'bad-port'],
    ['CONNECT 1024 keep\n', 'bad-port'],
    ['CONNECT ١٠٢٤\n', 'bad-port'],
    ['CONNECT\n', 'malformed'],
    ['CONNECT\t1024\n', 'malformed'],
    ['passfd 1024\n', 'malformed'],
    ['passfd \n', 'malformed'],
    ['passfd\t\n', 'malformed'],
    ['passfd\r\r\n', 'malformed'],
    [' CONNECT 1024\n', 'unknown-command'],
    ['CONNECTX 1024\n', 'unknown-command'],
    ['OPEN 1024\n', 'unknown-command'],
    ['pass fd\n', 'unknown-command'],
    ['\n', 'unknown-command'],
    ['\r\n', 'unknown-command'],
    ['\xc3\xa9\n', 'unknown-command'],
    ['GET / HTTP/1.1\r\n', 'unknown-command'],
  ] as const)('rejects %j as %s', (line, code) => {
    for (const chunks of splits(b(line))) expectCode(() => feed(new HybridCommandParser(), chunks), code);
  });

  it('is poisoned after an error and refuses pushes after a result', () => {
    const p = new HybridCommandParser();
    const err = expectCode(() => p.push(b('bogus\n')), 'unknown-command');
    expect(() => p.push(b('CONNECT 1\n'))).toThrow(err);
    expect(() => p.end()).toThrow(err);

    const q = new HybridCommandParser();
    expect(q.push(b('passfd\n'))).not.toBeNull();
    expect(() => q.push(b('x'))).toThrow(/already/);
    expect(() => q.end()).not.toThrow();
  });

  it('reports unexpected-eof when the stream ends mid-line', () => {
    const p = new HybridCommandParser();
    p.push(b('CONNECT 10'));
    expectCode(() => p.end(), 'unexpected-eof');
    expectCode(() => new HybridCommandParser().end(), 'unexpected-eof');
  });
});

describe('OkReplyParser', () => {
  it('parses OK <port> split at every position, with rest', () => {
    const input = b('OK 1073741824\nstream bytes');
    for (const chunks of splits(input)) {
      const p = new OkReplyParser();
      let got: { port: number; rest: Buffer } | null = null;
      for (let i = 0; i < chunks.length && got === null; i++) {
        const r = p.push(chunks[i]!);
        if (r) got = { port: r.port, rest: Buffer.concat([r.rest, ...chunks.slice(i + 1)]) };
      }
      expect(got).toEqual({ port: 1073741824, rest: b('stream bytes') });
    }
  });

  it('accepts CRLF', () => {
    expect(new OkReplyParser().push(b('OK 7\r\n'))?.port).toBe(7);
  });

  it.each([
    ['ok 1024\n', 'bad-reply'],
    ['OK\n', 'bad-reply'],
    ['ERR\n', 'bad-reply'],
    ['\n', 'bad-reply'],
    [' OK 1024\n', 'bad-reply'],
    ['OK abc\n', 'bad-port'],
    ['OK 01\n', 'bad-port'],
    ['OK -5\n', 'bad-port'],
    ['OK 4294967296\n', 'bad-port'],
    ['OK 1024 extra\n', 'bad-port'],
    ['OK  1024\n', 'bad-port'],
    [`OK ${'9'.repeat(40)}\n`, 'line-too-long'],
  ] as const)('rejects %j as %s', (line, code) => {
    for (const chunks of splits(b(line))) expectCode(() => feed(new OkReplyParser(), chunks), code);
  });

  it('reads an "ERR <reason>" line (this device, before it closes) as a refusal carrying the reason', () => {
    const line = b(
      'ERR the guest refused port 1027 (RST: nothing listens there, or it could not take the connection)\n',
    );
    for (const chunks of splits(line)) {
      expectCode(() => feed(new OkReplyParser(), chunks), 'refused');
    }
    expect(() => new OkReplyParser().push(line)).toThrow(/^the guest refused port 1027 /);
    // An OK line stays short: a 40-digit port is still line-too-long, not a refusal.
    expectCode(() => new OkReplyParser().push(b(`OK ${'9'.repeat(40)}\n`)), 'line-too-long');
  });

  it('encodeErr keeps the reason on one printable line that fits the parser', () => {
    const long = encodeErr(`a\nb\r\u00e9${'x'.repeat(400)}`);
    expect(long.length).toBe(HYBRID_MAX_ERR_LINE);
    expect(long.toString('latin1')).toMatch(/^ERR a\?b\?\?x+\n$/);
    expectCode(() => new OkReplyParser().push(long), 'refused');
  });

  it('reports a refused connection (EOF before the reply) as unexpected-eof', () => {
    expectCode(() => new OkReplyParser().end(), 'unexpected-eof');
    const p = new OkReplyParser();
    p.push(b('OK 12'));
    expect(p.buffered).toBe(5);
    expectCode(() => p.end(), 'unexpected-eof');
  });

  it('round-trips encodeOk', () => {
    for (const port of [0, 1, 1024, 2 ** 30, 2 ** 31 - 1, 2 ** 32 - 1]) {
      expect(new OkReplyParser().push(encodeOk(port))).toEqual({ port, rest: Buffer.alloc(0) });
    }
  });
});

describe('passfd payload', () => {
  it.each([
    ['1027', { port: 1027, keep: false }],
    ['1027 keep', { port: 1027, keep: true }],
    ['1027\n', { port: 1027, keep: false }],
    ['1027 keep\n', { port: 1027, keep: true }],
    ['0', { port: 0, keep: false }],
    ['4294967295 keep', { port: 4294967295, keep: true }],
  ])('parses %j', (text, want) => {
    expect(parsePassfdPayload(b(text))).toEqual(want);
  });

  it.each([
    ['', 'malformed'],
    ['\n', 'malformed'],
    ['1027 kept', 'malformed'],
    ['1027 KEEP', 'malformed'],
    ['1027 keep extra', 'malformed'],
    ['1027  keep', 'malformed'],
    ['1027 keep\n\n', 'malformed'],
    ['1027 keep ', 'malformed'],
    ['1027 ', 'malformed'],
    ['abc', 'bad-port'],
    ['1027\r\n', 'bad-port'],
    ['\t1027', 'bad-port'],
    [' 1027', 'malformed'],
    ['+1027', 'bad-port'],
    ['-1', 'bad-port'],
    ['01027', 'bad-port'],
    ['4294967296', 'bad-port'],
    ['abc keep', 'bad-port'],
    ['1027\n\n', 'bad-port'],
    ['1'.repeat(33), 'line-too-long'],
    [`1027 keep${' '.repeat(30)}`, 'line-too-long'],
  ] as const)('rejects %j as %s', (text, code) => {
    expectCode(() => parsePassfdPayload(b(text)), code);
  });

  it('round-trips encodePassfdPayload', () => {
    expect(encodePassfdPayload(1027)).toEqual(b('1027'));
    expect(encodePassfdPayload(1027, true)).toEqual(b('1027 keep'));
    for (const port of [0, 1027, 2 ** 32 - 1]) {
      for (const keep of [false, true]) {
        expect(parsePassfdPayload(encodePassfdPayload(port, keep))).toEqual({ port, keep });
      }
    }
  });
});

describe('encoders', () => {
  it('produce the exact wire text', () => {
    expect(encodeConnect(1024)).toEqual(b('CONNECT 1024\n'));
    expect(encodePassfd()).toEqual(b('passfd\n'));
    expect(encodeOk(1073741824)).toEqual(b('OK 1073741824\n'));
  });

  it('round-trip through the command parser', () => {
    expect(new HybridCommandParser().push(encodeConnect(4294967295))?.command).toEqual({
      kind: 'connect',
      port: 4294967295,
    });
    expect(new HybridCommandParser().push(encodePassfd())?.command).toEqual({ kind: 'passfd' });
  });

  it.each([-1, 1.5, 2 ** 32, Number.NaN, Number.POSITIVE_INFINITY])(
    'reject port %s with RangeError',
    (port) => {
      expect(() => encodeConnect(port)).toThrow(RangeError);
      expect(() => encodeOk(port)).toThrow(RangeError);
      expect(() => encodePassfdPayload(port, true)).toThrow(RangeError);
    },
  );
});
