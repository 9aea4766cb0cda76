import type { Duplex } from 'node:stream';

/**
 * A deliberately small HTTP/1.1 message reader for tests, independent of the proxy's framer so
 * the tests do not check the framer against itself. It keeps every message's raw bytes so a test
 * can compare them byte for byte. Content-Length and chunked bodies only (what the tests send).
 */
export interface RawMessage {
  startLine: string;
  /** Lower-cased names → values (all values of repeated headers). */
  headers: Map<string, string[]>;
  body: Buffer;
  raw: Buffer;
}

export class RawReader {
  private buffer = Buffer.alloc(0);
  private ended = false;
  private waiter: (() => void) | undefined;

  constructor(stream: Duplex) {
    stream.on('data', (c: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, c]);
      this.waiter?.();
    });
    const end = () => {
      this.ended = true;
      this.waiter?.();
    };
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
  }

  /** Everything received and not yet consumed. */
  get rest(): Buffer {
    return this.buffer;
  }

  /** Resolves with the next complete message, or undefined when the stream ended first. */
  async next(timeoutMs = 5000): Promise<RawMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parseOne(this.buffer);
      if (parsed) {
        this.buffer = this.buffer.subarray(parsed.raw.length);
        return parsed;
      }
      if (this.ended) return undefined;
      if (Date.now() > deadline) throw new Error(`no complete HTTP message within ${timeoutMs} ms (have ${JSON.stringify(this.buffer.toString('latin1').slice(0, 200))})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Resolves once the stream has ended; returns whatever arrived unconsumed. */
  async untilEnd(timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('stream did not end in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => (clearTimeout(t), (this.waiter = undefined), resolve());
      });
    }
    return this.buffer;
  }
}

function parseOne(buf: Buffer): RawMessage | undefined {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return undefined;
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  let pos = headEnd + 4;
  const startLine = lines[0]!;
  const noBody = /^HTTP\/1\.1 (1\d\d|204|304)/.test(startLine);
  if (!noBody && headers.get('transfer-encoding')?.[0]?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const nl = buf.indexOf('\r\n', pos);
      if (nl < 0) return undefined;
      const size = parseInt(buf.subarray(pos, nl).toString('latin1').split(';')[0]!, 16);
      pos = nl + 2;
      if (size === 0) {
        // trailers, then an empty line
        for (;;) {
          const t = buf.indexOf('\r\n', pos);
          if (t < 0) return undefined;
          const empty = t === pos;
          pos = t + 2;
          if (empty) break;
        }
        break;
      }
      if (buf.length < pos + size + 2) return undefined;
      parts.push(buf.subarray(pos, pos + size));
      pos += size + 2;
    }
    return { startLine, headers, body: Buffer.concat(parts), raw: Buffer.from(buf.subarray(0, pos)) };
  }
  const length = noBody ? 0 : Number(headers.get('content-length')?.[0] ?? 0);
  if (buf.length < pos + length) return undefined;
  return { startLine, headers, body: Buffer.from(buf.subarray(pos, pos + length)), raw: Buffer.from(buf.subarray(0, pos + length)) };
}

/** A request as raw bytes with an exact Content-Length. */
export function rawRequest(path: string, body: string, headers: Record<string, string> = {}): Buffer {
  const head = [`POST ${path} HTTP/1.1`, 'Host: broker.example', 'Content-Type: text/xml; charset=UTF-8', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), `Content-Length: ${Buffer.byteLength(body)}`];
  return Buffer.from(`${head.join('\r\n')}\r\n\r\n${body}`);
}

/** Encodes a body as chunked with the given chunk sizes (the rest in one final chunk). */
export function chunked(body: string, sizes: number[], trailer = ''): string {
  const bytes = Buffer.from(body);
  const out: string[] = [];
  let pos = 0;
  for (const size of [...sizes, bytes.length]) {
    if (pos >= bytes.length) break;
    const part = bytes.subarray(pos, pos + size);
    out.push(`${part.length.toString(16)}\r\n${part.toString('latin1')}\r\n`);
    pos += part.length;
  }
  return `${out.join('')}0\r\n${trailer}\r\n`;
}
