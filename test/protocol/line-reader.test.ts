// LineReader (src/protocol/line-reader.ts), the one line splitter behind the
// hybrid-vsock command/reply parsers and the AF_VSOCK stand-in protocol:
// lines come out the same however the stream is split; the limit is on the
// bytes before the newline, for complete and partial lines alike; lines
// before an over-long one are returned and the reader then stays refused;
// `maxLines` hands back the rest of the chunk untouched; `fail` refuses it.

import { describe, expect, it } from 'vitest';
import { LineReader } from '../../src/protocol/line-reader.js';
import { LineSplitter, STANDIN_MAX_LINE, StandinProtocolError } from '../../src/protocol/vsock-standin.js';

const reader = (max = 8) => new LineReader(max, () => new Error('too long'));
const b = (s: string) => Buffer.from(s, 'latin1');

describe('LineReader', () => {
  it('yields the same lines however the stream is split', () => {
    const stream = b('one\ntwo\n\nthree\nfour');
    for (let cut = 0; cut <= stream.length; cut++) {
      for (let cut2 = cut; cut2 <= stream.length; cut2++) {
        const r = reader();
        const got = [stream.subarray(0, cut), stream.subarray(cut, cut2), stream.subarray(cut2)].flatMap(
          (c) => r.push(c).lines,
        );
        expect(got).toEqual(['one', 'two', '', 'three']);
        expect(r.buffered).toBe(4);
      }
    }
  });

  it('accepts exactly maxLine bytes before the newline, complete or partial', () => {
    const r = reader(8);
    expect(r.push(b('12345678')).lines).toEqual([]);
    expect(r.buffered).toBe(8);
    expect(r.push(b('\n')).lines).toEqual(['12345678']);
    expect(() => reader(8).push(b('123456789\n'))).toThrow('too long');
    const partial = reader(8);
    partial.push(b('1234'));
    expect(() => partial.push(b('56789'))).toThrow('too long');
  });

  it('returns the lines before an over-long one, then stays refused', () => {
    const r = reader(4);
    expect(r.push(b('ok\nfine\nmuch too long')).lines).toEqual(['ok', 'fine']);
    expect(r.error?.message).toBe('too long');
    expect(() => r.push(b('\n'))).toThrow('too long');
    expect(r.buffered).toBe(0);
  });

  it('with maxLines, hands back the bytes after the last line untouched (a view) and keeps nothing', () => {
    const r = reader(8);
    r.push(b('CONN'), 1);
    const chunk = b('ECT\nstream bytes, not a line: any length at all\n');
    const { lines, rest } = r.push(chunk, 1);
    expect(lines).toEqual(['CONNECT']);
    expect(rest.toString('latin1')).toBe('stream bytes, not a line: any length at all\n');
    expect(r.buffered).toBe(0);
  });

  it('fail() refuses the reader with the caller’s error', () => {
    const r = reader();
    const err = new Error('bad port');
    expect(() => r.fail(err)).toThrow(err);
    expect(() => r.push(b('x\n'))).toThrow(err);
  });
});

describe('LineSplitter (the stand-in protocol)', () => {
  it('splits at STANDIN_MAX_LINE bytes with StandinProtocolError', () => {
    const s = new LineSplitter();
    expect(s.push(b(`${'a'.repeat(STANDIN_MAX_LINE)}\nOK 5\n`))).toEqual([
      'a'.repeat(STANDIN_MAX_LINE),
      'OK 5',
    ]);
    expect(() => s.push(b('b'.repeat(STANDIN_MAX_LINE + 1)))).toThrow(StandinProtocolError);
  });
});
