import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';

/**
 * Simulated PCoIP sessions for the soak and reload benches, against Connectors that greet with
 * their id (test/helpers/fake-connector.ts). One session = two short 443 exchanges, a 4172/TCP
 * control connection held for the session, and a 4172/UDP stream from a fresh source port for
 * the session; every reply names the Connector, so a session whose flows disagree is counted
 * as misrouted. `concurrency` sessions run at all times, each from the next client address.
 *
 * The 443 part follows the client mix (`mix`, default realistic, as src/sim/mix.ts does for
 * bench:sessions): session i plays profile i mod 4 — probe exchange then both exchanges on one
 * keep-alive connection; probe then one connection per exchange; keep-alive without probe; one
 * connection per exchange (legacy: always the last). The mix is written to stderr at start.
 */
export type SessionMix = 'realistic' | 'legacy';

interface BrokerProfile {
  name: string;
  probe: boolean;
  keepAlive: boolean;
}

const PROFILES: Record<SessionMix, readonly BrokerProfile[]> = {
  realistic: [
    { name: 'keep-alive, probe', probe: true, keepAlive: true },
    { name: 'per-request, probe', probe: true, keepAlive: false },
    { name: 'keep-alive', probe: false, keepAlive: true },
    { name: 'per-request', probe: false, keepAlive: false },
  ],
  legacy: [{ name: 'per-request', probe: false, keepAlive: false }],
};
export interface LoadOptions {
  host: string;
  ports: { broker: number; pcoipTcp: number; pcoipUdp: number };
  clients: string[];
  concurrency: number;
  sessionMs: [number, number];
  udpIntervalMs: number;
  udpBytes: number;
  /** Per-step timeout (connect, greeting, echo). */
  stepTimeoutMs?: number;
  /** How sessions use 443 (default realistic). */
  mix?: SessionMix;
}

export interface LoadCounters {
  sessionsStarted: number;
  sessionsOk: number;
  sessionsFailed: number;
  misrouted: number;
  /** 4172/TCP control connections closed by the other side before the session ended. */
  tcpDropped: number;
  /** UDP streams whose replies stopped (or never came) while the client kept sending. */
  udpFlowsLost: number;
  udpSent: number;
  udpReceived: number;
  /** 443 connections opened and exchanges sent over them (keep-alive sessions share one). */
  brokerConnections: number;
  brokerExchanges: number;
  /** Sessions started per client-mix profile. */
  byProfile: Map<string, number>;
  failures: Map<string, number>;
}

export class SessionLoad {
  readonly counters: LoadCounters = {
    sessionsStarted: 0,
    sessionsOk: 0,
    sessionsFailed: 0,
    misrouted: 0,
    tcpDropped: 0,
    udpFlowsLost: 0,
    udpSent: 0,
    udpReceived: 0,
    brokerConnections: 0,
    brokerExchanges: 0,
    byProfile: new Map(),
    failures: new Map(),
  };
  private sessionIndex = 0;
  private running = false;
  private readonly active = new Set<Promise<void>>();
  private nextClient = 0;
  private readonly options: LoadOptions;

  constructor(options: LoadOptions) {
    this.options = options;
  }

  get activeSessions(): number {
    return this.active.size;
  }

  get mix(): SessionMix {
    return this.options.mix ?? 'realistic';
  }

  start(): void {
    process.stderr.write(`session-load: client mix ${this.mix} (${PROFILES[this.mix].map((p) => p.name).join('; ')})\n`);
    this.running = true;
    for (let i = 0; i < this.options.concurrency; i++) this.spawn();
  }

