// The package as a second project sees it: `npm pack` of this checkout (the
// dist/ the build made; scripts are not run, so the build other suites use is
// left alone), its content checked, the tarball installed into a fresh
// project in a temporary directory (dependencies from npm's cache where it
// has them), a TypeScript program compiled by tsc against the installed
// package's declarations, then run: it starts the installed CLI's vmm and
// agent, runs a command through passfd and prints its output. The installed
// bin works through node_modules/.bin's symlink, and without the optional
// chart packages `bench --out` still writes its results.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../support/cli.js';

const root = path.resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, string | { types: string; default: string }>;
  bin: Record<string, string>;
  allowScripts: Record<string, boolean>;
};

let work: string;
let tarball: string;
let files: string[];

beforeAll(() => {
  work = tmpDir('passfd-pack-');
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], {
    cwd: root,
    encoding: 'utf8',
  });
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(work, info!.filename);
  files = info!.files.map((f) => f.path);
}, 60_000);

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('ships the build, its declarations, the license and docs, and nothing it does not need', () => {
    for (const f of ['package.json', 'LICENSE', 'README.md', 'config.toml.example', 'proto/agent.proto'])
      expect(files, f).toContain(f);
    const targets = [
      ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : [e.types, e.default])),
      ...Object.values(pkg.bin),
    ].map((t) => t.replace(/^\.\//, ''));
    for (const t of targets) expect(files, t).toContain(t);
    // Sources, tests, scripts and examples stay home; no source maps point at sources not shipped.
    const stray = files.filter(
      (f) =>
        /^(src|test|scripts|examples|native-bindings)\//.test(f) ||
        f.endsWith('.map') ||
        /(?<!\.d)\.ts$/.test(f),
    );
    expect(stray).toEqual([]);
    for (const f of files.filter((x) => x.endsWith('.js')))
      expect(fs.readFileSync(path.join(root, f), 'utf8'), f).not.toContain('sourceMappingURL');
    // Every library module comes with its declarations.
    for (const f of files.filter((x) => /^dist\/(src|native-bindings)\/.*\.js$/.test(x)))
      expect(files, f).toContain(f.replace(/\.js$/, '.d.ts'));
  });
});

describe('installed into a second project', () => {
  let proj: string;

  beforeAll(() => {
    proj = path.join(work, 'consumer');
    fs.mkdirSync(proj);
    fs.writeFileSync(
      path.join(proj, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module', allowScripts: pkg.allowScripts }),
    );
    execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: proj,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  }, 240_000);

  it("compiles `import { Broker } from 'passfd-broker'` with the package's types and runs it", () => {
    fs.writeFileSync(
      path.join(proj, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          outDir: 'out',
          typeRoots: [path.join(root, 'node_modules/@types')],
          types: ['node'],
        },
        files: ['main.ts'],
      }),
    );
    fs.writeFileSync(
      path.join(proj, 'main.ts'),
      `import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { Broker, type BrokeredProcess, defaultConfig, startEmbeddedStack } from 'passfd-broker';
import { agentMethods } from 'passfd-broker/protocol';

// Types are real, not any: this line must not compile.
// @ts-expect-error hvsockPath and config are required
new Broker({});

const config = defaultConfig();
const stack = await startEmbeddedStack({ config, logLevel: 'error' });
const dir = fs.mkdtempSync(\`\${stack.dir}/fifos-\`);
const fifos = { stdin: \`\${dir}/c-stdin\`, stdout: \`\${dir}/c-stdout\`, stderr: \`\${dir}/c-stderr\` };
execFileSync('mkfifo', Object.values(fifos));
const broker = new Broker({ hvsockPath: stack.hvsockPath, config });
const proc: BrokeredProcess = await broker.start({ containerId: 'packed', args: ['echo', 'from the tarball'], fifos });
// Opened now, while the broker's keeper holds the FIFO: an open after the exit would wait for a writer forever.
const reader = new net.Socket({ fd: fs.openSync(fifos.stdout, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
reader.setEncoding('utf8');
let text = '';
reader.on('data', (d) => { text += d; });
const ended = new Promise<void>((r) => reader.on('end', () => r()));
await proc.closeStdin();
const status: number = await proc.wait();
await ended;
await broker.close();
await stack.stop();
console.log(JSON.stringify({ status, text, method: agentMethods.WaitProcess.name }));
`,
    );
    const tsc = spawnSync(
      process.execPath,
      [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', proj],
      {
        encoding: 'utf8',
      },
    );
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
    const run = spawnSync(process.execPath, [path.join(proj, 'out/main.js')], {
      cwd: proj,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, PASSFD_LOG: 'debug' },
    });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ status: 0, text: 'from the tarball\n', method: 'WaitProcess' });
  }, 120_000);

  it('the bin runs through node_modules/.bin (a symlink), from the installed bundle', () => {
    const bin = path.join(proj, 'node_modules/.bin/passfd-broker');
    expect(fs.lstatSync(bin).isSymbolicLink()).toBe(true);
    const help = spawnSync(bin, ['--help'], { encoding: 'utf8' });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: passfd-broker');
    const run = spawnSync(bin, ['run', '--', 'sh', '-c', 'echo out; exit 3'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect([run.status, run.stdout]).toEqual([3, 'out\n']);
  }, 120_000);

  it('without the optional chart packages, bench --out writes its results and says why there is no chart', () => {
    expect(fs.existsSync(path.join(proj, 'node_modules/vega'))).toBe(false);
    const out = path.join(proj, 'bench-out');
    const bench = spawnSync(
      path.join(proj, 'node_modules/.bin/passfd-broker'),
      ['bench', '--scenarios', 'latency', '--reps', '1', '--trips', '20', '--no-progress', '--out', out],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(bench.status, bench.stdout + bench.stderr).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['results.json', 'results.md']);
    expect(bench.stderr).toContain('no chart.svg: chart.svg needs the optional packages vega and vega-lite');
  }, 180_000);
});
