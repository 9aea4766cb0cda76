import { readFileSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext, type SecureVersion } from 'node:tls';
import { ErrorCodes, PlbError } from '../errors.ts';

/**
 * The terminating listener's certificates: PEM files loaded into secure contexts, one picked per
 * handshake by the client's SNI (exact SAN/CN, then a one-label wildcard, else the first pair).
 * `checkForChanges()` re-reads the files when their mtime or size changed and swaps the contexts
 * in one assignment: handshakes already done keep their context, new ones get the new one, so no
 * connection is dropped. A half-written or broken file keeps the previous certificates in use.
 */
export interface CertificateFiles {
  cert: string;
  key: string;
}

interface LoadedPair {
  context: SecureContext;
  cert: string;
  key: string;
  names: string[];
  notAfter: string;
}

export class CertificateStore {
  private readonly files: readonly CertificateFiles[];
  private readonly minVersion: SecureVersion;
  private pairs: LoadedPair[];
  private fingerprint: string;

  /** Loads every pair now; throws PLB_E_TLS_CERT naming the config key of the first bad one. */
  constructor(files: readonly CertificateFiles[], minVersion: SecureVersion) {
    this.files = files;
    this.minVersion = minVersion;
    this.fingerprint = this.statFingerprint();
    this.pairs = this.loadAll();
  }

  /** The context for a handshake's SNI (undefined SNI → the default pair). */
  contextFor(servername: string | undefined): SecureContext {
    const pairs = this.pairs;
    if (servername) {
      const name = servername.toLowerCase();
      const exact = pairs.find((p) => p.names.includes(name));
      if (exact) return exact.context;
      const dot = name.indexOf('.');
      if (dot > 0) {
        const wildcard = `*${name.slice(dot)}`;
        const match = pairs.find((p) => p.names.includes(wildcard));
        if (match) return match.context;
      }
    }
    return pairs[0]!.context;
  }

  /** PEM text of the first pair: the server's own context, used for clients that send no SNI. */
  get defaultPem(): { cert: string; key: string } {
    const { cert, key } = this.pairs[0]!;
    return { cert, key };
  }

  /** Names and expiry per pair, for the start-up log. */
  describe(): Array<{ cert: string; names: string[]; notAfter: string }> {
    return this.pairs.map((p, i) => ({ cert: this.files[i]!.cert, names: p.names, notAfter: p.notAfter }));
  }

  /**
   * Reloads when any file changed since the last load. Returns 'unchanged', 'reloaded', or the
   * error that kept the old certificates in place (the caller logs it; the next check retries).
   */
  checkForChanges(): { status: 'unchanged' | 'reloaded' } | { status: 'failed'; error: PlbError } {
    let now: string;
    try {
      now = this.statFingerprint();
    } catch (err) {
      return { status: 'failed', error: asCertError(err, 'certificate file vanished') };
    }
    if (now === this.fingerprint) return { status: 'unchanged' };
    try {
      this.pairs = this.loadAll();
      this.fingerprint = now;
      return { status: 'reloaded' };
    } catch (err) {
      // Keep the fingerprint old so the next check retries (the writer may not be done yet).
      return { status: 'failed', error: asCertError(err, 'reload failed') };
    }
  }

  private statFingerprint(): string {
    return this.files
      .flatMap((f) => [f.cert, f.key])
      .map((path) => {
        try {
          const st = statSync(path);
          return `${st.mtimeMs}:${st.size}:${st.ino}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  }

  private loadAll(): LoadedPair[] {
    return this.files.map((f, i) => loadPair(f, i, this.minVersion));
  }
}

/** Loads one pair as start does (read, parse, key match); exported for check-config (src/config/preflight.ts). */
export function loadPair(files: CertificateFiles, index: number, minVersion: SecureVersion): LoadedPair {
  const where = `listeners.broker.tls.certificates[${index}]`;
  const read = (key: 'cert' | 'key') => {
    try {
      return readFileSync(files[key], 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new PlbError(ErrorCodes.TLS_CERT, `${where}.${key}: cannot read ${files[key]}: ${code === 'ENOENT' ? 'no such file' : (code ?? String(err))}`, [], { cause: err });
    }
  };
  const cert = read('cert');
  const key = read('key');
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new PlbError(ErrorCodes.TLS_CERT, `${where}.cert: ${files.cert} is not a PEM certificate`, [], { cause: err });
  }
  let context: SecureContext;
  try {
    context = createSecureContext({ cert, key, minVersion });
  } catch (err) {
    const reason = (err as Error).message.includes('mismatch') ? 'the key does not belong to the certificate' : (err as Error).message;
    throw new PlbError(ErrorCodes.TLS_CERT, `${where}: ${files.cert} / ${files.key}: ${reason}`, [], { cause: err });
  }
  return { context, cert, key, names: certificateNames(x509), notAfter: x509.validTo };
}

/** DNS names of the SAN extension, else the subject CN, lower-cased. */
export function certificateNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  const dns = san
    ? san
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.startsWith('DNS:'))
        .map((s) => s.slice(4).toLowerCase())
    : [];
  if (dns.length > 0) return dns;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}

function asCertError(err: unknown, fallback: string): PlbError {
  return err instanceof PlbError ? err : new PlbError(ErrorCodes.TLS_CERT, `listeners.broker.tls.certificates: ${fallback}: ${String(err)}`, [], { cause: err });
}
