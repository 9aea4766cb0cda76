import { generate } from 'selfsigned';

export interface SimCertificate {
  key: string;
  cert: string;
}

/**
 * A fresh self-signed certificate (EC P-256, SHA-256), as Connectors installed with
 * `--self-signed` present. Generated in memory at start, never written to disk or committed.
 *
 * Why `selfsigned` (pure JS on WebCrypto) rather than spawning `openssl`: it needs no binary on
 * PATH (slim images and some CI runners have none), no temp files holding private keys, no
 * parsing of another program's output, and it behaves the same on every machine. An EC key
 * takes ~20 ms, so every simulated Connector gets its own key, as real ones have.
 */
export async function generateCertificate(commonName: string, ips: readonly string[] = []): Promise<SimCertificate> {
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: commonName }, ...ips.map((ip) => ({ type: 7 as const, ip }))] },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}
