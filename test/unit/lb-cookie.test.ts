import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';
import { LbCookie, MIN_KEY_CHARS, readLbCookieKeys } from '../../src/proxy/lb-cookie.ts';

const KEY_A = 'a'.repeat(MIN_KEY_CHARS);
const KEY_B = 'b'.repeat(MIN_KEY_CHARS);
const HOUR = 3_600_000;
const POOL = ['conn-a', 'conn-b', 'conn-c'];
const T0 = Date.UTC(2030, 0, 1);

const cookie = (keys: string[], maxAgeMs = HOUR) => new LbCookie({ name: 'PCOIPLB', maxAgeMs }, keys);

describe('LbCookie', () => {
  it('names the Connector opaquely and verifies its own values', () => {
    const lb = cookie([KEY_A]);
    const value = lb.issue('conn-b', T0);
    expect(value).toMatch(/^[A-Za-z0-9_-]{39}$/);
    expect(value).not.toContain('conn');
    expect(Buffer.from(value, 'base64url').toString('latin1')).not.toContain('conn-b');
    expect(lb.verify(value, POOL, T0 + 1000)).toEqual({ ok: true, connectorId: 'conn-b', refresh: false });
    // Different Connectors give unrelated values.
    expect(lb.issue('conn-a', T0).slice(7)).not.toBe(lb.issue('conn-b', T0).slice(7));
  });

  it('refuses a forged value: another key, a flipped bit, a bad shape, a future issue time', () => {
    const lb = cookie([KEY_A]);
    const value = lb.issue('conn-a', T0);
    expect(lb.verify(cookie([KEY_B]).issue('conn-a', T0), POOL, T0)).toEqual({ ok: false, reason: 'forged' });
    const raw = Buffer.from(value, 'base64url');
    for (let i = 0; i < raw.length; i++) {
      const bad = Buffer.from(raw);
      bad[i] = bad[i]! ^ 0x01;
      expect(lb.verify(bad.toString('base64url'), POOL, T0), `byte ${i}`).toEqual({ ok: false, reason: 'forged' });
    }
    for (const junk of ['', 'x', 'conn-a', `${value}A`, value.slice(1), '!'.repeat(39), 'a'.repeat(5000)]) expect(lb.verify(junk, POOL, T0)).toEqual({ ok: false, reason: 'forged' });
    expect(lb.verify(lb.issue('conn-a', T0 + 10 * 60_000), POOL, T0)).toEqual({ ok: false, reason: 'forged' });
  });

  it('treats a value older than maxAge, or naming a Connector that left the pool, as stale', () => {
    const lb = cookie([KEY_A]);
    expect(lb.verify(lb.issue('conn-a', T0), POOL, T0 + HOUR + 1000)).toEqual({ ok: false, reason: 'stale' });
    expect(lb.verify(lb.issue('conn-x', T0), POOL, T0)).toEqual({ ok: false, reason: 'stale' });
    expect(lb.verify(lb.issue('conn-a', T0), POOL, T0 + HOUR * 0.6)).toEqual({ ok: true, connectorId: 'conn-a', refresh: true });
  });

  it('rotates without breaking live logins: the first key signs, every key verifies', () => {
    const before = cookie([KEY_A]);
    const during = cookie([KEY_B, KEY_A]);
    const after = cookie([KEY_B]);
    const old = before.issue('conn-c', T0);
    expect(during.verify(old, POOL, T0 + 1000)).toEqual({ ok: true, connectorId: 'conn-c', refresh: true });
    const fresh = during.issue('conn-c', T0 + 1000);
    expect(after.verify(fresh, POOL, T0 + 2000)).toEqual({ ok: true, connectorId: 'conn-c', refresh: false });
    expect(after.verify(old, POOL, T0 + 2000)).toEqual({ ok: false, reason: 'forged' });
  });

  it('writes one Set-Cookie line', () => {
    expect(cookie([KEY_A], 90_000).setCookieLine('conn-a', T0)).toMatch(/^Set-Cookie: PCOIPLB=[A-Za-z0-9_-]{39}; Path=\/; Max-Age=90; Secure; HttpOnly\r\n$/);
  });
});

