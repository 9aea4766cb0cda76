import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { configJsonSchemaText } from '../../src/config/json-schema.ts';

const file = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const SCHEMA_PATH = 'config/pcoip-lb.schema.json';

function validator() {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  return ajv.compile(JSON.parse(file(SCHEMA_PATH)) as object);
}

describe('config/pcoip-lb.schema.json (JSON Schema for editors)', () => {
  it('is what `npm run schema` generates from the zod schema (run it after changing src/config/schema.ts)', () => {
    expect(file(SCHEMA_PATH)).toBe(configJsonSchemaText());
  });

  it.each(['config/pcoip-lb.yaml', 'config/demo.yaml'])('%s names it on its first line and validates against it', (path) => {
    const text = file(path);
    expect(text.split('\n')[0]).toBe('# yaml-language-server: $schema=./pcoip-lb.schema.json');
    const validate = validator();
    expect(validate(parse(text)), JSON.stringify(validate.errors)).toBe(true);
  });

  it('catches what an editor should flag: a bare number for a duration, an unknown key, a wrong enum value', () => {
    const validate = validator();
    const base = parse(file('config/demo.yaml')) as Record<string, any>;
    const cases: Array<[string, (c: Record<string, any>) => void, string]> = [
      ['duration without unit', (c) => (c.listeners.pcoipUdp.idleTimeout = 120), '/listeners/pcoipUdp/idleTimeout'],
      ['duration text', (c) => (c.affinity.ttl = '1 hour'), '/affinity/ttl'],
      ['unknown key', (c) => (c.colour = 'blue'), ''],
      ['enum', (c) => (c.balance = { algorithm: 'round-robin' }), '/balance/algorithm'],
      ['address without port', (c) => (c.admin.bind = '127.0.0.1'), '/admin/bind'],
    ];
    for (const [name, mutate, at] of cases) {
      const config = structuredClone(base);
      mutate(config);
      expect(validate(config), name).toBe(false);
      expect(validate.errors!.map((e) => e.instancePath), name).toContain(at);
    }
  });
});
