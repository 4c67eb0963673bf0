/**
 * Each CLI start loads only what it runs: `--help` and a subcommand's help
 * load no native addon and none of the device, VM, agent or benchmark code
 * (one static import of the benchmark's A/B runner once put QEMU's launcher
 * and koffi on every start's path). Observed in a real `node` process: a
 * module-loader hook records every bundle file loaded, `process.dlopen` is
 * watched for native addons, and the esbuild bundle's `// src/...` markers
 * say which source modules each loaded file holds.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CLI, tmpDir } from '../support/cli.js';

/** Runs the CLI with `args`; the bundle files it loaded and the native addons it opened. */
function loaded(args: string[]): { files: string[]; addons: string[]; status: number | null } {
  const dir = tmpDir('passfd-lazy-');
  const hooks = path.join(dir, 'hooks.mjs');
  const log = path.join(dir, 'loaded.log');
  fs.writeFileSync(
    hooks,
    `export async function load(url, context, next) {
  if (url.startsWith('file:')) (await import('node:fs')).appendFileSync(${JSON.stringify(log)}, 'file ' + url + '\\n');
  return next(url, context);
}\n`,
  );
  const setup = path.join(dir, 'setup.mjs');
  fs.writeFileSync(
    setup,
    `import fs from 'node:fs';
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';
register(pathToFileURL(${JSON.stringify(hooks)}));
const dlopen = process.dlopen;
process.dlopen = function (module, filename, ...rest) {
  fs.appendFileSync(${JSON.stringify(log)}, 'addon ' + filename + '\\n');
  return dlopen.call(this, module, filename, ...rest);
};\n`,
  );
  const r = spawnSync(process.execPath, ['--import', setup, CLI, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  const lines = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
  fs.rmSync(dir, { recursive: true, force: true });
  return {
    status: r.status,
    files: lines.filter((l) => l.startsWith('file ')).map((l) => fileURLToPath(l.slice(5))),
    addons: lines.filter((l) => l.startsWith('addon ')).map((l) => l.slice(6)),
  };
}

/** The source modules bundled into `file` (esbuild's `// src/<path>` markers). */
function sources(file: string): string[] {
  return [...fs.readFileSync(file, 'utf8').matchAll(/^\/\/ (src\/\S+\.ts)$/gm)].map((m) => m[1]!);
}

// device/defaults.ts is constants (the caps the help text names): allowed.
const HEAVY =
  /^src\/(device\/(?!defaults\.ts)|vm|agent\/(?!process\/output-relay)|bench\/backend-ab\/backend-ab|native-bindings|shim|broker|ttrpc|protocol\/gen)/;

describe('what a CLI start loads', () => {
  for (const args of [
    ['--help'],
    ['bench', '--help'],
    ['vmm', '--help'],
    ['agent', '--help'],
    ['run', '--help'],
  ]) {
    it(`${args.join(' ')}: no native addon, no device, VM, agent, broker or A/B code`, () => {
      const r = loaded(args);
      expect(r.status).toBe(0);
      expect(r.files[0]).toBe(CLI); // the hook saw the entry point itself
      expect(r.addons).toEqual([]);
      const heavy = r.files.flatMap((f) => sources(f)).filter((s) => HEAVY.test(s));
      expect(heavy).toEqual([]);
    });
  }
});
