import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting, udpRoundTrip } from '../helpers/clients.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLIENTS = 18;

async function post(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST' });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function connectorStatus(proxy: TestProxy, id: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`${proxy.adminUrl}/connectors/${id}`)).json()) as Record<string, unknown>;
}

describe('drain, maint and enable through the admin API and the CLI', () => {
  let fakes: FakeConnector[];
  let proxy: TestProxy;
  /** Where each client was placed, and the 4172/TCP session it keeps open. */
  const placed = new Map<string, { id: string; session: Socket }>();

  beforeAll(async () => {
    fakes = await Promise.all(['conn-a', 'conn-b', 'conn-c'].map((id, i) => startFakeConnector(id, `127.0.1.${51 + i}`)));
    proxy = await startTestProxy(
      testConfig(
        fakes.map((f) => f.config()),
        // Short UDP idle timeout so drained UDP flows end within the test.
        { listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '600ms' } } },
      ),
    );
    for (let i = 1; i <= CLIENTS; i++) {
      const client = `127.0.2.${i}`;
      const hello = await tcpGreeting(proxy.addresses.broker.port, client);
      hello.socket.end();
      const session = await tcpGreeting(proxy.addresses.pcoipTcp.port, client);
      expect(session.id).toBe(hello.id);
      placed.set(client, { id: hello.id, session: session.socket });
    }
  });

  afterAll(async () => {
    for (const { session } of placed.values()) session.destroy();
    await proxy.stop();
    await Promise.all(fakes.map((f) => f.close()));
  });

  const clientsOf = (id: string) => [...placed].filter(([, p]) => p.id === id).map(([client]) => client);

  it('drain keeps every pinned client’s new flows (443, 4172/TCP, 4172/UDP) on the Connector while new clients go elsewhere', async () => {
    const pinned = clientsOf('conn-a');
    expect(pinned.length).toBeGreaterThan(0);
    const answer = await post(`${proxy.adminUrl}/connectors/conn-a/drain`);
    expect(answer).toMatchObject({ status: 200, body: { id: 'conn-a', previous: 'active', state: 'drain', changed: true } });
    const line = await proxy.logs.waitFor((l) => l.connector === 'conn-a' && l.to === 'drain');
    expect(line).toMatchObject({ from: 'active', source: 'admin', remote: '127.0.0.1', msg: 'Connector conn-a state active → drain (admin request from 127.0.0.1)' });

    for (const client of pinned) {
      const reconnect = await tcpGreeting(proxy.addresses.broker.port, client);
      const control = await tcpGreeting(proxy.addresses.pcoipTcp.port, client);
      const media = await udpRoundTrip(proxy.addresses.pcoipUdp.port, client, Buffer.from('media'));
      expect([reconnect.id, control.id, media.toString().split('|')[0]], client).toEqual(['conn-a', 'conn-a', 'conn-a']);
      reconnect.socket.destroy();
      control.socket.destroy();
    }
    for (let i = 100; i < 100 + 24; i++) {
      const fresh = await tcpGreeting(proxy.addresses.broker.port, `127.0.2.${i}`);
      expect(fresh.id, `new client 127.0.2.${i}`).not.toBe('conn-a');
      fresh.socket.destroy();
    }
    const status = await connectorStatus(proxy, 'conn-a');
    expect(status).toMatchObject({ state: 'drain', health: 'up', takesNewClients: false, admitsPinnedClients: true, drained: false, pinnedClients: pinned.length });
  });

  it('`pcoip-lb drain --wait` shows progress and returns when the last flow ends', async () => {
    const child = spawn(process.execPath, ['src/cli.ts', 'drain', 'conn-a', '--wait', '--timeout', '20s', '--admin', proxy.adminUrl], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = once(child, 'exit') as Promise<[number | null]>;
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    // Wait until it reports the open flows (the pinned clients' 4172/TCP sessions), bounded in time.
    const deadline = Date.now() + 10_000;
    while (!/draining: \d+ flow\(s\) left/.test(stdout) && !exitedEarly && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(stdout).toContain('conn-a: already drain');
    expect(stdout).toMatch(/conn-a: draining: \d+ flow\(s\) left \(443: 0, 4172\/tcp: \d+, 4172\/udp: \d+\), \d+ pinned client\(s\)/);
    expect(exitedEarly).toBe(false);

    for (const client of clientsOf('conn-a')) placed.get(client)!.session.destroy();
    const [code] = await exited;
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout).toMatch(/conn-a: drained after [\d.]+ s/);
    expect(proxy.app.stats.activeFlows('conn-a')).toBe(0);
    expect(await connectorStatus(proxy, 'conn-a')).toMatchObject({ drained: true });
  });

  it('maint moves pinned clients elsewhere; enable takes new clients again', async () => {
    const pinnedToB = clientsOf('conn-b');
    expect((await post(`${proxy.adminUrl}/connectors/conn-b/maint`)).body).toMatchObject({ state: 'maint', changed: true });
    for (const client of pinnedToB) {
      const again = await tcpGreeting(proxy.addresses.broker.port, client);
      expect(again.id).toBe('conn-c');
      again.socket.destroy();
    }
    expect((await post(`${proxy.adminUrl}/connectors/conn-a/enable`)).body).toMatchObject({ previous: 'drain', state: 'active' });
    const landed = new Set<string>();
    for (let i = 150; i < 170; i++) {
      const fresh = await tcpGreeting(proxy.addresses.broker.port, `127.0.2.${i}`);
      landed.add(fresh.id);
      fresh.socket.destroy();
    }
    expect([...landed].sort()).toEqual(['conn-a', 'conn-c']);
  });

  it('`pcoip-lb drain` names an unknown Connector with its error code', async () => {
    const child = spawn(process.execPath, ['src/cli.ts', 'drain', 'conn-zz', '--admin', proxy.adminUrl], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(1);
    expect(stderr).toBe('error PLB_E_UNKNOWN_CONNECTOR: POST /connectors/conn-zz/drain: HTTP 404: no Connector with id "conn-zz"\n');
  });
});
