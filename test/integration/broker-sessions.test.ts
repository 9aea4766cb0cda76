import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, resultId, setCookieValue } from '../helpers/broker-client.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';

const USERS = 6;

describe('terminate mode: session-aware 443 affinity and learned allocations', () => {
  let lab: TerminateLab;

  beforeAll(async () => {
    lab = await startTerminateLab();
  });

  afterAll(async () => {
    await lab.close();
  });

  it('keeps a login on one Connector although every request comes from another address, and 4172 TCP+UDP follow', async () => {
    const { broker, pcoipTcp, pcoipUdp } = lab.proxy.addresses;
    const spread = new Set<string>();
    let addressHashingWouldHaveSplit = 0;
    for (let u = 0; u < USERS; u++) {
      // Each request of the login from its own source address (a web-proxy or NAT pool).
      const addr = (k: number) => `127.0.2.${100 + u * 5 + k}`;
      const hello = await brokerCall(broker.port, addr(0), 'hello');
      const cookie = setCookieValue(hello);
      expect(cookie, 'hello sets JSESSIONID').toBeDefined();
      const connectorId = cookie!.split('-s')[0]!;
      const headers = { Cookie: `JSESSIONID=${cookie}`, 'CLIENT-LOG-ID': `user-${u}` };
      expect(resultId(await brokerCall(broker.port, addr(1), 'authenticate', headers))).toBe('OK');
      expect(resultId(await brokerCall(broker.port, addr(2), 'get-resource-list', headers))).toBe('OK');
      const alloc = await brokerCall(broker.port, addr(3), 'allocate-resource', headers);
      expect(resultId(alloc)).toBe('ALLOC_SUCCESSFUL');
      // The media flows come from the address that asked for the allocation.
      const control = await tcpGreeting(pcoipTcp.port, addr(3));
      control.socket.end();
      const media = await udpRoundTrip(pcoipUdp.port, addr(3), Buffer.from(`media ${u}`));
      expect({ tcp: control.id, udp: media.toString().split('|')[0] }).toEqual({ tcp: connectorId, udp: connectorId });
      spread.add(connectorId);
      // Would plain address hashing have scattered this login? (Shows the test can fail.)
      const byAddress = new Set([0, 1, 2, 3].map((k) => lab.proxy.app.placer.pickNew(lab.proxy.app.placer.keyFor(addr(k)))));
      if (byAddress.size > 1) addressHashingWouldHaveSplit++;
    }
    expect(addressHashingWouldHaveSplit).toBeGreaterThan(0);
    expect(spread.size).toBeGreaterThan(1);
    // No broker ever saw a request it had not issued the session for.
    for (const b of lab.brokers) {
      for (const r of b.requests.filter((q) => !q.body.includes('<hello'))) expect(r.cookie?.startsWith(`${b.id}-s`), `${b.id} got ${r.cookie}`).toBe(true);
    }
    expect(lab.proxy.app.describeSessions().counts).toMatchObject({ cookies: USERS, allocations: USERS });
  });

  it('routes by CLIENT-LOG-ID when a request from a new address has no cookie yet', async () => {
    const { broker } = lab.proxy.addresses;
    const logId = 'log-id-routing-1';
    await brokerCall(broker.port, '127.0.2.200', 'hello', { 'CLIENT-LOG-ID': logId });
    const first = lab.brokers.find((b) => b.requests.some((r) => r.logId === logId))!;
    for (let k = 201; k <= 206; k++) await brokerCall(broker.port, `127.0.2.${k}`, 'bye', { 'CLIENT-LOG-ID': logId });
    const holders = lab.brokers.filter((b) => b.requests.some((r) => r.logId === logId)).map((b) => b.id);
    expect(holders).toEqual([first.id]);
    expect(first.requests.filter((r) => r.logId === logId)).toHaveLength(7);
  });

  it('falls back to the address for a cookie it never learned, and says so in the log', async () => {
    const { broker } = lab.proxy.addresses;
    const reply = await brokerCall(broker.port, '127.0.2.210', 'get-resource-list', { Cookie: 'JSESSIONID=forged-cookie-value' });
    expect(resultId(reply)).toBe('NOT_AUTHENTICATED'); // the Connector, not the proxy, refuses it
    const line = await lab.proxy.logs.waitFor((l) => l.cookie !== undefined && l.client === '127.0.2.210');
    expect(line).toMatchObject({ cookie: 'forg…(19)', why: 'unknown' });
    expect(JSON.stringify(lab.proxy.logs.lines)).not.toContain('forged-cookie-value');
  });

  it('never logs a connect tag, session id or cookie in full', async () => {
    const text = JSON.stringify(lab.proxy.logs.lines);
    for (const b of lab.brokers) {
      for (const a of b.allocations) {
        expect(text).not.toContain(a.connectTag);
        expect(text).not.toContain(a.sessionId);
      }
    }
    const learned = lab.proxy.logs.lines.filter((l) => l.msg === 'allocation learned: client pinned for 4172');
    expect(learned.length).toBe(USERS);
    expect(learned[0]).toMatchObject({ connectTag: expect.stringMatching(/^tag-…\(\d+\)$/) });
  });

  it('shows learned sessions in /status without secrets', async () => {
    const res = await fetch(`${lab.proxy.adminUrl}/status`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const status = JSON.parse(text) as { sessions: { counts: { allocations: number }; allocations: Array<{ sni: string; connector: string }> } };
    expect(status.sessions.counts.allocations).toBe(USERS);
    const allocated = lab.brokers.flatMap((b) => b.allocations.map((a) => ({ sni: a.sni, connector: b.id })));
    expect(status.sessions.allocations.map(({ sni, connector }) => ({ sni, connector })).sort((a, b) => a.sni.localeCompare(b.sni))).toEqual(
      allocated.sort((a, b) => a.sni.localeCompare(b.sni)),
    );
    for (const a of lab.brokers.flatMap((b) => b.allocations)) {
      expect(text).not.toContain(a.connectTag);
      expect(text).not.toContain(a.sessionId);
    }
  });
});
