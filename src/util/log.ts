/**
 * A small leveled logger writing one line per event to stderr, with the
 * component name, as the long-running roles (vmm, agent) need for operators.
 * Level from `PASSFD_LOG` (error, warn, info, debug; default info) or set by
 * the CLI's `--log-level`.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent';

const ORDER: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 };

let globalLevel: LogLevel = parseLevel(process.env.PASSFD_LOG) ?? 'info';

export function parseLevel(value: string | undefined): LogLevel | undefined {
  return value && value in ORDER ? (value as LogLevel) : undefined;
}

export function setLogLevel(level: LogLevel): void {
  globalLevel = level;
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
