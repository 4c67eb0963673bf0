// Bundles the executables (esbuild) into dist/cli/, after `tsc` has built the
// library (dist/src, dist/native-bindings: what the package's exports name).
//
// Why a bundle: every process the runtime starts (run, vmm, agent, the shim)
// is a Node start-up, and loading a few hundred small ES modules one by one
// (resolve, read, compile, link each) was most of it. One file per entry
// point plus shared chunks, code-split at the CLI's dynamic imports, so each
// subcommand still loads only what it runs. Measured with `bench --scenarios
// startup` (README, Performance).
//
// Each entry point is one line of ENTRY_POINTS; they share chunks. Entry
// points and chunks stay in one directory: src/util/ready-child.ts finds the
// CLI beside its own chunk (PASSFD_CLI_BUNDLE is defined only here).
//
// Native and optional packages stay external, loaded from node_modules at run
// time: koffi and unix-dgram (native code), vega and vega-lite (the chart,
// optional, only `bench --out`). No source maps: the package ships no sources.
import { build } from 'esbuild';

/** dist/cli/<name>.js → its source. */
export const ENTRY_POINTS = {
  'passfd-broker': 'src/cli/main.ts',
  // Runs inside a QEMU guest (`bench --vm qemu --backend ...`), found beside the CLI.
  'vsock-ab-guest': 'src/bench/backend-ab/guest-program.ts',
  'containerd-shim-passfd-v2': 'src/shim/main.ts',
};

const EXTERNAL = ['koffi', 'unix-dgram', 'vega', 'vega-lite'];

await build({
  entryPoints: ENTRY_POINTS,
  outdir: 'dist/cli',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.11',
  external: EXTERNAL,
  define: { PASSFD_CLI_BUNDLE: 'true' },
  // Bundled CommonJS dependencies (commander, cli-progress) call require() for Node's builtins.
  banner: {
    js: "import { createRequire as passfdCreateRequire } from 'node:module'; const require = passfdCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
