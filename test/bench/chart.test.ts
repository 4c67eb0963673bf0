import { describe, expect, it } from 'vitest';
import { chartData, renderChartSvg } from '../../src/bench/chart.js';
import { fixedReport } from './fixtures.js';

/** Checks that every tag is closed in order (a well-formedness check without an XML library). */
function balanced(xml: string): boolean {
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([A-Za-z][\w:-]*)[^>]*?(\/?)>/g)) {
    const [, close, name, selfClose] = m;
    if (selfClose) continue;
    if (close) {
      if (stack.pop() !== name) return false;
    } else stack.push(name!);
  }
  return stack.length === 0;
}

describe('chart', () => {
  it('takes throughput, ceiling, CPU and latency figures from the summary', () => {
    const data = chartData(fixedReport());
    expect(data).toContainEqual({
      panel: 'throughput',
      metric: 'stdout throughput',
      path: 'passfd',
      value: 600,
    });
    expect(data).toContainEqual({
      panel: 'throughput',
      metric: 'stdout throughput',
      path: 'kernel ceiling',
      value: 1100,
    });
    expect(data.filter((d) => d.panel === 'cpu').map((d) => d.role)).toContain('vmm (device + guest stack)');
  });

  it('renders a well-formed SVG document', async () => {
    const svg = await renderChartSvg(fixedReport());
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('xmlns="http://www.w3.org/2000/svg"');
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(balanced(svg)).toBe(true);
    expect(svg).toContain('passfd vs RPC-copy');
    expect(svg).toContain('stdout throughput');
  });
});
