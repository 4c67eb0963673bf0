/**
 * A parser of CRI container log files, the files a CRI runtime writes at
 * `<PodSandboxConfig.log_directory>/<ContainerConfig.log_path>` from a
 * container's stdout and stderr (what `kubectl logs` reads back through the
 * kubelet).
 *
 * The format (Kubernetes' CRI logging spec; containerd's pkg/cri/io
 * logger): one record a line, `<RFC3339Nano time> <stream> <tags>
 * <content>\n`, stream `stdout` or `stderr`, tags `:`-separated with the
 * first one `F` (the content ends a line of the container's output) or `P`
 * (a partial line: the runtime splits lines longer than its limit, 16 KiB
 * by default in containerd, into P records ending in an F record). The
 * content is the container's bytes without the newline.
 *
 * `parseCriLog` is pure (bytes in, records and per-stream content out), so
 * a test can read a file at any time, even while it grows: a last line
 * without its newline is not yet a record and is returned as `rest`.
 * Reassembly appends a newline after each F record, as kubelet does; so
 * output whose last line had no newline reads back with one.
 */

export type CriLogStream = 'stdout' | 'stderr';

export interface CriLogRecord {
  /** The runtime's timestamp, as written (RFC 3339 with nanoseconds). */
  time: string;
  stream: CriLogStream;
  /** True for a P record: the line continues in the stream's next record. */
  partial: boolean;
  /** All tags as written (`F`, `P`, or more, `:`-separated). */
  tags: string[];
  /** The record's bytes (no newline). */
  content: Buffer;
}

export interface CriLog {
  records: CriLogRecord[];
  /** Each stream's content: its records' bytes, a newline after every F record. */
  stdout: Buffer;
  stderr: Buffer;
  /**
   * Lines of both streams in file order (of their F records), each reassembled from its P records
   * and its F record; a line whose F record is not written yet is only in `stdout`/`stderr`.
   */
  lines: { stream: CriLogStream; time: string; text: string }[];
  /** Bytes after the last newline (a record still being written), empty when none. */
  rest: Buffer;
}

const NL = 0x0a;
const SP = 0x20;

/** Parses one record (a line without its newline); throws on a malformed one. */
export function parseCriLogRecord(line: Buffer): CriLogRecord {
  const a = line.indexOf(SP);
  const b = a < 0 ? -1 : line.indexOf(SP, a + 1);
  const c = b < 0 ? -1 : line.indexOf(SP, b + 1);
  // A record with empty content may end right after its tags (no trailing space).
  const tagsEnd = c < 0 ? line.length : c;
  if (a <= 0 || b < 0 || tagsEnd === b + 1) {
    throw new Error(`not a CRI log record: ${JSON.stringify(line.toString())}`);
  }
  const time = line.subarray(0, a).toString();
  const stream = line.subarray(a + 1, b).toString();
  if (stream !== 'stdout' && stream !== 'stderr') {
    throw new Error(
      `CRI log record with stream ${JSON.stringify(stream)}: ${JSON.stringify(line.toString())}`,
    );
  }
  const tags = line
    .subarray(b + 1, tagsEnd)
    .toString()
    .split(':');
  if (tags[0] !== 'F' && tags[0] !== 'P') {
    throw new Error(`CRI log record with tags ${tags.join(':')}: ${JSON.stringify(line.toString())}`);
  }
  if (Number.isNaN(Date.parse(time))) {
    throw new Error(`CRI log record with time ${JSON.stringify(time)}`);
  }
  return {
    time,
    stream,
    partial: tags[0] === 'P',
    tags,
    content: Buffer.from(c < 0 ? Buffer.alloc(0) : line.subarray(c + 1)),
  };
}

/** Parses a whole CRI log file's bytes (or text); throws on a malformed record. */
export function parseCriLog(data: Buffer | string): CriLog {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const records: CriLogRecord[] = [];
  let at = 0;
  for (let nl = buf.indexOf(NL, at); nl >= 0; nl = buf.indexOf(NL, at)) {
    records.push(parseCriLogRecord(buf.subarray(at, nl)));
    at = nl + 1;
  }
  const out: Record<CriLogStream, Buffer[]> = { stdout: [], stderr: [] };
  const pending: Record<CriLogStream, Buffer[]> = { stdout: [], stderr: [] };
  const lines: CriLog['lines'] = [];
  for (const r of records) {
    out[r.stream].push(r.content);
    pending[r.stream].push(r.content);
    if (r.partial) continue;
    out[r.stream].push(Buffer.from('\n'));
    lines.push({ stream: r.stream, time: r.time, text: Buffer.concat(pending[r.stream]).toString() });
    pending[r.stream] = [];
  }
  return {
    records,
    stdout: Buffer.concat(out.stdout),
    stderr: Buffer.concat(out.stderr),
    lines,
    rest: Buffer.from(buf.subarray(at)),
  };
}
