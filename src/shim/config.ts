/**
 * Which configuration file the shim reads, in Kata's order:
 *
 *   1. the runtime options' ConfigPath, when containerd passes one
 *      (`ctr run --runtime-config-path <file>`, or `ConfigPath` in a CRI
 *      runtime's `options` table);
 *   2. `$PASSFD_BROKER_CONFIG` (in containerd's environment: the shim
 *      inherits it);
 *   3. `/etc/passfd-broker/config.toml`, when it exists;
 *   4. else the defaults.
 *
 * A file named by 1 or 2 must exist: a typo there is an error, not a silent
 * fall back to the defaults.
 */
import fs from 'node:fs';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';

export const SYSTEM_CONFIG = '/etc/passfd-broker/config.toml';
export const CONFIG_ENV = 'PASSFD_BROKER_CONFIG';

export interface ShimConfig {
  config: Config;
  /** The file read, or undefined for the defaults. */
  path: string | undefined;
  /** Where the path came from, for the log. */
  source: 'runtime options' | `$${typeof CONFIG_ENV}` | 'system' | 'defaults';
}

/** The file the shim should read (see the module comment); undefined: defaults. */
export function configSource(
  optionsPath: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  systemPath = SYSTEM_CONFIG,
): Omit<ShimConfig, 'config'> {
  if (optionsPath) return { path: optionsPath, source: 'runtime options' };
  if (env[CONFIG_ENV]) return { path: env[CONFIG_ENV], source: `$${CONFIG_ENV}` };
  if (fs.existsSync(systemPath)) return { path: systemPath, source: 'system' };
  return { path: undefined, source: 'defaults' };
}

/** Loads the configuration the shim uses; throws ConfigError with the file and key on a bad file. */
export function loadShimConfig(
  optionsPath: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ShimConfig {
  const src = configSource(optionsPath, env);
  return { ...src, config: loadConfig(src.path) };
}
