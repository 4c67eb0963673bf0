/** Option parsers shared by subcommands: commander calls them and shows their errors. */
import { InvalidArgumentError } from 'commander';

export function parsePort(value: string): number {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(value) || Number(value) > 0xffff_ffff) {
    throw new InvalidArgumentError('must be a vsock port (0..4294967295)');
  }
  return Number(value);
}

export function parseCid(value: string): number {
  const n = parsePort(value);
  if (n < 3 || n >= 0xffff_ffff) throw new InvalidArgumentError('must be a guest CID (3..4294967294)');
  return n;
}

/** Runs `stop` once on SIGINT/SIGTERM, then exits 0. */
export function onTermination(stop: () => Promise<void> | void): void {
  let stopping = false;
  const handler = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    Promise.resolve(stop()).then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`passfd-broker: while stopping on ${sig}: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

export function parseMs(value: string): number {
  if (!/^[0-9]{1,9}$/.test(value)) throw new InvalidArgumentError('must be a whole number of milliseconds');
  return Number(value);
}
