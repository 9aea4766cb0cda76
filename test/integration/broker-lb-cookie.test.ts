import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTerminateLab, type TerminateLab } from '../helpers/terminate-lab.ts';
import { brokerCall, openBrokerClient, setCookieValue } from '../helpers/broker-client.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { clientRequest } from '../helpers/broker-xml.ts';
import { certDir } from '../helpers/tls-fixtures.ts';
import { LbCookie } from '../../src/proxy/lb-cookie.ts';

/**
 * listeners.broker.lbCookie: pcoip-lb's own stickiness cookie (HP-template style), through real
 * TLS sockets. Client addresses 127.0.14.200-254 (this file only).
 */
const OLD_KEY = 'old-key-0123456789-0123456789-0123456789';
const NEW_KEY = 'new-key-0123456789-0123456789-0123456789';
const LB_LINE = /^Set-Cookie: PCOIPLB=([A-Za-z0-9_-]{39}); Path=\/; Max-Age=3600; Secure; HttpOnly\r\n/m;

describe('terminate mode: LB cookie stickiness', () => {
  let lab: TerminateLab;
  let keyFile: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const dir = await certDir();
    cleanup = dir.cleanup;
    keyFile = join(dir.dir, 'lb-cookie.keys');
    await writeFile(keyFile, `# pcoip-lb LB cookie keys: the first signs\n${OLD_KEY}\n`);
    lab = await startTerminateLab({ ids: ['conn-a', 'conn-b', 'conn-c'], tls: { reloadInterval: '100ms' }, broker: { lbCookie: { enabled: true, keyFile } } });
  });

  afterAll(async () => {
    await lab.close();
    await cleanup();
  });

  const port = () => lab.proxy.addresses.broker.port;
  const lbCookieOf = (raw: Buffer) => LB_LINE.exec(raw.toString('latin1'))?.[1];
  const events = (name: string) => lab.proxy.app.stats.brokerEvents.get(name) ?? 0;
  /** Which Connector received the last request (the fake brokers record what they got). */
  const requestsSeen = () => Object.fromEntries(lab.brokers.map((b) => [b.id, b.requests.length]));
  const whoGot = async (send: () => Promise<unknown>): Promise<string> => {
    const before = requestsSeen();
    await send();
    const got = lab.brokers.filter((b) => b.requests.length > before[b.id]!).map((b) => b.id);
    expect(got).toHaveLength(1);
    return got[0]!;
  };

  it('adds exactly one Set-Cookie header to the Connector\'s answer: the only byte that changes', async () => {
    const client = await openBrokerClient(port(), '127.0.14.200');
    const reply = await client.exchange(rawRequest('/pcoip-broker/xml', clientRequest('hello')));
    client.close();
    const home = setCookieValue(reply)!.split('-s')[0]!;
    const sent = lab.byId(home).written.slice(-2);
    const value = lbCookieOf(reply.raw);
    expect(value).toBeDefined();
    expect(reply.raw.toString('latin1').replace(LB_LINE, '')).toBe(Buffer.concat(sent).toString('latin1'));
    // The value is opaque: it does not name the Connector.
    expect(Buffer.from(value!, 'base64url').toString('latin1')).not.toContain(home);
    expect(reply.headers.get('set-cookie')).toHaveLength(2);
  });

  it('routes by the LB cookie ahead of JSESSIONID and client address, and does not re-issue a current one', async () => {
    const hello = await brokerCall(port(), '127.0.14.201', 'hello');
    const home = setCookieValue(hello)!.split('-s')[0]!;
    const lb = lbCookieOf(hello.raw)!;
    // A session cookie of another Connector, from addresses whose hash would pick others too.
    let foreign: string | undefined;
    for (let i = 0; i < 40 && !foreign; i++) {
      const c = setCookieValue(await brokerCall(port(), `127.0.14.${210 + i}`, 'hello'))!;
      if (!c.startsWith(home)) foreign = c;
    }
    for (let i = 0; i < 8; i++) {
      let reply: Awaited<ReturnType<typeof brokerCall>> | undefined;
      const got = await whoGot(async () => (reply = await brokerCall(port(), `127.0.14.${230 + i}`, 'get-resource-list', { Cookie: `JSESSIONID=${foreign}; PCOIPLB=${lb}` })));
      expect(got).toBe(home);
      expect(lbCookieOf(reply!.raw)).toBeUndefined();
    }
  });

  it('still routes by the LB cookie once pcoip-lb has forgotten the session (restart: nothing learned survives, the cookie does)', async () => {
    const hello = await brokerCall(port(), '127.0.14.202', 'hello');
    const home = setCookieValue(hello)!.split('-s')[0]!;
    lab.proxy.app.sessions.forgetConnector(home);
    const got = await whoGot(() => brokerCall(port(), '127.0.14.240', 'get-resource-list', { Cookie: `JSESSIONID=${setCookieValue(hello)}; PCOIPLB=${lbCookieOf(hello.raw)}` }));
    expect(got).toBe(home);
  });

  it('ignores and counts a forged or stale cookie, logs it (rate-limited), routes by the next rule and hands out a fresh one', async () => {
    const hello = await brokerCall(port(), '127.0.14.203', 'hello');
    const value = lbCookieOf(hello.raw)!;
    const raw = Buffer.from(value, 'base64url');
    raw[20] = raw[20]! ^ 0xff;
    const forged = raw.toString('base64url');
    const stale = new LbCookie({ name: 'PCOIPLB', maxAgeMs: 3_600_000 }, [OLD_KEY]).issue('conn-a', Date.now() - 2 * 3_600_000);
    const before = { forged: events('lb-cookie-forged'), stale: events('lb-cookie-stale') };
    for (const [cookie, address] of [
      [forged, '127.0.14.241'],
      [stale, '127.0.14.242'],
      ['not-even-base64!', '127.0.14.243'],
    ] as const) {
      const reply = await brokerCall(port(), address, 'hello', { Cookie: `PCOIPLB=${cookie}` });
      expect(reply.startLine).toBe('HTTP/1.1 200 OK');
      expect(lbCookieOf(reply.raw)).toBeDefined();
    }
    expect(events('lb-cookie-forged') - before.forged).toBe(2);
    expect(events('lb-cookie-stale') - before.stale).toBe(1);
    const line = await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_BROKER_ID_IGNORED' && l.client === '127.0.14.241' && l.event === 'lb-cookie-forged');
    expect(JSON.stringify(line)).not.toContain(forged);
    const metrics = await (await fetch(`${lab.proxy.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/pcoip_lb_broker_events_total\{event="lb-cookie-forged"\} [1-9]/);
  });

  it('rotates keys from the key file without a restart and without breaking a login in progress', async () => {
    const hello = await brokerCall(port(), '127.0.14.204', 'hello');
    const home = setCookieValue(hello)!.split('-s')[0]!;
    const old = lbCookieOf(hello.raw)!;
    await writeFile(keyFile, `${NEW_KEY}\n${OLD_KEY}\n`);
    await lab.proxy.logs.waitFor((l) => l.msg === 'LB cookie keys reloaded (the first signs, all verify)' && l.keys === 2);
    let reply: Awaited<ReturnType<typeof brokerCall>> | undefined;
    expect(await whoGot(async () => (reply = await brokerCall(port(), '127.0.14.244', 'bye', { Cookie: `PCOIPLB=${old}` })))).toBe(home);
    // Verified by the old key: re-signed with the new one at once.
    const renewed = lbCookieOf(reply!.raw)!;
    expect(new LbCookie({ name: 'PCOIPLB', maxAgeMs: 3_600_000 }, [NEW_KEY]).verify(renewed, [home], Date.now())).toEqual({ ok: true, connectorId: home, refresh: false });
    await writeFile(keyFile, `${NEW_KEY}\n`);
    await lab.proxy.logs.waitFor((l) => l.msg === 'LB cookie keys reloaded (the first signs, all verify)' && l.keys === 1);
    expect(await whoGot(() => brokerCall(port(), '127.0.14.245', 'bye', { Cookie: `PCOIPLB=${renewed}` }))).toBe(home);
    const forgedBefore = events('lb-cookie-forged');
    await brokerCall(port(), '127.0.14.246', 'bye', { Cookie: `PCOIPLB=${old}` });
    expect(events('lb-cookie-forged')).toBe(forgedBefore + 1);
    // A broken key file keeps the running keys.
    await writeFile(keyFile, 'short\n');
    await lab.proxy.logs.waitFor((l) => l.code === 'PLB_E_LB_COOKIE_KEY' && l.msg === 'LB cookie key reload failed; still using the previous keys');
    expect(await whoGot(() => brokerCall(port(), '127.0.14.247', 'bye', { Cookie: `PCOIPLB=${renewed}` }))).toBe(home);
  });
});

describe('terminate mode: LB cookie start-up errors', () => {
  it('refuses to start with a missing key variable, naming the key', async () => {
    await expect(startTerminateLab({ ids: ['conn-a'], broker: { lbCookie: { enabled: true, keyEnv: 'PLB_TEST_NO_SUCH_VARIABLE_14' } } })).rejects.toThrow(
      'listeners.broker.lbCookie.keyEnv (PLB_TEST_NO_SUCH_VARIABLE_14): the environment variable is not set',
    );
  });
});
