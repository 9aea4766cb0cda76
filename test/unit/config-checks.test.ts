import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { parseDocument } from 'yaml';
import { checkConfigText, parseConfigText } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { PlbError } from '../../src/errors.ts';
import { certDir, makeCert } from '../helpers/tls-fixtures.ts';

/** The error lines of a rejected config (schema only, or with the preflight checks). */
function errorsOf(text: string, preflight = false, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    if (preflight) checkConfigText(text, 'c.yaml', { env });
    else parseConfigText(text, 'c.yaml');
  } catch (err) {
    if (err instanceof PlbError) return [...err.details];
    throw err;
  }
  throw new Error(`config was accepted:\n${text}`);
}

const BASE = `listeners:
  broker: { bind: "127.0.0.1:8443" }
  pcoipTcp: { bind: "127.0.0.1:4172" }
  pcoipUdp: { bind: "127.0.0.1:4172" }
connectors:
  - { id: a, address: 192.0.2.1 }
  - { id: b, address: 192.0.2.2 }
`;

/** BASE with `path` set to `value` (YAML-edited, so every line number stays meaningful). */
function withValue(path: (string | number)[], value: unknown, base = BASE): string {
  const doc = parseDocument(base);
  doc.setIn(path, doc.createNode(value));
  return doc.toString();
}

describe('config: every duration and number has a sane range', () => {
  it.each([
    [['health', 'interval'], '0s', /health\.interval: must be between 100ms and 24h; got "0s"/],
    [['health', 'interval'], '50ms', /health\.interval: must be between 100ms/],
    [['health', 'timeout'], '0s', /health\.timeout: must be between 10ms and 1h/],
    [['health', 'passive', 'window'], '0s', /health\.passive\.window: must be between 100ms/],
    [['listeners', 'broker', 'connectTimeout'], '0s', /listeners\.broker\.connectTimeout: must be between 100ms and 5m; got "0s"/],
    [['listeners', 'broker', 'connectTimeout'], '1h', /connectTimeout: must be between 100ms and 5m; got "1h"/],
    [['listeners', 'broker', 'idleTimeout'], '5ms', /listeners\.broker\.idleTimeout: must be between 100ms and 720h, or 0s \(never\); got "5ms"/],
    [['listeners', 'pcoipUdp', 'idleTimeout'], '10ms', /listeners\.pcoipUdp\.idleTimeout: must be between 100ms and 720h, or 0s \(never\)/],
    [['listeners', 'pcoipTcp', 'firstByteTimeout'], '1ms', /firstByteTimeout: must be between 100ms and 24h, or 0s \(off\)/],
    [['listeners', 'broker', 'http', 'headerTimeout'], '0s', /headerTimeout: must be between 100ms and 10m/],
    [['listeners', 'broker', 'tls', 'reloadInterval'], '0s', /reloadInterval: must be between 100ms and 24h/],
    [['affinity', 'ttl'], '0s', /affinity\.ttl: must be between 1s and 720h/],
    [['shutdown', 'grace'], '2h', /shutdown\.grace: must be between 0ms and 1h/],
    [['listeners', 'broker', 'maxConnections'], 0, /maxConnections: must be at least 1; got 0/],
    [['listeners', 'broker', 'maxConnections'], 5_000_000, /maxConnections: must be at most 1000000; got 5000000/],
    [['listeners', 'pcoipTcp', 'maxConnectionsPerClient'], 2_000_000, /maxConnectionsPerClient: must be at most 1000000/],
    [['listeners', 'pcoipUdp', 'maxFlows'], 1e9, /maxFlows: must be at most 10000000/],
    [['listeners', 'pcoipUdp', 'maxFlowsPerClient'], 0, /maxFlowsPerClient: must be at least 1/],
  ])('%j: %j is refused', (path, value, pattern) => {
    const details = errorsOf(withValue(path, value));
    expect(details.some((d) => pattern.test(d)), details.join('\n')).toBe(true);
  });

  it('health.timeout may not exceed health.interval (equal is allowed, as HAProxy defaults it)', () => {
    const details = errorsOf(withValue(['health'], { interval: '2s', timeout: '5s' }));
    expect(details).toEqual([expect.stringMatching(/^c\.yaml:\d+:\d+ health\.timeout: must not be longer than health\.interval \(2s\); got 5s$/)]);
    expect(parseConfigText(withValue(['health'], { interval: '2s', timeout: '2s' }), 'c.yaml').health).toMatchObject({ interval: 2000, timeout: 2000 });
    // Unset, the timeout is 2s, or the interval when that is shorter: `interval: 1s` alone is valid.
    expect(parseConfigText(BASE, 'c.yaml').health).toMatchObject({ interval: 5000, timeout: 2000 });
    expect(parseConfigText(withValue(['health'], { interval: '1s' }), 'c.yaml').health).toMatchObject({ interval: 1000, timeout: 1000 });
  });

  it('0s is "never" on every idle timeout (TCP and UDP) and "off" for firstByteTimeout', () => {
    let text = BASE;
    for (const l of ['broker', 'pcoipTcp', 'pcoipUdp']) text = withValue(['listeners', l, 'idleTimeout'], '0s', text);
    text = withValue(['listeners', 'pcoipTcp', 'firstByteTimeout'], '0s', text);
    const cfg = parseConfigText(text, 'c.yaml');
    expect([cfg.listeners.broker!.idleTimeout, cfg.listeners.pcoipTcp!.idleTimeout, cfg.listeners.pcoipUdp!.idleTimeout, cfg.listeners.pcoipTcp!.firstByteTimeout]).toEqual([0, 0, 0, 0]);
  });

  it('workers: a number out of range names "auto" too', () => {
    for (const value of [0, 65, 1.5, 'many']) {
      expect(errorsOf(withValue(['workers'], value))).toEqual([expect.stringMatching(/workers: must be "auto" or a whole number from 1 to 64$/)]);
    }
  });
});

