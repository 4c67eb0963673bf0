/**
 * Incremental line splitting for the project's two line-based control
 * protocols: the hybrid-vsock command and its OK reply (hybrid-vsock.ts, one
 * line of at most 31 bytes before the newline, then the stream) and the
 * AF_VSOCK stand-in's requests and replies (vsock-standin.ts, lines of at
 * most 128 bytes). Pure: bytes in, lines out.
 *
 * Stream sockets deliver bytes split anywhere, so a partial line is kept
 * (never more than `maxLine` bytes) until its newline arrives. A line, or a
 * partial line, longer than `maxLine` bytes refuses the reader for good: the
 * limit is checked on the byte stream, so the outcome does not depend on how
 * the stream was split. Lines before the over-long one are still returned;
 * the call that finds it throws only when it has no line to return, and
 * every later call throws the same error (so does any error the reader's
 * user reports with `fail`).
 *
 * `push(chunk, maxLines)` returns at most `maxLines` lines; once that many
 * are found, the bytes after the last newline come back as `rest`, untouched
 * and not kept (after a CONNECT line they are already stream data).
 * Lines are decoded as latin1: one character per byte.
 */

const NL = 0x0a;
const EMPTY = Buffer.alloc(0);

export interface PushResult {
  /** Complete lines, without their "\n", in order. */
  lines: string[];
  /** With `maxLines` reached: the bytes after the last returned line (a view). Else empty. */
  rest: Buffer;
}

export class LineReader {
  #pending: Buffer = EMPTY;
  #error: Error | null = null;

  constructor(
    /** Longest line accepted, in bytes, newline not counted. */
    readonly maxLine: number,
    /** The error for a line over `maxLine` bytes. */
    private readonly tooLong: () => Error,
  ) {}

  /** Bytes of an incomplete line held (never more than `maxLine`). */
  get buffered(): number {
    return this.#pending.length;
  }

  /** Feeds the next chunk; see the module comment. Throws once the reader is refused. */
  push(chunk: Buffer, maxLines = Number.POSITIVE_INFINITY): PushResult {
    if (this.#error) throw this.#error;
    const data = this.#pending.length > 0 ? Buffer.concat([this.#pending, chunk]) : chunk;
    const lines: string[] = [];
    let start = 0;
    while (lines.length < maxLines) {
      const nl = data.indexOf(NL, start);
      if ((nl === -1 ? data.length : nl) - start > this.maxLine) {
        this.#pending = EMPTY;
        this.#error = this.tooLong();
        if (lines.length === 0) throw this.#error;
        return { lines, rest: EMPTY };
      }
      if (nl === -1) break;
      lines.push(data.toString('latin1', start, nl));
      start = nl + 1;
    }
    if (lines.length >= maxLines) {
      this.#pending = EMPTY;
      return { lines, rest: data.subarray(start) };
    }
    // A copy: the caller may reuse its chunk buffer.
    this.#pending = start < data.length ? Buffer.from(data.subarray(start)) : EMPTY;
    return { lines, rest: EMPTY };
  }

  /** Refuses the reader with `err` (a line that parsed badly): this and every later push throw it. */
  fail(err: Error): never {
    this.#error = err;
    this.#pending = EMPTY;
    throw err;
  }

  /** The error that refused the reader, if any. */
  get error(): Error | null {
    return this.#error;
  }
}
