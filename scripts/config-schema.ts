// Writes config/pcoip-lb.schema.json from the zod schema: `npm run schema` (after changing
// src/config/schema.ts; test/unit/config-json-schema.test.ts fails while the file is stale).
import { writeFileSync } from 'node:fs';
import { configJsonSchemaText } from '../src/config/json-schema.ts';

const target = new URL('../config/pcoip-lb.schema.json', import.meta.url);
writeFileSync(target, configJsonSchemaText());
process.stdout.write(`wrote ${target.pathname}\n`);
