/**
 * Experimental `listeners.broker.rewriteTarget`: rewrites the `<ip-address>` and `<port>` of an
 * allocate-resource-resp `<target>` so the client dials the proxy's public address on a port
 * dedicated to the issuing Connector. Pure string/byte work; the relay decides when to call it.
 *
 * Unverified (docs/pcoip-protocol.md): whether real clients honour a port other than 4172.
 */
export interface RewriteTo {
  address: string;
  port: number;
}

/**
 * The body with the first `<target>`'s ip-address and port replaced, or undefined when the body
 * has no such elements to rewrite (it is then forwarded unchanged).
 */
export function rewriteAllocationBody(body: string, to: RewriteTo): string | undefined {
  const open = body.indexOf('<target>');
  const close = body.indexOf('</target>', open);
  if (open < 0 || close < 0) return undefined;
  const target = body.slice(open, close);
  const ip = /<ip-address>[^<]*<\/ip-address>/;
  const port = /<port>[^<]*<\/port>/;
  if (!ip.test(target) || !port.test(target)) return undefined;
  const rewritten = target.replace(ip, `<ip-address>${escapeXml(to.address)}</ip-address>`).replace(port, `<port>${to.port}</port>`);
  return body.slice(0, open) + rewritten + body.slice(close);
}

/**
 * A complete response carrying `body` in place of the original one. The head's bytes stay as
 * they were except the Content-Length value; a chunked response is re-chunked (one data chunk and
 * the last chunk; trailers of the original are not carried over).
 */
export function reframeResponse(headBytes: Buffer, chunked: boolean, body: Buffer): Buffer {
  if (chunked) {
    const data = body.length > 0 ? [Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n')] : [];
    return Buffer.concat([headBytes, ...data, Buffer.from('0\r\n\r\n')]);
  }
  const text = headBytes.toString('latin1');
  // Every Content-Length line (repeats with the same value are legal) gets the new length.
  const replaced = text.replace(/(\r\ncontent-length:[ \t]*)[\d, \t]+?([ \t]*\r\n)/gi, `$1${body.length}$2`);
  return Buffer.concat([Buffer.from(replaced, 'latin1'), body]);
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
