/**
 * Broker XML bodies shaped as docs/pcoip-protocol.md describes them (root `<pcoip-client version="2.1">`, one
 * child; allocate-resource-resp with result and target), for the fake broker and parser tests.
 */
export interface AllocationFixture {
  ipAddress: string;
  hostname?: string;
  sni: string;
  port: number;
  sessionId: string;
  connectTag: string;
}

export function allocateResourceResp(t: AllocationFixture): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<pcoip-client version="2.1">\n' +
    '  <allocate-resource-resp>\n' +
    '    <result>\n      <result-id>ALLOC_SUCCESSFUL</result-id>\n      <result-str>The session &amp; tag are ready</result-str>\n    </result>\n' +
    '    <target>\n' +
    `      <ip-address>${t.ipAddress}</ip-address>\n` +
    `      <hostname>${t.hostname ?? 'ws-01.example'}</hostname>\n` +
    `      <sni>${t.sni}</sni>\n` +
    `      <port>${t.port}</port>\n` +
    `      <session-id>${t.sessionId}</session-id>\n` +
    `      <connect-tag>${t.connectTag}</connect-tag>\n` +
    '    </target>\n' +
    '    <resource-id>1</resource-id>\n    <protocol>PCOIP</protocol>\n' +
    '  </allocate-resource-resp>\n' +
    '</pcoip-client>\n'
  );
}

export function allocateFailedResp(resultId = 'ALLOC_FAILED_NO_RESOURCE'): string {
  return `<?xml version="1.0"?><pcoip-client version="2.1"><allocate-resource-resp><result><result-id>${resultId}</result-id></result></allocate-resource-resp></pcoip-client>`;
}

export function simpleResp(name: 'hello-resp' | 'authenticate-resp' | 'get-resource-list-resp' | 'bye-resp', resultId = 'OK'): string {
  return `<?xml version="1.0" encoding="UTF-8"?><pcoip-client version="2.1"><${name}><result><result-id>${resultId}</result-id></result></${name}></pcoip-client>`;
}

export function clientRequest(name: 'hello' | 'authenticate' | 'get-resource-list' | 'allocate-resource' | 'bye'): string {
  return `<?xml version="1.0" encoding="UTF-8"?><pcoip-client version="2.1"><${name}/></pcoip-client>`;
}
