import { parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';

/** The config errors (one line each) of a YAML text, [] when it is valid. */
export function configErrors(yaml: string): string[] {
  try {
    parseConfigText(yaml, 'test.yaml');
  } catch (err) {
    if (err instanceof PlbError) return [...err.details];
    throw err;
  }
  return [];
}
