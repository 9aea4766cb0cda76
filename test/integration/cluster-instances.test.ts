import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { SimConnector } from '../../src/sim/connector.ts';
import { establishSession, postBroker, presentTag, sessionCookie, type Endpoint, type UserPlan } from '../../src/sim/client.ts';
import { requests } from '../../src/sim/broker-xml.ts';
import { RedisServer } from '../helpers/redis-server.ts';
import { startFaultyConnector, type FaultyConnector } from '../helpers/faulty-connector.ts';
import { certDir, makeCert } from '../helpers/tls-fixtures.ts';
import { pcoipPacket } from '../helpers/sim-clients.ts';
import { OFFSET_SPI } from '../../src/sim/wire.ts';
import { hasMsg } from '../helpers/cli-process.ts';
import { eventually } from '../helpers/cluster-store.ts';
import {
  adminGet,
  adminPost,
  clientHashedAwayFrom,
  instanceConfig,
  metricsText,
  placementOf,
  startInstance,
  tcpGreetingVia,
  udpAnswer,
  udpFrom,
  type Instance,
  type InstanceSpec,
} from '../helpers/cluster-lab.ts';

/**
 * Two pcoip-lb instances (real `pcoip-lb start` processes, workers: auto, health checks on) on
 * their own loopback addresses, in front of the same Connectors, sharing one real redis-server:
 * the cluster behaves as one pool (docs/ha.md). Addresses: Connectors 127.0.10.x, instances
 * 127.0.12.x, clients 127.0.13.x.
 */
const A: InstanceSpec = { id: 'lb-a', host: '127.0.12.1' };
const B: InstanceSpec = { id: 'lb-b', host: '127.0.12.2' };
const clients = (from: number, n: number) => Array.from({ length: n }, (_, i) => `127.0.13.${from + i}`);

describe('two instances, one pool (passthrough, Connectors that refuse)', () => {
  const redis = new RedisServer();
  let connectors: FaultyConnector[] = [];
  let a: Instance;
  let b: Instance;

  beforeAll(async () => {
    await redis.start();
    connectors = await Promise.all(['conn-a', 'conn-b', 'conn-c'].map((id, i) => startFaultyConnector(id, `127.0.10.${i + 1}`)));
    // The stand-ins greet on TCP and have no HTTPS /health: the TCP check runs (every 5 s, fall 3),
    // so one refused connect does not take a Connector down.
    const cfg = (spec: InstanceSpec) => instanceConfig(spec, redis.url, connectors.map((c) => c.config()), { health: { checks: ['pcoip'], interval: '5s', fall: 3, rise: 2 } });
    [a, b] = await Promise.all([startInstance(A, cfg(A)), startInstance(B, cfg(B))]);
    // A Connector starts provisionally up and its first failed round takes it down: let every first
    // round pass before the test makes one refuse for a moment.
    for (const i of [a, b]) {
      await eventually(async () => (await adminGet<{ connectors: Array<{ lastCheck: unknown }> }>(i, '/status')).connectors.every((c) => c.lastCheck !== null), 15_000, 'first check rounds');
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.cli.cleanup(), b?.cli.cleanup()]);
    await Promise.all(connectors.map((c) => c.stop()));
    await redis.cleanup();
  });

  it('a client re-pinned on A (its Connector refused A) is routed to the same Connector by B', async () => {
    const client = '127.0.13.1';
    const hashed = (await placementOf(a, client)).connector!;
    expect((await placementOf(b, client)).connector).toBe(hashed); // the instances agree on the hash
    const refusing = connectors.find((c) => c.id === hashed)!;
    await refusing.stop();
    const first = await tcpGreetingVia(a.pcoipTcp, client);
    first.close();
    expect(first.id).not.toBe(hashed);
    await refusing.start();
    // Writes are asynchronous: the re-pin is in the store a few ms after A made it (worker → primary
    // → store). A flow reaching B inside that window is placed by hashing, and B adopts the stored
    // pin for the next one (see the replica tests); here B is asked once the store has it.
    await eventually(() => redis.cli('GET', `i10t:pin:${client}/32`).includes(first.id), 3000, 're-pin in the store');
    // B has never seen this client: it looks it up in the store and follows A's re-pin, though its
    // own hash (and the Connector's health) says `hashed`.
    const viaB = await tcpGreetingVia(b.pcoipTcp, client);
    viaB.close();
    expect(viaB.id).toBe(first.id);
    const udp = await udpFrom(client);
    try {
      const answer = await udpAnswer(udp, b.pcoipUdp, Buffer.from('media'));
      expect(answer.toString()).toBe(`${first.id}|media`);
    } finally {
      udp.close();
    }
    const connector = await adminGet<{ health: string }>(b, `/connectors/${hashed}`);
    expect(connector.health).toBe('up');
    expect(await placementOf(b, client)).toEqual({ pinned: true, connector: first.id });
  });
});

