import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';
import { clientOptions, defaultInstanceId, describeStore, reconnectDelay, resolveStoreSettings } from '../../src/cluster-store/settings.ts';

const BASE = `
listeners:
  pcoipUdp: { bind: "127.0.0.1:4172" }
connectors:
  - { id: a, address: 192.0.2.1 }
`;

function errorsOf(text: string): readonly string[] {
  try {
    parseConfigText(text, 'pcoip-lb.yaml');
  } catch (err) {
    if (err instanceof PlbError) return err.details;
    throw err;
  }
  throw new Error('config was accepted');
}

describe('config: cluster', () => {
  it('is absent by default (one instance, no store)', () => {
    expect(parseConfigText(BASE, 'x.yaml').cluster).toBeUndefined();
  });

  it('fills defaults: key prefix, timeouts; instance id left to the host name', () => {
    const cfg = parseConfigText(`${BASE}cluster:\n  redis: { url: "redis://192.0.2.5:6379/2" }\n`, 'x.yaml');
    expect(cfg.cluster).toEqual({ keyPrefix: 'pcoip-lb', redis: { url: 'redis://192.0.2.5:6379/2' }, timeouts: { connect: 2000, lookup: 75, heartbeat: 1000 } });
    const settings = resolveStoreSettings(cfg.cluster!, {}, () => 'lb-host.example');
    expect(settings).toMatchObject({ instanceId: 'lb-host.example', keyPrefix: 'pcoip-lb', username: undefined, password: undefined, tls: undefined, lookupTimeoutMs: 75 });
  });

  it('reports every mistake with its key path', () => {
    const details = errorsOf(`${BASE}cluster:
  instanceId: "bad id!"
  keyPrefix: "pool:"
  redis:
    url: "redis://user:hunter2@192.0.2.5:6379/0?x=1"
    tls: { insecure: true }
    password: { file: /a, env: B }
    extra: 1
  timeouts: { lookup: 10s, connect: 5, heartbeat: 50ms }
`);
    const text = details.join('\n');
    expect(text).toMatch(/cluster\.instanceId: must be 1-253 characters/);
    expect(text).toMatch(/cluster\.keyPrefix: must not end with ":"/);
    expect(text).toMatch(/cluster\.redis\.url: must not carry a password/);
    expect(text).toMatch(/cluster\.redis\.url: query strings and fragments are not supported/);
    expect(text).toMatch(/cluster\.redis\.password: set exactly one of file or env/);
    expect(text).toMatch(/cluster\.redis\.extra: unknown key/);
    expect(text).toMatch(/cluster\.timeouts\.lookup: must be between 1ms and 5s/);
    expect(text).toMatch(/cluster\.timeouts\.connect: connect must be a duration string/);
    expect(text).toMatch(/cluster\.timeouts\.heartbeat: must be between 100ms and 1m/);
    // The password itself never appears in an error.
    expect(text).not.toContain('hunter2');
  });

  it('refuses other schemes, a missing host, a bad database and tls on redis://', () => {
    for (const [url, msg] of [
      ['http://192.0.2.5:6379', /scheme http: is not redis: or rediss:/],
      ['redis://', /names no host|is not a URL/],
      ['redis://192.0.2.5/db', /is not a database number/],
      ['not a url', /is not a URL/],
    ] as const) {
      expect(errorsOf(`${BASE}cluster: { redis: { url: "${url}" } }\n`).join('\n')).toMatch(msg);
    }
    expect(errorsOf(`${BASE}cluster: { redis: { url: "redis://h:1", tls: { insecure: true } } }\n`).join('\n')).toMatch(/cluster\.redis\.tls: only used with a rediss:\/\/ URL/);
    expect(errorsOf(`${BASE}cluster: { redis: { url: "rediss://h:1", tls: { ca: /x.pem, insecure: true } } }\n`).join('\n')).toMatch(/choose one/);
    expect(errorsOf(`${BASE}cluster: { redis: { url: "redis://bob@h:1", username: alice } }\n`).join('\n')).toMatch(/differs from the user in redis\.url/);
  });

  it('reads the password from a file or the environment; a missing one is a clear PLB_E_CLUSTER_CONFIG error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'i10-cfg-'));
    writeFileSync(join(dir, 'pw'), '  from-file-secret\n');
    const fromFile = parseConfigText(`${BASE}cluster: { redis: { url: "rediss://u@192.0.2.5:6380", password: { file: ${join(dir, 'pw')} } } }\n`, 'x.yaml');
    const s = resolveStoreSettings(fromFile.cluster!, {});
    expect(s.password).toBe('from-file-secret');
    expect(s.username).toBe('u');
    expect(s.tls).toEqual({ ca: undefined, servername: undefined, insecure: false });
    expect(describeStore(s)).toBe('rediss://u@192.0.2.5:6380');
    const opts = clientOptions(s);
    expect(opts.url).toBe('rediss://192.0.2.5:6380');
    expect(opts).toMatchObject({ username: 'u', password: 'from-file-secret', disableOfflineQueue: true, RESP: 2, socket: { tls: true, rejectUnauthorized: true } });

    const fromEnv = parseConfigText(`${BASE}cluster: { redis: { url: "redis://h:1", password: { env: I10_PW } } }\n`, 'x.yaml');
    expect(resolveStoreSettings(fromEnv.cluster!, { I10_PW: 'env-secret' }).password).toBe('env-secret');
    expect(() => resolveStoreSettings(fromEnv.cluster!, {})).toThrow(/cluster\.redis\.password\.env \(I10_PW\): no password there/);
    const missing = parseConfigText(`${BASE}cluster: { redis: { url: "redis://h:1", password: { file: ${join(dir, 'nope')} } } }\n`, 'x.yaml');
    expect(() => resolveStoreSettings(missing.cluster!, {})).toThrow(/cannot read: ENOENT/);
    try {
      resolveStoreSettings(missing.cluster!, {});
    } catch (err) {
      expect((err as PlbError).code).toBe('PLB_E_CLUSTER_CONFIG');
    }
  });

  it('derives an instance id from any host name and backs off reconnects from 100 ms to 5 s with jitter', () => {
    expect(defaultInstanceId('lb-1.example.org')).toBe('lb-1.example.org');
    expect(defaultInstanceId('_weird host')).toBe('weird-host');
    expect(defaultInstanceId('')).toBe('pcoip-lb');
    expect(reconnectDelay(0, () => 0.5)).toBe(100);
    expect(reconnectDelay(3, () => 0.5)).toBe(800);
    expect(reconnectDelay(50, () => 0.5)).toBe(5000);
    expect(reconnectDelay(50, () => 0)).toBe(4000);
    expect(reconnectDelay(50, () => 1)).toBe(6000);
  });
});