  /** Stops starting sessions and waits (bounded) for the running ones to finish. */
  async stop(timeoutMs = 60_000): Promise<void> {
    this.running = false;
    await Promise.race([Promise.allSettled([...this.active]), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  private spawn(): void {
    if (!this.running) return;
    const client = this.options.clients[this.nextClient++ % this.options.clients.length]!;
    const run = this.session(client).then(
      () => void this.counters.sessionsOk++,
      (err: Error) => {
        this.counters.sessionsFailed++;
        const key = err.message.replace(/\d+/g, 'N');
        this.counters.failures.set(key, (this.counters.failures.get(key) ?? 0) + 1);
      },
    );
    this.active.add(run);
    void run.finally(() => {
      this.active.delete(run);
      this.spawn();
    });
  }

  private async session(client: string): Promise<void> {
    const { ports, sessionMs, host } = this.options;
    this.counters.sessionsStarted++;
    const [lo, hi] = sessionMs;
    const duration = lo + Math.random() * (hi - lo);
    const ids: string[] = [];
    const profiles = PROFILES[this.mix];
    const profile = profiles[this.sessionIndex++ % profiles.length]!;
    this.counters.byProfile.set(profile.name, (this.counters.byProfile.get(profile.name) ?? 0) + 1);
    const exchanges = [...(profile.probe ? ['POST /pcoip-broker/xml QueryBrokerClient'] : []), 'POST /pcoip-broker/xml hello', 'POST /pcoip-broker/xml allocate'];
    let broker: { id: string; socket: Socket } | undefined;
    for (const text of exchanges) {
      if (!broker) {
        broker = await this.open(ports.broker, client);
        this.counters.brokerConnections++;
        ids.push(broker.id);
      }
      await this.echo(broker.socket, text);
      this.counters.brokerExchanges++;
      if (!profile.keepAlive) {
        broker.socket.end();
        broker = undefined;
      }
    }
    broker?.socket.end();
    const control = await this.open(ports.pcoipTcp, client);
    ids.push(control.id);
    // A real client speaks first (TLS ClientHello); a silent one would hit firstByteTimeout.
    await this.echo(control.socket, 'ClientHello');
    // A PCoIP client ends the session when its control connection drops: so does this one.
    const dropped = new AbortController();
    control.socket.once('close', () => dropped.abort());
    const media = await this.stream(client, host, ports.pcoipUdp, duration, dropped.signal);
    ids.push(...media.ids);
    if (dropped.signal.aborted) {
      this.counters.tcpDropped++;
      throw new Error('control connection dropped');
    }
    control.socket.end();
    if (media.lost) this.counters.udpFlowsLost++;
    if (new Set(ids).size > 1) {
      this.counters.misrouted++;
      throw new Error('misrouted session');
    }
    if (media.lost) throw new Error('UDP flow lost');
  }

  private open(port: number, client: string): Promise<{ id: string; socket: Socket }> {
    const timeoutMs = this.options.stepTimeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.options.host, port, localAddress: client });
      let buffer = '';
      const timer = setTimeout(() => fail(new Error(`no greeting on port ${port} within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.on('error', (err: NodeJS.ErrnoException) => fail(new Error(`connect/greeting: ${err.code ?? err.message}`)));
      socket.once('close', () => fail(new Error('closed before greeting')));
      const onData = (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        const nl = buffer.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        socket.off('data', onData);
        socket.removeAllListeners('close');
        socket.removeAllListeners('error');
        socket.on('error', () => undefined);
        resolve({ id: buffer.slice(0, nl), socket });
      };
      socket.on('data', onData);
    });
  }

  private echo(socket: Socket, text: string): Promise<void> {
    const timeoutMs = this.options.stepTimeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      let got = '';
      const timer = setTimeout(() => done(new Error('echo timeout')), timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        socket.off('data', onData);
        if (err) reject(err);
        else resolve();
      };
      const onData = (chunk: Buffer) => {
        got += chunk.toString('latin1');
        if (got.includes(text)) done();
      };
      socket.on('data', onData);
      socket.write(text);
    });
  }

  /** Sends a packet every udpIntervalMs for `durationMs` from a new source port; reports lost = replies stopped. */
  private async stream(client: string, host: string, port: number, durationMs: number, stop: AbortSignal): Promise<{ ids: string[]; lost: boolean }> {
    const { udpIntervalMs, udpBytes } = this.options;
    const socket: UdpSocket = createSocket('udp4');
    socket.on('error', () => undefined);
    await new Promise<void>((r) => socket.bind({ address: client, port: 0 }, () => r()));
    const ids = new Set<string>();
    const payload = Buffer.alloc(udpBytes, 0x5a);
    let lastSend = 0;
    let lastReply = 0;
    let received = 0;
    socket.on('message', (msg) => {
      received++;
      this.counters.udpReceived++;
      lastReply = Date.now();
      const bar = msg.indexOf(0x7c); // '|'
      if (bar > 0) ids.add(msg.toString('latin1', 0, bar));
    });
    const end = Date.now() + durationMs;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (Date.now() >= end || stop.aborted) {
          clearInterval(timer);
          resolve();
          return;
        }
        socket.send(payload, port, host);
        this.counters.udpSent++;
        lastSend = Date.now();
      }, udpIntervalMs);
    });
    // Let the last replies arrive.
    await new Promise((r) => setTimeout(r, Math.max(200, udpIntervalMs * 4)));
    socket.close();
    // Lost: nothing ever came back, or the replies stopped more than a second before we stopped sending.
    const lost = received === 0 || lastSend - lastReply > 1000;
    return { ids: [...ids], lost };
  }
}

export function clientAddresses(count: number, base = '127.0.2.'): string[] {
  return Array.from({ length: count }, (_, i) => `${base}${1 + (i % 250)}`);
}
