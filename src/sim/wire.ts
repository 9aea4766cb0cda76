/**
 * Wire formats shared by the Connector simulator (connector.ts) and the client simulator
 * (client.ts). Both sides import them from here so the two can never drift apart.
 * The formats are described for humans in ./README.md.
 */

/** Every broker response names the simulated Connector that produced it, so misrouting is visible. */
export const CONNECTOR_ID_HEADER = 'X-Sim-Connector';
export const COOKIE_NAME = 'JSESSIONID';
export const BROKER_PATH = '/pcoip-broker/xml';
export const HEALTH_PATH = '/health';
export const XML_CONTENT_TYPE = 'text/xml; charset=UTF-8';
/** The probe hello's product name, as real clients send it first (interstate_love_song). */
export const PROBE_PRODUCT_NAME = 'QueryBrokerClient';

// ---- 4172/TCP: the connect-tag line protocol (inside TLS) ----

export const TAG_REJECT_CODES = ['unknown-tag', 'expired-tag', 'reused-tag', 'bad-request'] as const;
export type TagRejectCode = (typeof TAG_REJECT_CODES)[number];

/** Longest line either side accepts; a longer one is garbage and ends the connection. */
export const MAX_LINE_BYTES = 512;

export type TagAnswer =
  /** spi: the client's SA (its datagrams carry it); replySpi: the Connector's own SA, on its datagrams (RFC 4301: an SA is one-way). */
  | { ok: true; connectorId: string; sessionId: string; spi: number; replySpi: number }
  | { ok: false; connectorId: string; code: TagRejectCode; text: string };

export function formatTagRequest(tag: string): string {
  return `CONNECT-TAG ${tag}\n`;
}

/** The tag from a client's request line, or undefined when the line is not one. */
export function parseTagRequest(line: string): string | undefined {
  // Realistic tags are ~100 URL-encoded characters (`SCS1%3A…%2B…%3D`): allow '%' and some room.
  const m = /^CONNECT-TAG ([A-Za-z0-9+/=_%.:-]{1,256})$/.exec(line);
  return m?.[1];
}

export function formatAdmit(connectorId: string, sessionId: string, spi: number, replySpi: number): string {
  return `OK ${connectorId} ${sessionId} ${spiHex(spi)} ${spiHex(replySpi)}\n`;
}

export function formatReject(connectorId: string, code: TagRejectCode, text: string): string {
  return `REJECT ${connectorId} ${code} ${text.replace(/\s+/g, ' ')}\n`;
}

export function parseTagAnswer(line: string): TagAnswer | undefined {
  const ok = /^OK (\S+) (\S+) ([0-9a-f]{8})(?: ([0-9a-f]{8}))?$/.exec(line);
  if (ok) return { ok: true, connectorId: ok[1]!, sessionId: ok[2]!, spi: Number.parseInt(ok[3]!, 16), replySpi: Number.parseInt(ok[4] ?? ok[3]!, 16) };
  const rej = /^REJECT (\S+) (\S+) ?(.*)$/.exec(line);
  if (rej && (TAG_REJECT_CODES as readonly string[]).includes(rej[2]!)) {
    return { ok: false, connectorId: rej[1]!, code: rej[2] as TagRejectCode, text: rej[3] ?? '' };
  }
  return undefined;
}

export function spiHex(spi: number): string {
  return spi.toString(16).padStart(8, '0');
}

// ---- 4172/UDP: PCoIP's packet layout ----
// bytes 0-3 transport header, 4-7 SPI, 8-11 sequence number (all big-endian), then payload.
// The simulated client's payload starts with its own sequence number (u32) and send time
// (f64, ms on the client's clock); the Connector echoes the whole datagram with bytes 8-11
// replaced by its own sequence number, so the client can tell upstream loss (gaps in the
// Connector's numbers vs. what it sent) from downstream loss and measure the round trip.

export const UDP_HEADER_BYTES = 12;
export const OFFSET_TRANSPORT = 0;
export const OFFSET_SPI = 4;
export const OFFSET_SEQ = 8;
export const OFFSET_CLIENT_SEQ = 12;
export const OFFSET_SENT_AT = 16;
/** Smallest datagram the client simulator sends: header + its own sequence number + send time. */
export const MIN_CLIENT_PACKET_BYTES = 24;
/** PCoIP's default session MTU; the simulator sends UDP payloads of this size by default. */
export const DEFAULT_PACKET_BYTES = 1200;
