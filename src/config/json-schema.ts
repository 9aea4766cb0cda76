import { z } from 'zod';
import { configSchema } from './schema.ts';

/**
 * The config file's JSON Schema (draft 2020-12), generated from the zod schema so the two cannot
 * drift: `npm run schema` writes it to config/pcoip-lb.schema.json, which the example config
 * names for editors (`# yaml-language-server: $schema=…`). It describes the file as written
 * (`io: 'input'`: durations are strings, defaults optional); the cross-key rules (duplicate ids,
 * overlapping binds, timeout ≤ interval, files that must exist) stay with check-config.
 */
export function configJsonSchema(): Record<string, unknown> {
  const generated = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'throw' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  return {
    $schema,
    title: 'pcoip-lb configuration',
    description: 'pcoip-lb config file (YAML). Generated from src/config/schema.ts by `npm run schema`; `pcoip-lb check-config` checks more than this schema can.',
    ...rest,
  };
}

/** The file's text, as committed. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
