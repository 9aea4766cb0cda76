import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { bearerMatches, isLoopbackHost, resolveAdminToken } from '../../src/admin/token.ts';
import { PlbError } from '../../src/errors.ts';

const adminOf = (admin: Record<string, unknown>) =>
  configSchema.parse({ listeners: { pcoipUdp: { bind: '127.0.0.1:0' } }, connectors: [{ id: 'a', address: '127.0.1.1' }], admin }).admin;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof PlbError ? `${err.code}: ${err.message}` : String(err);
  }
  return 'no error';
}

describe('admin token', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.9.8.7', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['localhost', true],
    ['0.0.0.0', false],
    ['::', false],
    ['192.0.2.5', false],
    ['admin.example', false],
  ])('%s is loopback: %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });

  it('is optional on a loopback bind', () => {
    expect(resolveAdminToken(adminOf({ bind: '127.0.0.1:8404' }))).toBeUndefined();
  });

  it('is required on a non-loopback bind, with an error naming the key path', () => {
    // The config schema refuses this too (test/unit/config-checks.test.ts); the server checks again.
    const message = codeOf(() => resolveAdminToken({ ...adminOf({ bind: '127.0.0.1:8404' }), bind: { host: '0.0.0.0', port: 8404 } }));
    expect(message).toMatch(/^PLB_E_ADMIN_TOKEN_REQUIRED: admin\.bind is 0\.0\.0\.0:8404, which is not a loopback address: set admin\.token\.file or admin\.token\.env/);
  });

  it('is not required when the admin server is disabled', () => {
    expect(resolveAdminToken(adminOf({ bind: '0.0.0.0:8404', enabled: false }))).toBeUndefined();
  });

  it('reads from a file (trimmed) or an environment variable', () => {
    const dir = mkdtempSync(join(tmpdir(), 'plb-token-'));
    writeFileSync(join(dir, 'token'), '  0123456789abcdef-file\n');
    expect(resolveAdminToken(adminOf({ bind: '0.0.0.0:1', token: { file: join(dir, 'token') } }))).toBe('0123456789abcdef-file');
    expect(resolveAdminToken(adminOf({ bind: '0.0.0.0:1', token: { env: 'PLB_T' } }), { PLB_T: '0123456789abcdef-env' })).toBe('0123456789abcdef-env');
  });

  it('refuses a missing, empty or short token with PLB_E_ADMIN_TOKEN_READ naming the key', () => {
    expect(codeOf(() => resolveAdminToken(adminOf({ token: { env: 'PLB_T' } }), {}))).toBe('PLB_E_ADMIN_TOKEN_READ: admin.token.env (PLB_T): no token there (empty or unset)');
    expect(codeOf(() => resolveAdminToken(adminOf({ token: { env: 'PLB_T' } }), { PLB_T: 'short' }))).toMatch(/^PLB_E_ADMIN_TOKEN_READ: admin\.token\.env \(PLB_T\): the token is 5 characters/);
    expect(codeOf(() => resolveAdminToken(adminOf({ token: { file: '/nonexistent/plb-token' } })))).toBe('PLB_E_ADMIN_TOKEN_READ: admin.token.file (/nonexistent/plb-token): cannot read: ENOENT');
  });

  it('config refuses both or neither of file and env', () => {
    expect(() => adminOf({ token: { file: 'a', env: 'B' } })).toThrow(/set exactly one of file or env/);
    expect(() => adminOf({ token: {} })).toThrow(/set exactly one of file or env/);
  });

  it('matches only the exact bearer token', () => {
    const token = '0123456789abcdef';
    expect(bearerMatches(`Bearer ${token}`, token)).toBe(true);
    expect(bearerMatches(`bearer ${token}`, token)).toBe(true);
    expect(bearerMatches(`Bearer ${token}x`, token)).toBe(false);
    expect(bearerMatches(token, token)).toBe(false);
    expect(bearerMatches(undefined, token)).toBe(false);
  });
});
