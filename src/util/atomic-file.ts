/**
 * Writing a small file so that a reader sees the old content or the new,
 * never a part: a temporary file beside it (mode 0600), renamed over it.
 */
import fs from 'node:fs';

export function writeFileAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** `doc` as indented JSON with a final newline, written atomically. */
export function writeJsonAtomically(file: string, doc: unknown): void {
  writeFileAtomically(file, `${JSON.stringify(doc, null, 2)}\n`);
}
