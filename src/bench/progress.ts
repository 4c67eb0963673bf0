/**
 * The progress bar on stderr while the benchmark runs (cli-progress). It
 * only draws on a terminal; otherwise (CI, `2>file`) it stays silent and the
 * runner's warnings are the only stderr output.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  step(label: string): void;
  done(): void;
  /** Prints a line without tearing the bar. */
  log(line: string): void;
}

export function createProgress(
  total: number,
  enabled: boolean,
  startLabel = 'starting vmm + agent',
): Progress {
  if (!enabled || !process.stderr.isTTY) {
    return { step: () => {}, done: () => {}, log: (l) => process.stderr.write(`${l}\n`) };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: 'bench [{bar}] {value}/{total} steps | {duration_formatted} | {label}',
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  let stopped = false;
  bar.start(total, 0, { label: startLabel });
  return {
    step: (label) => {
      if (stopped) return;
      bar.update(value, { label });
      value += 1;
    },
    // Idempotent: also called when the run is interrupted, to give the cursor back.
    done: () => {
      if (stopped) return;
      stopped = true;
      bar.update(total, { label: 'done' });
      bar.stop();
    },
    log: (l) => {
      process.stderr.write(`\r\x1b[2K${l}\n`);
      if (!stopped) bar.update(value);
    },
  };
}
