/**
 * Reads `config.toml` into a validated `Config`.
 *
 * Strict on purpose: an unknown section or key is an error (a typo such as
 * `use_passfd = false` would otherwise silently leave passfd on), and so is a
 * value of the wrong type or out of range. Missing keys take their defaults.
 * The first problem found, in document order, is reported; every message
 * starts with the source and names the dotted key, the value as written in
 * TOML, and the reason:
 *
 *   config.toml: runtime.passfd_listener_port = "abc": must be an integer vsock port in 1..4294967294
 *   config.toml: runtime.use_passfd = true: unknown key (did you mean use_passfd_io?); valid keys in [runtime]: ...
 *   config.toml:3:24: invalid TOML: ...        (followed by the offending lines)
 */
import { readFileSync } from 'node:fs';
import { parse, TomlDate, TomlError } from 'smol-toml';
import { errnoText } from '../util/errno-text.js';
import { type Config, CROSS_RULES, defaultConfig, type KeyRule, SCHEMA, SECTIONS } from './schema.js';

/** A configuration that cannot be used; `message` is meant for the user as is. */
export class ConfigError extends Error {
  /** File name (or the `source` given to `parseConfig`). */
  readonly source: string;
  /** Dotted key (`runtime.agent_port`) or section name; undefined for syntax and read errors. */
  readonly key: string | undefined;
  /** 1-based position of a TOML syntax error. */
  readonly line: number | undefined;
  readonly column: number | undefined;

  constructor(
    message: string,
    fields: { source: string; key?: string; line?: number; column?: number },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ConfigError';
    this.source = fields.source;
    this.key = fields.key;
    this.line = fields.line;
    this.column = fields.column;
  }
}

/** Name used in messages when `parseConfig` is not told where the text came from. */
const DEFAULT_SOURCE = '<config>';

/**
 * Parses and validates TOML text. `source` (usually the file name) starts every
 * error message. Throws `ConfigError`.
 */
export function parseConfig(tomlText: string, source: string = DEFAULT_SOURCE): Config {
  let doc: Record<string, unknown>;
  try {
    doc = parse(tomlText, { integersAsBigInt: true });
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.replace(/^Invalid TOML document: /, '').split('\n\n')[0];
      throw new ConfigError(
        `${source}:${err.line}:${err.column}: invalid TOML: ${reason}\n\n${err.codeblock}`,
        { source, line: err.line, column: err.column },
        { cause: err },
      );
    }
    throw err;
  }

  const config = defaultConfig();
  const sectionList = SECTIONS.map((s) => `[${s}]`).join(', ');

  for (const [name, body] of Object.entries(doc)) {
    if (!isSection(name)) {
      if (isTable(body)) {
        throw new ConfigError(
          `${source}: [${name}]: unknown section${suggest(name, SECTIONS, (s) => `[${s}]`)}; valid sections: ${sectionList}`,
          { source, key: name },
        );
      }
      const home = sectionOf(name);
      const hint = home ? ` (it belongs in [${home}])` : '';
      throw new ConfigError(
        `${source}: ${name} = ${formatValue(body)}: unknown top-level key${hint}; keys go in a section: ${sectionList}`,
        { source, key: name },
      );
    }
    if (!isTable(body)) {
      throw new ConfigError(`${source}: ${name} = ${formatValue(body)}: must be a table ([${name}])`, {
        source,
        key: name,
      });
    }

    const rules: Record<string, KeyRule<unknown>> = SCHEMA[name];
    const target = config[name] as unknown as Record<string, unknown>;
    const validKeys = Object.keys(rules);
    for (const [key, value] of Object.entries(body)) {
      const dotted = `${name}.${key}`;
      const rule = Object.hasOwn(rules, key) ? rules[key] : undefined;
      if (!rule) {
        const home = sectionOf(key);
        const hint = home ? ` (it belongs in [${home}])` : suggest(key, validKeys, (k) => k);
        throw new ConfigError(
          `${source}: ${dotted} = ${formatValue(value)}: unknown key${hint}; valid keys in [${name}]: ${validKeys.join(', ')}`,
          { source, key: dotted },
        );
      }
      const checked = rule.check(value);
      if (!checked.ok) {
        throw new ConfigError(`${source}: ${dotted} = ${formatValue(value)}: ${checked.reason}`, {
          source,
          key: dotted,
        });
      }
      target[key] = checked.value;
    }
  }

  for (const cross of CROSS_RULES) {
    const reason = cross.check(config);
    if (reason !== undefined) {
      const dotted = `${cross.section}.${cross.key}`;
      // A validated value: integers are plain numbers by now, not TOML floats.
      const value = (config[cross.section] as unknown as Record<string, unknown>)[cross.key];
      const shown = typeof value === 'number' ? String(value) : formatValue(value);
      throw new ConfigError(`${source}: ${dotted} = ${shown}: ${reason}`, { source, key: dotted });
    }
  }
  return config;
}

/**
 * Reads and validates a config file. Without a path there is no file to read
 * and the defaults are returned (no implicit search path: what runs is what
 * the command line names). Throws `ConfigError`, also when the file cannot be
 * read.
 */
export function loadConfig(path?: string): Config {
  if (path === undefined) return defaultConfig();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `${path}: cannot read config file: ${errnoText(err)}`,
      { source: path },
      { cause: err },
    );
  }
  return parseConfig(text, path);
}

function isSection(name: string): name is keyof Config {
  return Object.hasOwn(SCHEMA, name);
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof TomlDate);
}

/** The section a key belongs to, for a key written in the wrong place. */
function sectionOf(key: string): string | undefined {
  return SECTIONS.find((s) => Object.hasOwn(SCHEMA[s], key));
}

/** ` (did you mean X?)` when a valid name is within a small edit distance. */
function suggest(name: string, valid: readonly string[], show: (s: string) => string): string {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of valid) {
    const d = editDistance(name.toLowerCase(), candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const close =
    best !== undefined &&
    (bestDistance <= Math.max(2, Math.floor(best.length / 3)) || (name.length >= 3 && best.startsWith(name)));
  return close && best !== undefined ? ` (did you mean ${show(best)}?)` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

const MAX_SHOWN = 160;

/** A value as it would be written in TOML, shortened for messages. */
export function formatValue(v: unknown): string {
  const s = toToml(v);
  return s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN - 1)}…` : s;
}

function toToml(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'nan';
    if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
    return Number.isInteger(v) && Math.abs(v) < 1e16 ? v.toFixed(1) : String(v);
  }
  if (v instanceof TomlDate) return v.toISOString();
  if (Array.isArray(v)) return `[${v.map(toToml).join(', ')}]`;
  if (isTable(v)) {
    const entries = Object.entries(v).map(([k, x]) => `${k} = ${toToml(x)}`);
    return entries.length ? `{ ${entries.join(', ')} }` : '{}';
  }
  return String(v);
}