describe('readLbCookieKeys', () => {
  const file = (text: string) => () => text;
  it('reads one key per line from a file (comments and blank lines skipped), or a list from an environment variable', () => {
    expect(readLbCookieKeys({ keyFile: '/k' }, {}, file(`# rotated 2030-01-01\n${KEY_B}\n\n${KEY_A}\n`))).toEqual([KEY_B, KEY_A]);
    expect(readLbCookieKeys({ keyEnv: 'K' }, { K: `${KEY_A}, ${KEY_B}` })).toEqual([KEY_A, KEY_B]);
  });

  it.each([
    ['an unreadable file', { keyFile: '/nope' }, {}, 'listeners.broker.lbCookie.keyFile (/nope): cannot read the key file: ENOENT'],
    ['an empty file', { keyFile: '/k' }, {}, 'no key in it'],
    ['an unset variable', { keyEnv: 'NOPE' }, {}, 'listeners.broker.lbCookie.keyEnv (NOPE): the environment variable is not set'],
    ['a short key', { keyEnv: 'K' }, { K: `${KEY_A},short` }, 'key 2 has 5 characters; use at least 32'],
  ])('refuses %s with a clear PLB_E_LB_COOKIE_KEY', (_name, source, env, message) => {
    const read = (path: string) => {
      if (path === '/nope') throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      return '# nothing\n';
    };
    let err: unknown;
    try {
      readLbCookieKeys(source, env, read);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PlbError);
    expect((err as PlbError).code).toBe('PLB_E_LB_COOKIE_KEY');
    expect((err as PlbError).message).toContain(message);
  });
});

describe('listeners.broker.lbCookie and http timeouts config', () => {
  const yaml = (broker: string) => `
listeners:
  broker:
    bind: "127.0.0.1:0"
${broker
  .split('\n')
  .map((l) => `    ${l}`)
  .join('\n')}
connectors:
  - { id: conn-a, address: 127.0.1.1 }
`;
  const terminate = 'tls: { mode: terminate, certificates: [{ cert: /a, key: /b }], upstream: { insecure: true } }';
  const errors = (text: string): string => {
    try {
      parseConfigText(text, 'test.yaml');
      return '';
    } catch (err) {
      return (err as PlbError).details.join('\n');
    }
  };

  it('accepts lbCookie in terminate mode with a key source, and the body/response timeouts', () => {
    const cfg = parseConfigText(yaml(`${terminate}\nlbCookie: { enabled: true, name: AWSALB, keyEnv: PLB_KEYS, maxAge: 2h }\nhttp: { bodyTimeout: 5s, responseTimeout: 0s }`), 't.yaml');
    expect(cfg.listeners.broker!.lbCookie).toEqual({ enabled: true, name: 'AWSALB', keyEnv: 'PLB_KEYS', maxAge: 7_200_000 });
    expect(cfg.listeners.broker!.http).toMatchObject({ bodyTimeout: 5000, responseTimeout: 0 });
  });

  it.each([
    ['lbCookie in passthrough mode', 'lbCookie: { enabled: true, keyEnv: K }', 'listeners.broker.lbCookie.enabled: needs listeners.broker.tls.mode: terminate'],
    ['no key source', `${terminate}\nlbCookie: { enabled: true }`, 'listeners.broker.lbCookie.enabled: lbCookie needs its HMAC keys: set keyFile'],
    ['both key sources', `${terminate}\nlbCookie: { enabled: true, keyFile: /k, keyEnv: K }`, 'listeners.broker.lbCookie.keyEnv: set one of keyFile or keyEnv, not both'],
    ['the name JSESSIONID', `${terminate}\nlbCookie: { enabled: true, keyEnv: K, name: jsessionid }`, "listeners.broker.lbCookie.name: must differ from the Connectors' JSESSIONID"],
    ['a name with a space', `${terminate}\nlbCookie: { enabled: true, keyEnv: K, name: "a b" }`, 'listeners.broker.lbCookie.name: must be a cookie name'],
    ['a maxAge under a minute', `${terminate}\nlbCookie: { enabled: true, keyEnv: K, maxAge: 5s }`, 'listeners.broker.lbCookie.maxAge: must be between 1m and 168h; got "5s"'],
    ['a bad env name', `${terminate}\nlbCookie: { enabled: true, keyEnv: "1X" }`, 'listeners.broker.lbCookie.keyEnv: must be an environment variable name'],
    ['a bodyTimeout without unit', `${terminate}\nhttp: { bodyTimeout: 10 }`, 'listeners.broker.http.bodyTimeout'],
  ])('rejects %s with the key path', (_name, broker, expected) => {
    expect(errors(yaml(broker))).toContain(expected);
  });
});
