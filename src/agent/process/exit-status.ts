/**
 * A process's exit as a shell reports it, and as Kata's WaitProcessResponse
 * carries it: the exit code, or 128 + the signal number when a signal killed
 * the process (`sh -c 'kill -TERM $$'; echo $?` prints 143).
 */
import { constants } from 'node:os';

export interface ExitStatus {
  /** Exit code, or 128 + signal number. */
  status: number;
  /** The exit code, null when a signal ended the process. */
  code: number | null;
  /** The signal that ended the process (e.g. 'SIGPIPE'), if one did. */
  signal?: NodeJS.Signals;
}

/**
 * From an exit code or the signal that ended the process, by name or by
 * number. Real-time signals have no name in Node (`kill -34` is SIGRTMIN):
 * give their number, so they come back as 128 + n like any other.
 */
export function exitStatus(code: number | null, signal: NodeJS.Signals | number | null): ExitStatus {
  if (typeof signal === 'number') {
    const name = signalName(signal);
    return { status: 128 + signal, code: null, ...(name ? { signal: name } : {}) };
  }
  if (signal) {
    const num = constants.signals[signal] ?? 0;
    return { status: 128 + num, code: null, signal };
  }
  return { status: code ?? 0, code: code ?? 0 };
}

function signalName(num: number): NodeJS.Signals | undefined {
  return (Object.keys(constants.signals) as NodeJS.Signals[]).find((n) => constants.signals[n] === num);
}

/** A signal given as a number or a name, checked, as a number. */
export function signalNumber(sig: number | string): number {
  if (typeof sig === 'number') {
    if (!Number.isInteger(sig) || sig < 0 || sig > 64) throw new RangeError(`bad signal number ${sig}`);
    return sig;
  }
  const name = (sig.startsWith('SIG') ? sig : `SIG${sig}`).toUpperCase() as NodeJS.Signals;
  const num = constants.signals[name];
  if (num === undefined) throw new RangeError(`unknown signal ${sig}`);
  return num;
}
