/**
 * `--out <dir>`: writes `results.json` (the full report, as `--json`
 * prints it), `results.md` (the Markdown tables) and `chart.svg`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { renderChartSvg } from './chart.js';
import { renderMarkdown } from './markdown.js';
import { type BenchReport, toJson } from './results.js';

export interface WrittenFiles {
  json: string;
  markdown: string;
  chart: string;
}

export async function writeOutputs(dir: string, report: BenchReport): Promise<WrittenFiles> {
  fs.mkdirSync(dir, { recursive: true });
  const files = {
    json: path.join(dir, 'results.json'),
    markdown: path.join(dir, 'results.md'),
    chart: path.join(dir, 'chart.svg'),
  };
  fs.writeFileSync(files.json, `${toJson(report)}\n`);
  fs.writeFileSync(files.markdown, renderMarkdown(report));
  fs.writeFileSync(files.chart, await renderChartSvg(report));
  return files;
}
