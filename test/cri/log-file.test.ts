import { describe, expect, it } from 'vitest';
import { parseCriLog, parseCriLogRecord } from '../../src/cri/log-file.js';

const T1 = '2024-05-01T10:00:00.123456789Z';
const T2 = '2024-05-01T10:00:00.223456789+02:00';

describe('parseCriLog', () => {
  it('reads full records of both streams, in file order', () => {
    const log = parseCriLog(`${T1} stdout F hello\n${T1} stderr F oops: bad\n${T2} stdout F  two  spaces \n`);
    expect(log.records.map((r) => [r.stream, r.partial, r.content.toString()])).toEqual([
      ['stdout', false, 'hello'],
      ['stderr', false, 'oops: bad'],
      ['stdout', false, ' two  spaces '],
    ]);
    expect(log.stdout.toString()).toBe('hello\n two  spaces \n');
    expect(log.stderr.toString()).toBe('oops: bad\n');
    expect(log.lines).toEqual([
      { stream: 'stdout', time: T1, text: 'hello' },
      { stream: 'stderr', time: T1, text: 'oops: bad' },
      { stream: 'stdout', time: T2, text: ' two  spaces ' },
    ]);
    expect(log.rest.length).toBe(0);
  });

  it('reassembles P records into their F record, per stream, interleaved with the other stream', () => {
    const a = 'a'.repeat(16384);
    const b = 'b'.repeat(100);
    const log = parseCriLog(
      `${T1} stdout P ${a}\n${T1} stderr F err\n${T1} stdout P ${a}\n${T2} stdout F ${b}\n${T2} stdout F next\n`,
    );
    expect(log.records.map((r) => r.tags)).toEqual([['P'], ['F'], ['P'], ['F'], ['F']]);
    expect(log.stdout.toString()).toBe(`${a}${a}${b}\nnext\n`);
    expect(log.lines).toEqual([
      { stream: 'stderr', time: T1, text: 'err' },
      { stream: 'stdout', time: T2, text: `${a}${a}${b}` },
      { stream: 'stdout', time: T2, text: 'next' },
    ]);
  });

  it('keeps empty lines, bytes that are not UTF-8, more tags, and an unfinished last line as rest', () => {
    const bytes = Buffer.concat([
      Buffer.from(`${T1} stdout F \n${T1} stdout F\n${T1} stdout F:x `),
      Buffer.from([0xff, 0x00, 0x41]),
      Buffer.from(`\n${T1} stdout P unfinish`),
    ]);
    const log = parseCriLog(bytes);
    expect(log.records).toHaveLength(3);
    expect(log.records[2]!.tags).toEqual(['F', 'x']);
    expect(log.stdout).toEqual(Buffer.concat([Buffer.from('\n\n'), Buffer.from([0xff, 0x00, 0x41, 0x0a])]));
    expect(log.rest.toString()).toBe(`${T1} stdout P unfinish`);
  });

  it('a P record without its F record yet is in the stream, not in the lines', () => {
    const log = parseCriLog(`${T1} stdout P half\n`);
    expect(log.stdout.toString()).toBe('half');
    expect(log.lines).toEqual([]);
  });

  it('an empty file is empty', () => {
    const log = parseCriLog(Buffer.alloc(0));
    expect(log.records).toEqual([]);
    expect(log.stdout.length + log.stderr.length + log.rest.length).toBe(0);
  });

  it('refuses malformed records', () => {
    for (const bad of [
      'no spaces',
      `${T1} stdout`,
      `${T1} stdin F x`,
      `${T1} stdout X x`,
      `${T1} stdout  x`,
      `not-a-time stdout F x`,
      ` stdout F x`,
    ]) {
      expect(() => parseCriLogRecord(Buffer.from(bad)), bad).toThrow();
    }
    expect(() => parseCriLog(`${T1} stdout F ok\ngarbage\n`)).toThrow(/garbage/);
  });
});