describe('config: no raw zod messages', () => {
  // Every key of the schema (from its JSON Schema), each given values of the wrong type and out
  // of range; whatever is wrong, the message must not be zod's default wording.
  const ZOD_DEFAULTS = /Invalid input|Too (small|big)|Invalid option|expected \w+, received|Invalid (string|element|key|union)|Unrecognized key/;
  const leaves: string[][] = [];
  const walk = (schema: Record<string, unknown>, path: string[]) => {
    const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
    const items = schema.items as Record<string, unknown> | undefined;
    if (props) for (const [key, sub] of Object.entries(props)) walk(sub, [...path, key]);
    else if (items && items.properties) walk(items, [...path, '0']);
    else leaves.push(path);
  };
  walk(z.toJSONSchema(configSchema, { io: 'input' }) as Record<string, unknown>, []);

  it('covers the whole schema', () => {
    expect(leaves.length).toBeGreaterThan(60);
  });

  it('every key answers wrong types and out-of-range values in its own words', () => {
    const offenders: string[] = [];
    for (const path of leaves) {
      for (const value of [{ x: 1 }, [1], 'nonsense', -5, 1e12, true, null]) {
        const keyPath = path.map((p) => (/^\d+$/.test(p) ? Number(p) : p));
        let details: string[] = [];
        try {
          parseConfigText(withValue(keyPath, value), 'c.yaml');
        } catch (err) {
          if (!(err instanceof PlbError)) throw err;
          details = [...err.details];
        }
        for (const d of details) if (ZOD_DEFAULTS.test(d)) offenders.push(`${path.join('.')} = ${JSON.stringify(value)}: ${d}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});

describe('config: errors in line order, cross-key checks with file:line', () => {
  it('lists errors by line, the non-loopback admin among them', () => {
    const text = `admin: { bind: "0.0.0.0:8404" }
listeners:
  pcoipUdp: { bind: "127.0.0.1:4172", idleTimeout: 1 }
connectors:
  - { id: a, address: 192.0.2.1, weight: 0 }
balance: { algorithm: least }
`;
    expect(errorsOf(text)).toEqual([
      expect.stringMatching(/^c\.yaml:1:10 admin\.bind: 0\.0\.0\.0:8404 is not a loopback address: set admin\.token\.file or admin\.token\.env/),
      expect.stringMatching(/^c\.yaml:3:39 listeners\.pcoipUdp\.idleTimeout: /),
      expect.stringMatching(/^c\.yaml:5:34 connectors\[0\]\.weight: must be at least 1; got 0$/),
      expect.stringMatching(/^c\.yaml:6:12 balance\.algorithm: must be one of "maglev", "rendezvous"; got "least"$/),
    ]);
  });

  it('refuses two entries for one Connector (same address and broker or pcoip port)', () => {
    const same = errorsOf(`${BASE}  - { id: c, address: 192.0.2.1 }\n`);
    expect(same).toEqual(['c.yaml:8:14 connectors[2].address: same address and broker port (192.0.2.1:443) as connectors[0] ("a"): list each Connector once']);
    const samePcoip = errorsOf(`${BASE}  - { id: c, address: 192.0.2.2, ports: { broker: 8443 } }\n`);
    expect(samePcoip).toEqual([expect.stringContaining('connectors[2].address: same address and pcoip port (192.0.2.2:4172) as connectors[1] ("b")')]);
    // One address, other ports: two Connectors behind one NAT address.
    expect(parseConfigText(`${BASE}  - { id: c, address: 192.0.2.1, ports: { broker: 8443, pcoip: 4173 } }\n`, 'c.yaml').connectors).toHaveLength(3);
  });

  it.each([
    ['admin.bind on the broker listener', '127.0.0.1:8443', /^c\.yaml:\d+:\d+ admin\.bind: same TCP address as listeners\.broker\.bind \(127\.0\.0\.1:8443\)$/],
    ['admin.bind on the 4172/TCP listener', '127.0.0.1:4172', /admin\.bind: same TCP address as listeners\.pcoipTcp\.bind/],
  ])('refuses %s', (_name, bind, pattern) => {
    expect(errorsOf(withValue(['admin', 'bind'], bind))).toEqual([expect.stringMatching(pattern)]);
  });

  it('refuses a wildcard bind overlapping another TCP listener, but not the UDP one or port 0', () => {
    const overlap = errorsOf(withValue(['listeners', 'pcoipTcp', 'bind'], '0.0.0.0:8443'));
    expect(overlap).toEqual([expect.stringMatching(/listeners\.pcoipTcp\.bind: overlaps the TCP address of listeners\.broker\.bind \(127\.0\.0\.1:8443\)/)]);
    expect(errorsOf(withValue(['listeners', 'pcoipTcp', 'bind'], '[::]:8443'))).toHaveLength(1);
    // 4172/TCP and 4172/UDP share the number by design; port 0 picks a free port for each.
    expect(parseConfigText(BASE, 'c.yaml').listeners.pcoipUdp!.bind.port).toBe(4172);
    let zero = withValue(['listeners', 'broker', 'bind'], '127.0.0.1:0');
    zero = withValue(['admin', 'bind'], '127.0.0.1:0', zero);
    expect(parseConfigText(zero, 'c.yaml').admin.bind.port).toBe(0);
  });

  it('proves these binds really clash: Linux refuses a wildcard on a port a specific address listens on', async () => {
    const { createServer } = await import('node:net');
    const specific = createServer();
    await new Promise<void>((r) => specific.listen(0, '127.0.0.1', () => r()));
    const port = (specific.address() as { port: number }).port;
    const wildcard = createServer();
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      wildcard.once('error', resolve);
      wildcard.listen(port, '0.0.0.0', () => resolve(undefined));
    });
    wildcard.close();
    specific.close();
    expect(error?.code).toBe('EADDRINUSE');
  });
});

describe('config: the checks start makes before binding (check-config runs them too)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let cert: { certPath: string; keyPath: string };
  let junk: string;
  let tokenFile: string;

  beforeAll(async () => {
    ({ dir, cleanup } = await certDir());
    cert = await makeCert(dir, 'broker', ['broker.example']);
    junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, '0123456789abcdef0123\n');
  });
  afterAll(async () => {
    await cleanup?.();
  });

  const terminate = (tls: Record<string, unknown>) => withValue(['listeners', 'broker', 'tls'], { mode: 'terminate', ...tls });

  it('accepts readable, matching files', () => {
    const ok = checkConfigText(withValue(['workers'], 1, terminate({ certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { ca: cert.certPath } })), 'c.yaml', {});
    expect(ok.config.listeners.broker!.tls.mode).toBe('terminate');
  });

  it('reports every unreadable or broken file at its line', () => {
    let text = terminate({ certificates: [{ cert: join(dir, 'missing.crt'), key: cert.keyPath }, { cert: junk, key: cert.keyPath }], upstream: { ca: join(dir, 'missing-ca.pem') } });
    text = withValue(['health', 'tls', 'ca'], junk, text);
    text = withValue(['admin', 'token'], { file: join(dir, 'no-token') }, text);
    text = withValue(['workers'], 1, text);
    // The schema alone accepts it: these are start's checks.
    expect(parseConfigText(text, 'c.yaml').connectors).toHaveLength(2);
    const details = errorsOf(text, true);
    expect(details).toEqual([
      `c.yaml:10:17 listeners.broker.tls.certificates[0].cert: cannot read ${dir}/missing.crt: no such file`,
      `c.yaml:11:15 listeners.broker.tls.certificates[1]: ${junk} is not a PEM certificate`,
      `c.yaml:13:23 listeners.broker.tls.upstream.ca: cannot read ${dir}/missing-ca.pem: no such file`,
      `c.yaml:23:5 health.tls.ca: ${junk} holds no PEM certificate`,
      expect.stringMatching(/^c\.yaml:26:5 admin\.token\.file: \/.*\/no-token: cannot read: ENOENT$/),
    ]);
  });

  it('a key that does not belong to its certificate', async () => {
    const other = await makeCert(dir, 'other', ['other.example']);
    const details = errorsOf(withValue(['workers'], 1, terminate({ certificates: [{ cert: cert.certPath, key: other.keyPath }], upstream: { insecure: true } })), true);
    expect(details).toEqual([expect.stringMatching(/listeners\.broker\.tls\.certificates\[0\]: .*broker\.crt \/ .*other\.key: the key does not belong to the certificate$/)]);
  });

  it('admin.token.env: an error for start, a warning for check-config in a shell without the variable', () => {
    const text = withValue(['admin'], { bind: '0.0.0.0:8404', token: { env: 'PLB13_TOKEN' } });
    expect(errorsOf(text, true, {})).toEqual([expect.stringMatching(/^c\.yaml:\d+:\d+ admin\.token\.env: PLB13_TOKEN: no token there \(empty or unset\)$/)]);
    const inShell = checkConfigText(text, 'c.yaml', { env: {}, tokenEnvMissing: 'warning' });
    expect(inShell.warnings).toEqual([expect.stringMatching(/admin\.token\.env: PLB13_TOKEN: no token there \(empty or unset\) in this shell; start refuses unless its environment sets it \(PLB_W_ADMIN_TOKEN_ENV\)$/)]);
    expect(checkConfigText(text, 'c.yaml', { env: { PLB13_TOKEN: '0123456789abcdef' } }).warnings).toEqual([]);
    expect(checkConfigText(withValue(['admin', 'token'], { file: tokenFile }, text), 'c.yaml', {}).warnings).toEqual([]);
  });

  it('warns when health.checks has no broker check, and when the UDP idle timeout cuts PCoIP sessions', () => {
    expect(checkConfigText(BASE, 'c.yaml').warnings).toEqual([]);
    expect(checkConfigText(withValue(['health', 'checks'], ['pcoip']), 'c.yaml').warnings).toEqual([
      expect.stringMatching(/^c\.yaml:\d+:\d+ health\.checks: no broker check: a Connector that accepts TCP but whose broker hangs or fails stays up .*\(PLB_W_NO_BROKER_CHECK\)$/),
    ]);
    expect(checkConfigText(withValue(['health', 'checks'], []), 'c.yaml').warnings).toEqual([expect.stringContaining('health.checks: active health checks are off')]);
    expect(checkConfigText(withValue(['listeners', 'pcoipUdp', 'idleTimeout'], '30s'), 'c.yaml').warnings).toEqual([
      expect.stringMatching(/listeners\.pcoipUdp\.idleTimeout: 30s is below the 60 s a PCoIP session may be silent.*\(PLB_W_UDP_IDLE_SHORT\)$/),
    ]);
  });
});
