import { isIP } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port` for IPv4 and names, `[v6]:port` for IPv6. A bare IPv6 address without
 * brackets is refused: `::1:443` is ambiguous.
 */
export function parseHostPort(text: string): HostPort | { error: string } {
  const trimmed = text.trim();
  let host: string;
  let portText: string;
  if (trimmed.startsWith('[')) {
    const close = trimmed.indexOf(']');
    if (close < 0 || trimmed[close + 1] !== ':') return { error: `expected "[ipv6]:port", got "${text}"` };
    host = trimmed.slice(1, close);
    portText = trimmed.slice(close + 2);
    if (isIP(host) !== 6) return { error: `"${host}" is not an IPv6 address` };
  } else {
    const colon = trimmed.lastIndexOf(':');
    if (colon < 0) return { error: `expected "host:port", got "${text}"` };
    host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
    if (host.includes(':')) return { error: `IPv6 addresses need brackets: "[${host}]:${portText}"` };
    if (!isValidHost(host)) return { error: `"${host}" is not an IPv4 address or host name` };
  }
  const port = parsePort(portText);
  if (port === undefined) return { error: `"${portText}" is not a port (0-65535)` };
  return { host, port };
}

export function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

const HOSTNAME_RE = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** An IP literal (v4 or v6, unbracketed) or a DNS name. */
export function isValidHost(host: string): boolean {
  if (isIP(host) !== 0) return true;
  // A dotted string of digits that is not a valid IPv4 address (999.1.1.1) is a typo, not a name.
  if (/^[\d.]+$/.test(host)) return false;
  return HOSTNAME_RE.test(host);
}

export function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Node reports IPv4 clients of a dual-stack socket as `::ffff:a.b.c.d`; affinity wants `a.b.c.d`. */
export function unmapIpv4(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * The `--admin` option of every command: `host:port` (as `admin.bind` is written) or an
 * `http://host:port` URL (as the admin server announces itself). Returns both forms.
 */
export function parseAdminAddress(text: string): { bind: HostPort; url: string } | { error: string } {
  const trimmed = text.trim();
  let hostPort = trimmed;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) {
    let url: URL;
    try {
      url = new URL(trimmed);
    } catch {
      return { error: `"${text}" is neither "host:port" nor a URL such as http://127.0.0.1:8404` };
    }
    if (url.protocol !== 'http:') return { error: `"${text}": the admin server speaks plain http:// (got ${url.protocol})` };
    if (url.pathname !== '/' || url.search || url.hash) return { error: `"${text}": give the server's address only, without a path` };
    hostPort = `${url.hostname}:${url.port || '80'}`;
  }
  const bind = parseHostPort(hostPort);
  if ('error' in bind) return { error: `"${text}": ${bind.error} (use host:port or http://host:port)` };
  return { bind, url: `http://${formatHostPort(bind.host, bind.port)}` };
}