describe('two instances, one pool (terminating broker, simulated Connectors)', () => {
  const redis = new RedisServer();
  let sims: SimConnector[] = [];
  let a: Instance;
  let b: Instance;
  let cleanupCerts: () => Promise<void> = async () => undefined;
  let cfgB: Record<string, unknown>;

  beforeAll(async () => {
    await redis.start();
    const certs = await certDir();
    cleanupCerts = certs.cleanup;
    const cert = await makeCert(certs.dir, 'proxy', ['broker.example'], [A.host, B.host]);
    sims = await Promise.all(['conn-a', 'conn-b', 'conn-c'].map((id, i) => SimConnector.start({ id, host: `127.0.10.${i + 1}` })));
    const cfg = (spec: InstanceSpec) =>
      instanceConfig(
        spec,
        redis.url,
        sims.map((s) => s.connectorConfig()),
        { broker: { tls: { mode: 'terminate', certificates: [{ cert: cert.certPath, key: cert.keyPath }], upstream: { insecure: true } } } },
      );
    cfgB = cfg(B);
    [a, b] = await Promise.all([startInstance(A, cfg(A)), startInstance(B, cfgB)]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.cli.cleanup(), b?.cli.cleanup()]);
    await Promise.all(sims.map((s) => s.stop()));
    await redis.cleanup();
    await cleanupCerts();
  });

  it('a login whose 443 requests alternate between B and A (from different addresses) succeeds; its 4172 flows through B reach the allocating Connector', async () => {
    const hello = { address: '127.0.13.20', via: b };
    const home = (await placementOf(b, hello.address)).connector!;
    // Every other request comes from an address that hashes elsewhere (a web proxy's egress pool):
    // only the replicated cookie / CLIENT-LOG-ID / allocation pin can keep them on `home`.
    const elsewhere = async (via: Instance, from: number) => clientHashedAwayFrom(via, home, clients(from, 20));
    const steps: Array<{ name: string; xml: string; via: Instance; address: string }> = [
      { name: 'hello', xml: requests.hello('cluster-user'), ...hello },
      { name: 'authenticate', xml: requests.authenticate('cluster-user', 'secret', 'sim.invalid'), via: a, address: await elsewhere(a, 30) },
      { name: 'get-resource-list', xml: requests.getResourceList(), via: b, address: await elsewhere(b, 60) },
      { name: 'allocate-resource', xml: requests.allocateResource('1'), via: a, address: await elsewhere(a, 90) },
      { name: 'bye', xml: requests.bye(), via: b, address: await elsewhere(b, 120) },
    ];
    const logId = randomUUID();
    let cookie: string | undefined;
    let allocation;
    for (const step of steps) {
      const plan: UserPlan = { name: 'cluster-user', localAddress: step.address, requestTimeoutMs: 5000 };
      const reply = await postBroker(step.via.broker as Endpoint, plan, step.xml, logId, cookie);
      expect({ step: step.name, via: step.via.spec.id, connector: reply.connectorId, status: reply.status }).toEqual({ step: step.name, via: step.via.spec.id, connector: home, status: 200 });
      cookie ??= sessionCookie(reply.rawHeaders);
      if (step.name === 'allocate-resource') allocation = reply.answer.target;
    }
    expect(allocation).toBeDefined();
    // The allocating request came from steps[3].address through A: that address is pinned to home,
    // and B, which never saw it, sends its 4172/TCP and 4172/UDP there.
    const mediaFrom = steps[3]!.address;
    const plan: UserPlan = { name: 'cluster-user', localAddress: mediaFrom, requestTimeoutMs: 5000 };
    const { control, spi, replySpi } = await presentTag(b.pcoipTcp, plan, allocation!, home);
    const udp = await udpFrom(mediaFrom);
    try {
      const echo = await udpAnswer(udp, b.pcoipUdp, pcoipPacket(spi, 1));
      expect(echo.readUInt32BE(OFFSET_SPI)).toBe(replySpi);
    } finally {
      udp.close();
      control.destroy();
    }
  });

  it('drain on A: B stops placing new clients there within a second, and a restarted B still sees it', async () => {
    const target = sims[1]!.id;
    const hashedToTarget = async (via: Instance) => {
      for (const c of clients(150, 60)) if ((await placementOf(via, c)).connector === target && !(await placementOf(via, c)).pinned) return c;
      throw new Error('no client hashes to the target');
    };
    const candidate = await hashedToTarget(b);
    const sent = Date.now();
    await adminPost(a, `/connectors/${target}/drain`);
    const took = await eventually(async () => (await adminGet<{ state: string }>(b, `/connectors/${target}`)).state === 'drain', 2000, 'drain reached B', 10);
    expect(took).toBeLessThan(1000);
    console.info(`drain on A reached B after ${Date.now() - sent} ms`);
    // B places a client it would have hashed to the drained Connector somewhere else.
    const placed = await placementOf(b, candidate);
    expect(placed.connector).not.toBe(target);
    await b.cli.waitForLine(hasMsg(`Connector ${target} state active → drain (set on another instance)`), 3000);

    // Restart B: it starts with the cluster's operator state, before it accepts a client.
    await b.cli.cleanup();
    b = await startInstance(B, cfgB);
    const status = await adminGet<{ connectors: Array<{ id: string; state: string }>; cluster: { instances: Array<{ id: string }> } }>(b, '/status');
    expect(status.connectors.find((c) => c.id === target)!.state).toBe('drain');
    expect(status.cluster.instances.map((i) => i.id).sort()).toEqual(['lb-a', 'lb-b']);
    await adminPost(b, `/connectors/${target}/enable`);
    await eventually(async () => (await adminGet<{ state: string }>(a, `/connectors/${target}`)).state === 'active', 2000, 'enable reached A');
  }, 90_000);

  it('Redis killed mid-run: sessions keep working, one log line, the metric flips; restarted: it reconciles', async () => {
    const client = '127.0.13.200';
    const home = (await placementOf(a, client)).connector!;
    // A session-like UDP flow through A, alive across the outage (the Connector drops media of
    // unknown sessions, so an allocated session is used: the whole login through A).
    const plan: UserPlan = { name: 'outage-user', localAddress: client, requestTimeoutMs: 5000 };
    const logId = randomUUID();
    let cookie: string | undefined;
    let allocation;
    for (const xml of [requests.hello('u'), requests.authenticate('u', 's', 'd'), requests.getResourceList(), requests.allocateResource('1')]) {
      const reply = await postBroker(a.broker as Endpoint, plan, xml, logId, cookie);
      expect(reply.connectorId).toBe(home);
      cookie ??= sessionCookie(reply.rawHeaders);
      allocation = reply.answer.target ?? allocation;
    }
    const { control, spi, replySpi } = await presentTag(a.pcoipTcp, plan, allocation!, home);
    const udp = await udpFrom(client);
    try {
      expect((await udpAnswer(udp, a.pcoipUdp, pcoipPacket(spi, 1))).readUInt32BE(OFFSET_SPI)).toBe(replySpi);
      await eventually(() => redis.cli('EXISTS', `i10t:pin:${client}/32`) === '1', 3000, 'pin stored');
      expect(await metricsText(a)).toMatch(/^pcoip_lb_cluster_store_up 1$/m);

      await redis.kill();
      await eventually(async () => /^pcoip_lb_cluster_store_up 0$/m.test(await metricsText(a)), 5000, 'metric flipped on A');
      // Media keeps flowing; a new client is placed (by hashing) without waiting for the store.
      for (let seq = 2; seq < 12; seq++) expect((await udpAnswer(udp, a.pcoipUdp, pcoipPacket(spi, seq))).readUInt32BE(OFFSET_SPI)).toBe(replySpi);
      const fresh = await establishSession({ name: 'new-user', localAddress: '127.0.13.201', requestTimeoutMs: 5000 }, { broker: b.broker, pcoipTcp: b.pcoipTcp });
      fresh.control.destroy();
      await new Promise((r) => setTimeout(r, 1500)); // several reconnect attempts
      const down = a.cli.lines.filter((l) => l.code === 'PLB_E_CLUSTER_STORE');
      expect(down).toHaveLength(1);
      expect(String(down[0]!.msg)).toMatch(/unreachable/);

      await redis.start();
      await a.cli.waitForLine((l) => /^cluster store .* back after/.test(String(l.msg)), 10_000);
      await b.cli.waitForLine((l) => /^cluster store .* back after/.test(String(l.msg)), 10_000);
      expect(await metricsText(a)).toMatch(/^pcoip_lb_cluster_store_up 1$/m);
      // The restarted store is empty (no persistence): the instances re-published what is live.
      await eventually(() => redis.cli('EXISTS', `i10t:pin:${client}/32`) === '1', 3000, 'pin re-published');
      expect(JSON.parse(redis.cli('GET', `i10t:pin:${client}/32`))).toMatchObject({ connector: home });
      expect((await udpAnswer(udp, a.pcoipUdp, pcoipPacket(spi, 20))).readUInt32BE(OFFSET_SPI)).toBe(replySpi);
    } finally {
      udp.close();
      control.destroy();
    }
  }, 60_000);

  it('/metrics with the cluster store passes promtool check metrics, and /status has the cluster view', async () => {
    // (B was restarted and the store too in the tests above: both heartbeats are back within a few.)
    await eventually(async () => /^pcoip_lb_cluster_instances 2$/m.test(await metricsText(b)), 5000, 'both instances in the store');
    const text = await metricsText(b);
    const check = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
    expect({ status: check.status, out: check.stdout + check.stderr }).toEqual({ status: 0, out: '' });
    const status = await adminGet<{ cluster: { instanceId: string; store: { up: boolean }; instances: Array<{ id: string; self: boolean; connectors: unknown[] }>; disagreements: unknown[] } }>(b, '/status');
    expect(status.cluster.instanceId).toBe('lb-b');
    expect(status.cluster.store.up).toBe(true);
    expect(status.cluster.instances.map((i) => [i.id, i.self, i.connectors.length])).toEqual([['lb-b', true, 3], ['lb-a', false, 3]]);
  });

  it('garbage in the store is ignored (logged, counted), never used to route', async () => {
    const client = '127.0.13.210';
    const hashed = (await placementOf(a, client)).connector!;
    const bogus = sims.find((s) => s.id !== hashed)!.id;
    redis.cli('SET', `i10t:pin:${client}/32`, JSON.stringify({ connector: 'conn-nowhere', reason: 'repinned', at: Date.now(), by: 'x' }), 'PX', '60000');
    redis.cli('SET', 'i10t:pin:127.0.13.211/32', `{"connector":"${bogus}","reason":"repinned","at":"soon"}`, 'PX', '60000');
    redis.cli('PUBLISH', 'i10t:changes', JSON.stringify({ from: 'evil', change: { kind: 'operator-state', connectorId: hashed, state: 'broken', at: Date.now() } }));
    for (const c of [client, '127.0.13.211']) {
      // A connection is placed when accepted (the Connector never hears a byte of it here).
      const socket = netConnect({ host: a.pcoipTcp.host, port: a.pcoipTcp.port, localAddress: c });
      socket.on('error', () => undefined);
      await eventually(async () => (await placementOf(a, c)).pinned, 3000, `${c} placed`);
      socket.destroy();
      expect((await placementOf(a, c)).connector).toBe((await placementOf(b, c)).connector);
    }
    expect((await placementOf(a, client)).connector).toBe(hashed);
    expect((await placementOf(a, '127.0.13.211')).connector).not.toBe('conn-nowhere');
    expect((await adminGet<{ state: string }>(b, `/connectors/${hashed}`)).state).toBe('active');
    await eventually(() => a.cli.lines.some((l) => l.code === 'PLB_E_CLUSTER_VALUE'), 3000, 'invalid value logged');
    expect(await metricsText(a)).toMatch(/pcoip_lb_cluster_invalid_values_total\{source="lookup"\} [1-9]/);
    expect(await metricsText(b)).toMatch(/pcoip_lb_cluster_invalid_values_total\{source="message"\} [1-9]/);
  });
});
