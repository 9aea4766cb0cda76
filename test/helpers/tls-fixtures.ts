import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

const run = promisify(execFile);

export interface TestCert {
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
}

/** A temp directory for keys made at test time (never committed); `cleanup` removes it. */
export async function certDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'plb-tls-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A self-signed EC certificate made by openssl at test time. `names` become DNS SANs (the first
 * is also the CN); `ips` become IP SANs.
 */
export async function makeCert(dir: string, file: string, names: string[], ips: string[] = []): Promise<TestCert> {
  const certPath = join(dir, `${file}.crt`);
  const keyPath = join(dir, `${file}.key`);
  const san = [...names.map((n) => `DNS:${n}`), ...ips.map((ip) => `IP:${ip}`)].join(',');
  await run('/usr/bin/openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', `/CN=${names[0] ?? ips[0] ?? 'test'}`,
    '-addext', `subjectAltName=${san}`,
  ]);
  return { certPath, keyPath, cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
}

/** The exact bytes a Node TLS client sends first (its ClientHello), captured by a plain TCP server. */
export async function captureClientHello(servername: string | undefined): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const server = createServer((s) => {
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      s.destroy();
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  const client = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
  await new Promise<void>((resolve) => {
    client.on('error', () => resolve());
    client.on('close', () => resolve());
  });
  await new Promise<void>((r) => server.close(() => r()));
  return Buffer.concat(chunks);
}

/**
 * A hand-built ClientHello, for shapes Node's client does not produce: split over several
 * records, padded, or without SNI. Fields are minimal but valid.
 */
export function buildClientHello(options: { sni?: string; padding?: number; recordSize?: number; extraSni?: boolean } = {}): Buffer {
  const ext: Buffer[] = [];
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const addSni = (name: string) => {
    const host = Buffer.from(name, 'latin1');
    const entry = Buffer.concat([Buffer.from([0]), u16(host.length), host]);
    const list = Buffer.concat([u16(entry.length), entry]);
    ext.push(Buffer.concat([u16(0), u16(list.length), list]));
  };
  if (options.sni !== undefined) addSni(options.sni);
  if (options.extraSni) addSni('second.example');
  if (options.padding) ext.push(Buffer.concat([u16(21), u16(options.padding), Buffer.alloc(options.padding)]));
  const extensions = Buffer.concat(ext);
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    u16(2),
    Buffer.from([0x13, 0x01]),
    Buffer.from([1, 0]),
    u16(extensions.length),
    extensions,
  ]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const size = options.recordSize ?? 16384;
  const records: Buffer[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const part = hs.subarray(i, i + size);
    records.push(Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), u16(part.length), part]));
  }
  return Buffer.concat(records);
}
