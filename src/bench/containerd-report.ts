/**
 * What the scenarios against a private containerd (containerd.ts, cri.ts)
 * share: the tools they need, how their steps run, the host and versions
 * they ran on, how a figure is printed, and their two output files.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Progress } from './progress.js';
import { type HostMeta, hostMeta } from './results.js';
import { BenchInterrupted } from './runner.js';

/** Throws, naming the scenario, when containerd, ctr or runc is missing. */
export function requireContainerdTools(scenario: string): void {
  for (const tool of ['containerd', 'ctr', 'runc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`the ${scenario} scenario needs ${tool} (apt-get install containerd)`);
    }
  }
}

function version(cmd: string): string {
  try {
    return execFileSync(cmd, ['--version'], { encoding: 'utf8', timeout: 10_000 }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

export type ContainerdMeta = HostMeta & { containerd: string; runc: string; durationS: number };

/** The host, containerd's and runc's versions, and the seconds since `startedMs` (performance.now()). */
export function containerdMeta(startedMs: number): ContainerdMeta {
  return {
    ...hostMeta(),
    containerd: version('containerd'),
    runc: version('runc'),
    durationS: (performance.now() - startedMs) / 1000,
  };
}

/** A figure as the tables print it: whole above 100, three significant digits below. */
export const formatFigure = (v: number) => (v >= 100 ? v.toFixed(0) : v.toPrecision(3));

/** Writes `<name>.json` (the report) and `<name>.md` into `dir`; returns their paths. */
export function writeReportFiles(dir: string, name: string, report: unknown, markdown: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const json = path.join(dir, `${name}.json`);
  const md = path.join(dir, `${name}.md`);
  fs.writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  fs.writeFileSync(md, markdown);
  return [json, md];
}

export interface ReportTable {
  /** The first line: what was compared. */
  title: string;
  meta: ContainerdMeta;
  /** Sizes and counts, after the host in the second line. */
  what: string;
  /** The columns between `metric | unit` and `target`, right-aligned (figures and ratios). */
  figures: string[];
  /** One row per metric: metric, unit, one cell per figure column, target. */
  rows: string[][];
  errors: string[];
}

/** A report as Markdown (also what the terminal shows): title, host line, table, failed runs. */
export function reportMarkdown(t: ReportTable): string {
  const m = t.meta;
  const lines = [
    t.title,
    '',
    `${m.containerd}; ${m.runc}; ${m.cpus} CPUs, Linux ${m.kernel}, Node ${m.node}; ${t.what}; ${m.durationS.toFixed(0)} s`,
    '',
    `| metric | unit | ${t.figures.join(' | ')} | target |`,
    `|---|---|${t.figures.map(() => '---:').join('|')}|---|`,
    ...t.rows.map((cells) => `| ${cells.join(' | ')} |`),
  ];
  if (t.errors.length > 0) lines.push('', 'Failed runs:', ...t.errors.map((e) => `- ${e}`));
  return `${lines.join('\n')}\n`;
}

export interface StepOptions {
  /** The scenario's name, in the log line of a failed step. */
  scenario: string;
  progress: Progress;
  /** Failed steps are added here, as `<label> <who>: <why>`. */
  errors: string[];
  /** Aborting stops the run before the next step: BenchInterrupted with the signal's name. */
  abort?: AbortSignal;
  /** More lines to say why a step failed (what the runtime logged about it). */
  context?: () => string[];
}

/**
 * Runs measurement steps one at a time: a step that throws is recorded and
 * logged and the run goes on (every figure that can be had is had); an
 * abort ends the run between steps.
 */
export function stepRunner(
  o: StepOptions,
): (label: string, who: string, fn: () => Promise<void>) => Promise<void> {
  return async (label, who, fn) => {
    if (o.abort?.aborted) throw new BenchInterrupted(o.abort.reason as NodeJS.Signals);
    o.progress.step(`${label} ${who}`);
    try {
      await fn();
    } catch (err) {
      const message = [(err as Error).message, ...(o.context?.() ?? [])].join('\n    ');
      o.errors.push(`${label} ${who}: ${message}`);
      o.progress.log(`bench ${o.scenario}: ${label} ${who} failed: ${message}`);
    }
  };
}
