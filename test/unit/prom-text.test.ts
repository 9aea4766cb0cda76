import { describe, expect, it } from 'vitest';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/** The test parser must reject what Prometheus would reject, or a /metrics test proves nothing. */
describe('Prometheus text parser (test helper)', () => {
  it('reads a well-formed exposition', () => {
    const text = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 3\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 0.5\nh_count 2\n';
    const e = parsePrometheusText(text);
    expect(e.value('a_total', { x: '1', y: 'q"uote' })).toBe(3);
    expect(e.value('h_bucket', { le: '+Inf' })).toBe(2);
  });

  it.each([
    ['no trailing newline', '# TYPE a gauge\na 1'],
    ['sample without TYPE', 'a 1\n'],
    ['unquoted label', '# TYPE a gauge\na{x=1} 1\n'],
    ['bad value', '# TYPE a gauge\na 1,5\n'],
    ['unknown type', '# TYPE a thing\na 1\n'],
    ['repeated label', '# TYPE a gauge\na{x="1",x="2"} 1\n'],
    ['garbage line', '# TYPE a gauge\nthis is not a sample\n'],
  ])('rejects %s', (_name, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });
});
