/**
 * The broker's XML messages (POST /pcoip-broker/xml), both directions, for the simulators.
 * Shapes follow the open-source broker and client cited in docs/pcoip-protocol.md: a `pcoip-client`
 * root with a version and exactly one child, answered by `<child>-resp`.
 *
 * The parser is deliberately minimal: it understands the flat subset these messages use
 * (elements with text, no CDATA, no namespaces) and refuses anything else. It is a test
 * partner's parser, not a general XML parser.
 */

export const PROTOCOL_VERSION = '2.1';
export const BROKER_REQUESTS = ['hello', 'authenticate', 'get-resource-list', 'allocate-resource', 'bye'] as const;
export type BrokerRequestName = (typeof BROKER_REQUESTS)[number];

const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>';

export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!);
}

/** Text of the first `<tag>…</tag>` inside `xml`, or undefined. */
export function xmlText(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}(?:\\s[^>]*)?>([^<]*)</${tag}>`).exec(xml);
  return m ? unescapeXml(m[1]!.trim()) : undefined;
}

export interface XmlMessage {
  root: string;
  version: string;
  /** The single child element's name: `hello`, `hello-resp`, … */
  name: string;
  /** The child element's inner XML. */
  body: string;
}

/** Splits `<root version="…"><name …>body</name></root>`; anything else is an error string. */
export function parseMessage(xml: string, expectedRoot: string): XmlMessage | { error: string } {
  const text = xml.replace(/^\uFEFF/, '').replace(/^\s*<\?xml[^>]*\?>/, '').trim();
  const root = new RegExp(`^<${expectedRoot}((?:\\s[^>]*)?)>([\\s\\S]*)</${expectedRoot}>$`).exec(text);
  if (!root) return { error: `root element must be <${expectedRoot}>` };
  const version = /\sversion="([^"]*)"/.exec(root[1]!)?.[1];
  if (!version) return { error: `<${expectedRoot}> needs a version attribute` };
  const inner = root[2]!.trim();
  const child = /^<([a-z][a-z-]*)((?:\s[^>]*)?)(\/>|>([\s\S]*)<\/\1>)$/.exec(inner);
  if (!child) return { error: `<${expectedRoot}> must have exactly one child element` };
  return { root: expectedRoot, version, name: child[1]!, body: child[4] ?? '' };
}

/** An element with escaped text, or with raw inner XML when `raw` is true. */
export function el(tag: string, content: string, raw = false, attrs = ''): string {
  return `<${tag}${attrs ? ` ${attrs}` : ''}>${raw ? content : escapeXml(content)}</${tag}>`;
}

export function wrapMessage(name: string, innerXml: string, attrs = ''): string {
  return `${XML_DECLARATION}<pcoip-client version="${PROTOCOL_VERSION}">${el(name, innerXml, true, attrs)}</pcoip-client>`;
}

export function resultXml(resultId: string, resultStr: string): string {
  return el('result', el('result-id', resultId) + el('result-str', resultStr), true);
}

// ---- requests, as the client simulator sends them ----

export const requests = {
  /** `productName` QueryBrokerClient makes it the probe hello real clients send first. */
  hello: (hostname: string, productName = 'pcoip-lb client simulator') =>
    wrapMessage('hello', el('client-info', el('product-name', productName) + el('product-version', '1.0') + el('hostname', hostname), true)),
  authenticate: (username: string, password: string, domain: string) =>
    wrapMessage('authenticate', el('username', username) + el('password', password) + el('domain', domain), 'method="password"'),
  getResourceList: () => wrapMessage('get-resource-list', ''),
  allocateResource: (resourceId: string) => wrapMessage('allocate-resource', el('resource-id', resourceId) + el('protocol', 'PCOIP')),
  bye: () => wrapMessage('bye', ''),
};

// ---- what the client needs from responses ----

export interface AllocateTarget {
  ipAddress: string;
  hostname: string;
  sni: string;
  port: number;
  sessionId: string;
  connectTag: string;
}

export interface BrokerAnswer {
  name: string;
  resultId: string | undefined;
  resultStr: string | undefined;
  /** First resource id of a get-resource-list-resp. */
  resourceId: string | undefined;
  target: AllocateTarget | undefined;
}

export function parseBrokerAnswer(xml: string): BrokerAnswer | { error: string } {
  const msg = parseMessage(xml, 'pcoip-client');
  if ('error' in msg) return msg;
  const answer: BrokerAnswer = {
    name: msg.name,
    resultId: xmlText(msg.body, 'result-id'),
    resultStr: xmlText(msg.body, 'result-str'),
    resourceId: xmlText(msg.body, 'resource-id'),
    target: undefined,
  };
  const target = /<target>([\s\S]*)<\/target>/.exec(msg.body)?.[1];
  if (target !== undefined) {
    const field = (tag: string) => xmlText(target, tag) ?? '';
    answer.target = {
      ipAddress: field('ip-address'),
      hostname: field('hostname'),
      sni: field('sni'),
      port: Number(field('port')),
      sessionId: field('session-id'),
      connectTag: field('connect-tag'),
    };
  }
  return answer;
}
