import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import { App } from '../../src/app.ts';
import { createLogger } from '../../src/logger.ts';
import { LogCapture } from '../helpers/proxy.ts';
import { configErrors } from '../helpers/config-errors.ts';
import { certDir, makeCert, type TestCert } from '../helpers/tls-fixtures.ts';
import { terminateConfig } from '../helpers/terminate-lab.ts';


const base = (tls: string, pcoipTcp = '') => `
listeners:
  broker:
    bind: "127.0.0.1:0"
    tls:
${tls
  .split('\n')
  .map((l) => `      ${l}`)
  .join('\n')}
${pcoipTcp}
connectors:
  - { id: conn-a, address: 127.0.1.1 }
`;

describe('listeners.broker.tls config', () => {
  it('defaults to passthrough and accepts a full terminate block', () => {
    expect(parseConfigText(base('mode: passthrough'), 't.yaml').listeners.broker!.tls).toMatchObject({ mode: 'passthrough', minVersion: 'TLSv1.2' });
    const cfg = parseConfigText(
      base('mode: terminate\ncertificates:\n  - { cert: /a.crt, key: /a.key }\nminVersion: TLSv1.3\nreloadInterval: 30s\nupstream: { ca: /ca.pem, servername: connector.example }'),
      't.yaml',
    );
    expect(cfg.listeners.broker!.tls).toMatchObject({ mode: 'terminate', minVersion: 'TLSv1.3', reloadInterval: 30_000, upstream: { ca: '/ca.pem', insecure: false } });
    expect(cfg.listeners.broker!.http).toEqual({ maxHeaderBytes: 16384, maxHeaderCount: 100, headerTimeout: 10_000, bodyTimeout: 10_000, responseTimeout: 30_000 });
    expect(cfg.listeners.broker!.lbCookie).toEqual({ enabled: false, name: 'PCOIPLB', maxAge: 3_600_000 });
  });

  it.each([
    ['terminate without certificates', 'mode: terminate\nupstream: { insecure: true }', 'listeners.broker.tls.certificates: mode: terminate needs at least one'],
    ['terminate without upstream', 'mode: terminate\ncertificates: [{ cert: /a, key: /b }]', 'listeners.broker.tls: mode: terminate re-encrypts to the Connectors: set upstream.ca'],
    ['upstream with neither ca nor insecure', 'mode: terminate\ncertificates: [{ cert: /a, key: /b }]\nupstream: { servername: x.example }', 'listeners.broker.tls.upstream: mode: terminate re-encrypts'],
    ['both ca and insecure', 'mode: terminate\ncertificates: [{ cert: /a, key: /b }]\nupstream: { ca: /c, insecure: true }', 'listeners.broker.tls.upstream.insecure: upstream.ca verifies'],
    ['certificates in passthrough', 'mode: passthrough\ncertificates: [{ cert: /a, key: /b }]', 'listeners.broker.tls.certificates: only used with mode: terminate'],
    ['TLS 1.1', 'mode: terminate\nminVersion: TLSv1.1', 'listeners.broker.tls.minVersion'],
  ])('rejects %s with the key path', (_name, tls, expected) => {
    expect(configErrors(base(tls)).join('\n')).toContain(expected);
  });

  it('rejects sniRouting unless the broker terminates TLS', () => {
    const errors = configErrors(base('mode: passthrough', '  pcoipTcp: { bind: "127.0.0.1:0", sniRouting: true }'));
    expect(errors.join('\n')).toContain('listeners.pcoipTcp.sniRouting: needs listeners.broker.tls.mode: terminate');
  });
});

describe('terminate mode start-up', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let cert: TestCert;
  let other: TestCert;

  beforeAll(async () => {
    ({ dir, cleanup } = await certDir());
    cert = await makeCert(dir, 'a', ['broker.example']);
    other = await makeCert(dir, 'b', ['other.example']);
  });

  afterAll(async () => {
    await cleanup();
  });

  const connectors = [{ id: 'conn-a', address: '127.0.1.1' }];

  it('fails with PLB_E_TLS_CERT naming the pair when a file is missing or the key does not match', async () => {
    const missing = new App(terminateConfig(connectors, { certificates: [{ cert: join(dir, 'nope.crt'), key: cert.keyPath }], upstream: { insecure: true } }), createLogger('silent'));
    await expect(missing.start()).rejects.toMatchObject({ code: 'PLB_E_TLS_CERT', message: expect.stringContaining('listeners.broker.tls.certificates[0].cert: cannot read') });
    const mismatched = new App(
      terminateConfig(connectors, {
        certificates: [
          { cert: cert.certPath, key: cert.keyPath },
          { cert: cert.certPath, key: other.keyPath },
        ],
        upstream: { insecure: true },
      }),
      createLogger('silent'),
    );
    await expect(mismatched.start()).rejects.toMatchObject({ code: 'PLB_E_TLS_CERT', message: expect.stringContaining('certificates[1]') });
    const notPem = join(dir, 'junk.crt');
    await writeFile(notPem, 'not a certificate');
    const junk = new App(terminateConfig(connectors, { certificates: [{ cert: notPem, key: cert.keyPath }], upstream: { insecure: true } }), createLogger('silent'));
    await expect(junk.start()).rejects.toMatchObject({ code: 'PLB_E_TLS_CERT', message: expect.stringContaining('is not a PEM certificate') });
  });

  it('warns at start-up when Connector certificates are not verified', async () => {
    const logs = new LogCapture();
    const app = new App(terminateConfig(connectors, { certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { insecure: true } }), createLogger('debug', logs));
    await app.start();
    try {
      const line = await logs.waitFor((l) => l.key === 'listeners.broker.tls.upstream.insecure');
      expect(line.level).toBe(40);
    } finally {
      await app.stop(0);
    }
  });
});
