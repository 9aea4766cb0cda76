import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigFile, parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';

function errorsOf(text: string): { code: string; details: readonly string[] } {
  try {
    parseConfigText(text, 'pcoip-lb.yaml');
  } catch (err) {
    if (err instanceof PlbError) return { code: err.code, details: err.details };
    throw err;
  }
  throw new Error('config was accepted');
}

const MINIMAL = `
listeners:
  pcoipUdp: { bind: "127.0.0.1:4172" }
connectors:
  - { id: a, address: 127.0.1.1 }
`;

describe('config', () => {
  it('fills documented defaults', () => {
    const cfg = parseConfigText(MINIMAL, 'x.yaml');
    expect(cfg.listeners.pcoipUdp).toEqual({ bind: { host: '127.0.0.1', port: 4172 }, idleTimeout: 120_000, maxFlows: 100_000, maxFlowsPerClient: 1000, recvBufferSize: 4_194_304, maxQueueDelay: 50, dataPlane: 'user', mediaQuality: true, probe: { enabled: false, candidates: 3, datagrams: 4, deadline: 500 } });
    expect(cfg.connectors[0]).toEqual({ id: 'a', address: '127.0.1.1', ports: { broker: 443, pcoip: 4172 }, weight: 1, state: 'active' });
    expect(cfg.balance).toEqual({ algorithm: 'maglev', tableSize: 65_537 });
    expect(cfg.affinity).toEqual({ ipv4Prefix: 32, ipv6Prefix: 64, ttl: 3_600_000, perSession: false });
    expect(cfg.shutdown.grace).toBe(10_000);
    expect(cfg.logging.level).toBe('info');
  });

  it('parses IPv6 binds, durations and names', () => {
    const cfg = parseConfigText(
      `listeners:
  broker: { bind: "[::1]:8443", idleTimeout: 500ms, connectTimeout: 1.5s }
  pcoipTcp: { bind: "localhost:4172", idleTimeout: 2h }
connectors:
  - { id: conn-v6, address: "2001:db8::11", ports: { broker: 8443 } }
  - { id: conn.name, address: connector-2.example.internal, weight: 3, state: drain }
affinity: { ttl: 1d, ipv6Prefix: 56 }
`,
      'x.yaml',
    );
    expect(cfg.listeners.broker).toMatchObject({ bind: { host: '::1', port: 8443 }, idleTimeout: 500, connectTimeout: 1500 });
    expect(cfg.listeners.pcoipTcp).toMatchObject({ bind: { host: 'localhost', port: 4172 }, idleTimeout: 7_200_000 });
    expect(cfg.connectors[0]!.ports).toEqual({ broker: 8443, pcoip: 4172 });
    expect(cfg.connectors[1]).toMatchObject({ weight: 3, state: 'drain' });
    expect(cfg.affinity).toMatchObject({ ttl: 86_400_000, ipv6Prefix: 56 });
  });

  it('lists every error with file, line and key path', () => {
    const { code, details } = errorsOf(`listeners:
  broker: { bind: "0.0.0.0:99999", tls: { mode: terminat } }
  pcoipUdp: { bind: "::1:4172", idleTimeout: 120 }
connectors:
  - { id: a, address: 192.0.2.1 }
  - { id: b, address: "999.1.1.1", weight: 0, colour: blue }
affinity: { ttl: 1 hour }
`);
    expect(code).toBe('PLB_E_CONFIG_INVALID');
    expect(details).toEqual([
      'pcoip-lb.yaml:2:13 listeners.broker.bind: "99999" is not a port (0-65535)',
      expect.stringMatching(/^pcoip-lb\.yaml:2:43 listeners\.broker\.tls\.mode: .*passthrough/),
      'pcoip-lb.yaml:3:15 listeners.pcoipUdp.bind: IPv6 addresses need brackets: "[::1]:4172"',
      expect.stringMatching(/^pcoip-lb\.yaml:3:33 listeners\.pcoipUdp\.idleTimeout: .*duration/),
      expect.stringMatching(/^pcoip-lb\.yaml:6:14 connectors\[1\]\.address: /),
      expect.stringMatching(/^pcoip-lb\.yaml:6:36 connectors\[1\]\.weight: /),
      'pcoip-lb.yaml:6:47 connectors[1].colour: unknown key',
      expect.stringMatching(/^pcoip-lb\.yaml:7:13 affinity\.ttl: "1 hour" is not a duration/),
    ]);
  });

  it.each([
    ['no listeners', 'listeners: {}\nconnectors: [{ id: a, address: 127.0.0.1 }]', /^pcoip-lb\.yaml:1:\d+ listeners: configure at least one/],
    ['no connectors', 'listeners: { pcoipTcp: { bind: "127.0.0.1:1" } }\nconnectors: []', /connectors: list at least one Connector/],
    ['duplicate ids', `${MINIMAL}  - { id: a, address: 127.0.1.2 }\n`, /^pcoip-lb\.yaml:6:\d+ connectors\[1\]\.id: duplicate id "a" \(also connectors\[0\]\)/],
    ['bad id', 'listeners: { pcoipTcp: { bind: "127.0.0.1:1" } }\nconnectors: [{ id: "a b", address: 127.0.0.1 }]', /connectors\[0\]\.id: must be/],
    ['missing address', 'listeners: { pcoipTcp: { bind: "127.0.0.1:1" } }\nconnectors: [{ id: a }]', /connectors\[0\]\.address: /],
    ['non-prime table', `${MINIMAL}balance: { tableSize: 1000 }`, /balance\.tableSize: 1000 is not prime/],
    ['unknown top-level key', `${MINIMAL}colour: blue`, /^pcoip-lb\.yaml:6:1 colour: unknown key/],
    ['same TCP bind twice', 'listeners: { broker: { bind: "0.0.0.0:443" }, pcoipTcp: { bind: "0.0.0.0:443" } }\nconnectors: [{ id: a, address: 127.0.0.1 }]', /listeners\.pcoipTcp\.bind: same TCP address as listeners\.broker\.bind/],
  ])('rejects %s', (_name, text, pattern) => {
    const { details } = errorsOf(text);
    expect(details.some((d) => pattern.test(d)), details.join('\n')).toBe(true);
  });

  it('reports YAML syntax errors with a position', () => {
    const { code, details } = errorsOf('listeners:\n  broker: { bind: "x:1"\nconnectors: [');
    expect(code).toBe('PLB_E_CONFIG_PARSE');
    expect(details[0]).toMatch(/^pcoip-lb\.yaml:\d+:\d+ /);
  });

  it('names the file when it cannot be read', () => {
    expect(() => loadConfigFile('/nonexistent/pcoip-lb.yaml')).toThrow(/\/nonexistent\/pcoip-lb\.yaml: cannot read config: no such file/);
  });

  it('accepts the annotated example and the file on disk path form', () => {
    expect(loadConfigFile(new URL('../../config/pcoip-lb.yaml', import.meta.url).pathname).connectors.length).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), 'plb-'));
    writeFileSync(join(dir, 'c.yaml'), MINIMAL);
    expect(loadConfigFile(join(dir, 'c.yaml')).listeners.pcoipUdp?.bind.port).toBe(4172);
  });
});
