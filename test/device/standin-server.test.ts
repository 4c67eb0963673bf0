/**
 * The AF_VSOCK stand-in server of a real `vmm` (`<guest-dir>/vsock.sock`),
 * driven with raw bytes: regressions for what the codec properties found.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STANDIN_MAX_LINE } from '../../src/protocol/vsock-standin.js';
import { fdCount, fdsSettle, startVmm, stopAll, type Vmm } from '../support/cli.js';

let vmm: Vmm;
let socketPath: string;

beforeAll(async () => {
  vmm = await startVmm();
  socketPath = path.join(vmm.guestDir, 'vsock.sock');
});

afterAll(async () => {
  await stopAll();
  if (vmm) fs.rmSync(vmm.dir, { recursive: true, force: true });
});

/** Writes `bytes` in one write; resolves what the server sent once `done` says so or it closes (bounded). */
function exchange(bytes: Buffer, done: (got: string) => boolean): Promise<{ got: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socketPath);
    let got = '';
    const t = setTimeout(() => {
      c.destroy();
      reject(new Error(`no answer; got ${JSON.stringify(got)}`));
    }, 10_000);
    const finish = (closed: boolean) => {
      clearTimeout(t);
      c.destroy();
      resolve({ got, closed });
    };
    c.on('data', (d) => {
      got += d.toString('latin1');
      if (done(got)) finish(false);
    });
    c.on('close', () => finish(true));
    c.on('error', () => {});
    c.write(bytes);
  });
}

describe('stand-in server', () => {
  it('answers a malformed request of any length with one complete ERR EINVAL line, then closes', async () => {
    const baseline = fdCount(vmm.pid);
    for (const len of [1, 60, 100, STANDIN_MAX_LINE]) {
      const { got, closed } = await exchange(Buffer.from(`${'Z'.repeat(len)}\n`), () => false);
      expect(closed).toBe(true);
      expect(got).toMatch(/^ERR EINVAL unknown request "Z+/);
      expect(got.endsWith('\n')).toBe(true);
      expect(got.length - 1).toBeLessThanOrEqual(STANDIN_MAX_LINE);
    }
    expect(await fdsSettle(vmm.pid, baseline)).toBe(baseline);
  });

  it('serves a request even when an over-long line follows it in the same write', async () => {
    const port = 41_000;
    const bytes = Buffer.from(`LISTEN ${port}\n${'x'.repeat(STANDIN_MAX_LINE + 10)}`);
    const { got } = await exchange(bytes, (g) => g.includes('\n'));
    expect(got).toBe(`OK ${port}\n`);
  });
});
