import { readFileSync } from 'node:fs';
import { PlbError, type ErrorCode } from '../errors.ts';

/**
 * Reading what a config refers to by name, as start reads it: a secret (the admin token, the
 * cluster store password) from its file or environment variable, and a CA bundle. One reader
 * each, so every key fails the same way with the same wording, and preflight (check-config)
 * reports exactly what start would.
 */

/** `{ file }` or `{ env }`: the schema allows exactly one. */
export interface SecretSource {
  file?: string | undefined;
  env?: string | undefined;
}

/**
 * The secret, trimmed, and where it came from (`admin.token.file (/etc/…)`) for messages; never
 * the value. `key` is the config key (`admin.token`), `what` the secret's name in the messages.
 */
export function readSecret(source: SecretSource, key: string, what: string, code: ErrorCode, env: NodeJS.ProcessEnv): { value: string; where: string } {
  let value: string;
  let where: string;
  if (source.file !== undefined) {
    where = `${key}.file (${source.file})`;
    try {
      value = readFileSync(source.file, 'utf8').trim();
    } catch (err) {
      throw new PlbError(code, `${where}: cannot read: ${describeReadError(err)}`, [], { cause: err });
    }
  } else {
    where = `${key}.env (${source.env})`;
    value = (env[source.env!] ?? '').trim();
  }
  if (value === '') throw new PlbError(code, `${where}: no ${what} there (empty or unset)`);
  return { value, where };
}

/** A PEM CA bundle named by `key` (`health.tls.ca`); unreadable: a PlbError with `code`. */
export function readCaFile(file: string, key: string, code: ErrorCode): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new PlbError(code, `${key}: cannot read ${file}: ${describeReadError(err)}`, [], { cause: err });
  }
}

function describeReadError(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}
