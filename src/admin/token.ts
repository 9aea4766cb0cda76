import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { AdminConfig } from '../config/schema.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import { readSecret } from '../config/referenced.ts';
import { formatHostPort } from '../util/address.ts';

/** Shorter bearer tokens are guessable over a network; 16 characters is the floor. */
const MIN_TOKEN_LENGTH = 16;

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/**
 * The admin bearer token from `admin.token.file` or `admin.token.env`, or undefined when none is
 * configured. Refuses a non-loopback bind without one: the admin API can drain the whole pool.
 */
export function resolveAdminToken(admin: AdminConfig, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const { token, bind } = admin;
  if (!token) {
    if (admin.enabled && !isLoopbackHost(bind.host)) {
      throw new PlbError(
        ErrorCodes.ADMIN_TOKEN_REQUIRED,
        `admin.bind is ${formatHostPort(bind.host, bind.port)}, which is not a loopback address: set admin.token.file or admin.token.env ` +
          `(a bearer token of at least ${MIN_TOKEN_LENGTH} characters), or bind the admin server to 127.0.0.1`,
      );
    }
    return undefined;
  }
  const { value, where } = readSecret(token, 'admin.token', 'token', ErrorCodes.ADMIN_TOKEN_READ, env);
  if (value.length < MIN_TOKEN_LENGTH) {
    throw new PlbError(ErrorCodes.ADMIN_TOKEN_READ, `${where}: the token is ${value.length} characters; use at least ${MIN_TOKEN_LENGTH}`);
  }
  return value;
}

/** Constant-time comparison of an `Authorization: Bearer …` header against the token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(match[1]!), digest(token));
}
