// Which pump a passfd output gets (output-relay.ts): splice everywhere,
// except `auto` into AF_VSOCK on kernels before 6.5, whose splice into a
// socket sends one packet per pipe page (the VM suite traces that in a 6.1
// guest); explicit `splice`/`copy` always win; bad names are refused.
import { describe, expect, it } from 'vitest';
import { outputPumpKind, spliceBatchesPages } from '../../src/agent/process/output-relay.js';

describe('spliceBatchesPages', () => {
  it('is false before 6.5 and true from it, whatever follows the version', () => {
    expect(spliceBatchesPages('6.1.0-57-amd64')).toBe(false);
    expect(spliceBatchesPages('5.15.0-91-generic')).toBe(false);
    expect(spliceBatchesPages('6.4.16')).toBe(false);
    expect(spliceBatchesPages('6.5.0')).toBe(true);
    expect(spliceBatchesPages('6.12.9+bpo-amd64')).toBe(true);
    expect(spliceBatchesPages('7.0.0')).toBe(true);
    expect(spliceBatchesPages('weird')).toBe(true); // unknown: keep the zero-copy path
  });
});

describe('outputPumpKind', () => {
  it('auto copies into AF_VSOCK on a page-by-page kernel only', () => {
    expect(outputPumpKind('auto', 'AF_VSOCK', '6.1.0-57-amd64')).toBe('copy');
    expect(outputPumpKind('auto', 'AF_VSOCK', '6.6.0')).toBe('splice');
    expect(outputPumpKind('auto', 'UNIX', '6.1.0-57-amd64')).toBe('splice');
    expect(outputPumpKind('auto', null, '6.1.0-57-amd64')).toBe('splice');
  });

  it('an explicit relay is taken as given', () => {
    expect(outputPumpKind('splice', 'AF_VSOCK', '6.1.0')).toBe('splice');
    expect(outputPumpKind('copy', 'UNIX', '6.6.0')).toBe('copy');
  });
});
