/**
 * A strict reader of the Prometheus text exposition format (0.0.4), enough to prove that
 * /metrics is well formed: every line is a HELP/TYPE comment or a sample, every sample belongs
 * to a family whose TYPE came before it, label values are properly quoted, values are numbers.
 * Throws with the line number on the first violation.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
  /** The value of the one sample with this name and exactly these labels; undefined if absent. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** The sum of every sample with this name whose labels include `labels` (0 when none). */
  sum(name: string, labels?: Record<string, string>): number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL_NAME = '[a-zA-Z_][a-zA-Z0-9_]*';
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
const LABEL_RE = new RegExp(`^(${LABEL_NAME})="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"(,|$)`);
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];

export function parsePrometheusText(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, i) => {
      const where = `line ${i + 1}: "${line}"`;
      if (line === '') return;
      if (line.startsWith('#')) {
        const meta = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
        if (!meta) {
          if (/^# (HELP|TYPE)/.test(line)) throw new Error(`malformed ${where}`);
          return;
        }
        if (meta[1] === 'TYPE') {
          if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3]!)) throw new Error(`unknown type in ${where}`);
          if (types.has(meta[2]!)) throw new Error(`second TYPE for ${meta[2]} in ${where}`);
          types.set(meta[2]!, meta[3]!);
        }
        return;
      }
      const m = SAMPLE_RE.exec(line);
      if (!m) throw new Error(`not a sample: ${where}`);
      const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
      const family = types.has(name) ? name : HISTOGRAM_SUFFIXES.map((s) => (name.endsWith(s) ? name.slice(0, -s.length) : '')).find((f) => f && ['histogram', 'summary'].includes(types.get(f) ?? ''));
      if (!family) throw new Error(`sample before (or without) its TYPE: ${where}`);
      const labels: Record<string, string> = {};
      let rest = labelText ?? '';
      while (rest !== '') {
        const lm = LABEL_RE.exec(rest);
        if (!lm) throw new Error(`bad labels in ${where}`);
        if (lm[1]! in labels) throw new Error(`repeated label ${lm[1]} in ${where}`);
        labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        rest = rest.slice(lm[0].length);
      }
      // Prometheus reads values with Go's strconv.ParseFloat: NaN and Inf in any letter case.
      if (!/^(nan|[+-]?inf|[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?)$/i.test(valueText)) throw new Error(`bad value in ${where}`);
      const lower = valueText.toLowerCase();
      const value = lower === 'nan' ? NaN : lower.endsWith('inf') ? (lower.startsWith('-') ? -Infinity : Infinity) : Number(valueText);
      samples.push({ name, labels, value });
    });
  return {
    types,
    samples,
    value(name, labels = {}) {
      const keys = Object.keys(labels);
      const found = samples.filter((s) => s.name === name && Object.keys(s.labels).length === keys.length && keys.every((k) => s.labels[k] === labels[k]));
      if (found.length > 1) throw new Error(`${found.length} samples match ${name} ${JSON.stringify(labels)}`);
      return found[0]?.value;
    },
    sum(name, labels = {}) {
      return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
    },
  };
}
