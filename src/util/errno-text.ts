/**
 * One way to show a system error in a message: its code and the system's
 * words for it, "ENOENT (no such file or directory)", once. (Node's own
 * messages already start with the code, so "<code>: <message>" printed it
 * twice: "ENOENT: ENOENT: no such file or directory, open ...".)
 */
import os from 'node:os';
import util from 'node:util';

/** "ENOENT (no such file or directory)" for an error with an errno code; otherwise its message. */
export function errnoText(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) {
    const num = (os.constants.errno as Record<string, number>)[code];
    const text = num === undefined ? undefined : util.getSystemErrorMap().get(-num)?.[1];
    return text ? `${code} (${text})` : code;
  }
  return err instanceof Error ? err.message : String(err);
}
