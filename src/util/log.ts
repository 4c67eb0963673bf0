/**
 * A small leveled logger writing one line per event to stderr, with the
 * component name, as the long-running roles (vmm, agent) need for operators.
 * Level from `PASSFD_LOG` (error, warn, info, debug; default info) or set by
 * the CLI's `--log-level`.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent';

const ORDER: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 };

/** The levels a user may ask for (`--log-level`, `PASSFD_LOG`). */
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/** Set by `--log-level` or `PASSFD_LOG`; undefined when nobody asked for a level. */
let chosenLevel: LogLevel | undefined = parseLevel(process.env.PASSFD_LOG);
let globalLevel: LogLevel = chosenLevel ?? 'info';

export function parseLevel(value: string | undefined): LogLevel | undefined {
  return value && (LOG_LEVELS as readonly string[]).includes(value) ? (value as LogLevel) : undefined;
}

export function setLogLevel(level: LogLevel): void {
  chosenLevel = level;
  globalLevel = level;
}

/** The level the user chose (`--log-level` or `PASSFD_LOG`), to hand on to child processes; undefined if none. */
export function chosenLogLevel(): LogLevel | undefined {
  return chosenLevel;
}

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  child(component: string): Logger;
}

export function createLogger(
  component: string,
  sink: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const emit = (level: LogLevel, msg: string) => {
    if (ORDER[level] > ORDER[globalLevel]) return;
    sink(`${new Date().toISOString()} ${level.padEnd(5)} ${component}: ${msg}\n`);
  };
  return {
    error: (m) => emit('error', m),
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
    child: (sub) => createLogger(`${component}/${sub}`, sink),
  };
}
