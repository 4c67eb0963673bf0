/**
 * The chart (`chart.svg`): Vega-Lite compiled to Vega and rendered to SVG
 * headlessly in Node (`vega.View#toSVG`, renderer "none": no browser, no
 * canvas). Three panels from the summary rows: throughput per path beside
 * the kernel ceiling, CPU seconds per GiB stacked by process, and round-trip
 * latency.
 *
 * vega and vega-lite are optional peer dependencies (large, and only this
 * file uses them): they load when a chart is rendered, and without them
 * `renderChartSvg` throws ChartUnavailableError, which `--out` reports
 * instead of failing the run.
 */
import type { TopLevelSpec } from 'vega-lite';
import type { BenchReport } from './results.js';

/** vega or vega-lite is not installed. */
export class ChartUnavailableError extends Error {
  constructor(cause: unknown) {
    super('chart.svg needs the optional packages vega and vega-lite (npm install vega vega-lite)', { cause });
    this.name = 'ChartUnavailableError';
  }
}

const PATH_LABEL = { passfd: 'passfd', rpc: 'RPC-copy', kernel: 'kernel ceiling' };

/** Legend names; in a QEMU run the ceiling is the host's, and the legend says so. */
function pathLabels(report: BenchReport): typeof PATH_LABEL {
  return report.meta.mode === 'qemu' ? { ...PATH_LABEL, kernel: 'kernel ceiling (host)' } : PATH_LABEL;
}
const COLORS = { range: ['#1f77b4', '#ff7f0e', '#7f7f7f'] };

interface Datum {
  panel: string;
  metric: string;
  path: string;
  value: number;
  role?: string;
}

export function chartData(report: BenchReport): Datum[] {
  const out: Datum[] = [];
  const labels = pathLabels(report);
  for (const r of report.summary) {
    const push = (path: keyof typeof PATH_LABEL, value: number | undefined) => {
      if (value === undefined || !Number.isFinite(value)) return;
      out.push({ panel: r.section, metric: r.label, path: labels[path], value });
    };
    if (r.unit === 'MiB/s' && (r.section === 'throughput' || r.key.endsWith('.mibps'))) {
      push('passfd', r.passfd);
      push('rpc', r.rpc);
      if (r.section === 'throughput') push('kernel', r.ceiling);
    } else if (r.section === 'latency') {
      push('passfd', r.passfd);
      push('rpc', r.rpc);
    } else if (r.section === 'cpu') {
      // "stdout: qemu (guest: kernel + agent + process)": the role is everything after the first ": ".
      const cut = r.label.indexOf(': ');
      const dir = r.label.slice(0, cut);
      const role = r.label.slice(cut + 2);
      for (const p of ['passfd', 'rpc'] as const) {
        const v = r[p];
        if (Number.isFinite(v))
          out.push({
            panel: 'cpu',
            metric: `${dir} ${labels[p]}`,
            path: labels[p],
            value: v,
            role,
          });
      }
    }
  }
  return out;
}

function modeTitle(report: BenchReport): string {
  const v = report.meta.vm;
  if (report.meta.mode !== 'qemu' || !v) return 'loopback';
  return `QEMU ${v.accel.toUpperCase()} guest (${v.cpus} vCPU, ${v.memoryMiB} MiB)`;
}

export function chartSpec(report: BenchReport): TopLevelSpec {
  const data = chartData(report);
  const xAxis = {
    field: 'metric',
    type: 'nominal',
    title: null,
    sort: null,
    axis: { labelAngle: -25, labelLimit: 220 },
  };
  const grouped = (panels: string[], title: string, yTitle: string, paths: string[], log: boolean) => ({
    title,
    data: { values: data.filter((d) => panels.includes(d.panel)) },
    mark: { type: 'bar', tooltip: true },
    width: 420,
    height: 240,
    encoding: {
      x: xAxis,
      xOffset: { field: 'path', type: 'nominal', scale: { domain: paths } },
      y: { field: 'value', type: 'quantitative', title: yTitle, ...(log ? { scale: { type: 'log' } } : {}) },
      color: {
        field: 'path',
        type: 'nominal',
        title: 'IO path',
        scale: { domain: paths, range: COLORS.range.slice(0, paths.length) },
      },
    },
  });
  const all = Object.values(pathLabels(report));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `passfd vs RPC-copy, ${modeTitle(report)}, ${report.meta.cpus}-CPU host, ${report.meta.date.slice(0, 10)} (medians)`,
    config: { font: 'sans-serif', legend: { labelLimit: 340 } },
    columns: 3,
    concat: [
      grouped(
        ['throughput', 'concurrency'],
        report.meta.mode === 'qemu'
          ? 'Throughput (stdout / stdin, aggregate of N containers; ceiling: host)'
          : 'Throughput (stdout / stdin, and aggregate of N containers)',
        'MiB/s',
        all,
        false,
      ),
      {
        title: 'CPU seconds per GiB moved, by process',
        data: { values: data.filter((d) => d.panel === 'cpu') },
        mark: { type: 'bar', tooltip: true },
        width: 240,
        height: 240,
        encoding: {
          x: xAxis,
          y: { field: 'value', type: 'quantitative', title: 'CPU s/GiB', stack: 'zero' },
          color: { field: 'role', type: 'nominal', title: 'process', scale: { scheme: 'tableau10' } },
        },
      },
      grouped(['latency'], '64-byte round trip', 'µs', all.slice(0, 2), false),
    ],
    resolve: { scale: { color: 'independent', xOffset: 'independent' } },
  } as TopLevelSpec;
}

/** The chart as an SVG document. Throws ChartUnavailableError without vega and vega-lite. */
export async function renderChartSvg(report: BenchReport): Promise<string> {
  let vega: typeof import('vega');
  let compile: typeof import('vega-lite').compile;
  try {
    [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') throw new ChartUnavailableError(err);
    throw err;
  }
  const vgSpec = compile(chartSpec(report)).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
