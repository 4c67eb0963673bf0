/**
 * `--out <dir>`: writes `results.json` (the full report, as `--json`
 * prints it), `results.md` (the Markdown tables) and `chart.svg` when there
 * is something to chart (passfd/RPC-copy figures) and the optional chart
 * packages are installed; `chartSkipped` says why it was not written.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChartUnavailableError, renderChartSvg } from './chart.js';
import { renderMarkdown } from './markdown.js';
import { type BenchReport, toJson } from './results.js';

export interface WrittenFiles {
  json: string;
  markdown: string;
  chart: string | null;
  chartSkipped?: string;
}

export async function writeOutputs(dir: string, report: BenchReport): Promise<WrittenFiles> {
  fs.mkdirSync(dir, { recursive: true });
  const files: WrittenFiles = {
    json: path.join(dir, 'results.json'),
    markdown: path.join(dir, 'results.md'),
    chart: null,
  };
  fs.writeFileSync(files.json, `${toJson(report)}\n`);
  fs.writeFileSync(files.markdown, renderMarkdown(report));
  if (report.summary.length === 0) {
    files.chartSkipped = 'no passfd/RPC-copy figures to chart';
    return files;
  }
  try {
    const svg = await renderChartSvg(report);
    files.chart = path.join(dir, 'chart.svg');
    fs.writeFileSync(files.chart, svg);
  } catch (err) {
    if (!(err instanceof ChartUnavailableError)) throw err;
    files.chartSkipped = err.message;
  }
  return files;
}
