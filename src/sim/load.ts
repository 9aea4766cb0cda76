import { performance } from 'node:perf_hooks';
import { Histogram, type Summary } from './histogram.ts';
import { UdpPacer, type UdpStreamResult } from './udp-stream.ts';
import { SessionFailure, establishSession, runMedia, type EstablishedSession, type FailureKind, type SessionTarget, type Stage } from './client.ts';
import { DEFAULT_PACKET_BYTES } from './wire.ts';
import { LEGACY_MIX, profileFor, type ClientMix } from './mix.ts';

/**
 * The load generator: N simulated PCoIP users, each logging in (the broker exchange, spoken as
 * its profile in the client mix says: probe hello or not, keep-alive or a connection per request,
 * cookies or log id only), opening 4172/TCP with its tag and streaming UDP for a while. At most
 * `concurrency` users are in their set-up at once (a logon storm with a bound); streaming users
 * do not hold a slot. The report says who failed and why, and how set-up and media fared.
 */

export interface LoadOptions {
  users: number;
  /** Where users connect; a function gives each user (by index) its own, e.g. straight to a Connector. */
  target: SessionTarget | ((userIndex: number) => SessionTarget);
  /** Media bitrate per user, bits per second. */
  bitrateBps: number;
  /** How long each user streams, ms. */
  durationMs: number;
  packetBytes?: number;
  /** User set-ups in flight at once. */
  concurrency?: number;
  /** Give every user its own source address (127.0.2.1, 127.0.2.2, …), as distinct clients. */
  distinctSources?: boolean;
  /** With distinct sources: the first user takes the address of user number `sourceOffset` (runs that must not share clients). */
  sourceOffset?: number;
  /** With distinctSources: the i-th user's address instead of 127.0.2.x (e.g. inside a network namespace). */
  sourceAddress?: (userIndex: number) => string;
  /** Every user's UDP media from this source port (real clients use a fixed one: 4172 or 50002). */
  udpSourcePort?: number;
  requestTimeoutMs?: number;
  /** A user whose echoes fall short by more than this share fails (default 10 %). */
  maxLossPct?: number;
  locateSpi?: (spi: number) => string | undefined;
  /** How users speak the broker exchange (default LEGACY_MIX); see mix.ts. */
  mix?: ClientMix;
  onProgress?: (progress: LoadProgress) => void;
  progressEveryMs?: number;
}

export interface LoadProgress {
  elapsedMs: number;
  users: number;
  settingUp: number;
  streaming: number;
  ok: number;
  failed: number;
}

export interface UserOutcome {
  name: string;
  /** Its profile in the client mix. */
  profile: string;
  /** Broker requests sent and TLS connections opened for them (once set up). */
  broker?: { requests: number; connections: number };
  localAddress: string | undefined;
  connectorId: string | undefined;
  ok: boolean;
  stage?: Stage;
  kind?: FailureKind;
  message?: string;
  setupMs?: number;
  udp?: UdpStreamResult;
}

export interface ConnectorSpread {
  id: string;
  users: number;
  ok: number;
  failed: number;
}

export interface ProfileOutcome {
  profile: string;
  users: number;
  ok: number;
  failed: number;
  setupMs: Summary;
  /** Mean broker requests and TLS connections per user that got through its set-up. */
  requestsPerUser: number;
  connectionsPerUser: number;
}

export interface LoadReport {
  users: number;
  ok: number;
  failed: number;
  failures: UserOutcome[];
  failuresByKind: Partial<Record<FailureKind, number>>;
  setupMs: Summary;
  udp: {
    sent: number;
    received: number;
    lossPct: number;
    /** Client → Connector: sent but never echoed by the Connector (from its sequence numbers). */
    upLossPct: number;
    /** Connector → client: echoed but never arrived. */
    downLossPct: number;
    lossPerUserPct: Summary;
    rttMs: Summary;
  };
  perConnector: ConnectorSpread[];
  /** Outcomes per client-mix profile. */
  perProfile: ProfileOutcome[];
  wallMs: number;
  settings: { bitrateBps: number; durationMs: number; packetBytes: number; concurrency: number; distinctSources: boolean; mix: string };
}

/** The i-th user's source address: 127.0.2.1 … 127.0.2.254, then 127.0.3.1 … (all loopback on Linux). */
export function userSourceAddress(index: number): string {
  return `127.0.${2 + Math.floor(index / 254)}.${1 + (index % 254)}`;
}

export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const settings = {
    bitrateBps: options.bitrateBps,
    durationMs: options.durationMs,
    packetBytes: options.packetBytes ?? DEFAULT_PACKET_BYTES,
    concurrency: Math.max(1, options.concurrency ?? 32),
    distinctSources: options.distinctSources ?? true,
    mix: (options.mix ?? LEGACY_MIX).name,
  };
  const mix = options.mix ?? LEGACY_MIX;
  if (settings.distinctSources && options.users + (options.sourceOffset ?? 0) > 254 * 250) throw new Error(`at most ${254 * 250} users with distinct source addresses`);
  const started = performance.now();
  const pacer = new UdpPacer();
  const rtt = new Histogram();
  const outcomes: UserOutcome[] = [];
  const live = { settingUp: 0, streaming: 0, ok: 0, failed: 0 };
  const slots = new Semaphore(settings.concurrency);

  const progressTimer =
    options.onProgress &&
    setInterval(
      () => options.onProgress!({ elapsedMs: performance.now() - started, users: options.users, ...live }),
      options.progressEveryMs ?? 2000,
    );

  const runOne = async (index: number): Promise<void> => {
    const profile = profileFor(mix, index);
    const plan = {
      name: `user-${index + 1}`,
      localAddress: settings.distinctSources ? (options.sourceAddress ? options.sourceAddress(index) : userSourceAddress(index + (options.sourceOffset ?? 0))) : undefined,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      behaviour: profile.behaviour,
    };
    const outcome: UserOutcome = { name: plan.name, profile: profile.name, localAddress: plan.localAddress, connectorId: undefined, ok: false };
    outcomes.push(outcome);
    let session: EstablishedSession | undefined;
    const target = typeof options.target === 'function' ? options.target(index) : options.target;
    await slots.acquire();
    live.settingUp++;
    try {
      session = await establishSession(plan, target);
      outcome.connectorId = session.connectorId;
      outcome.setupMs = session.setupMs;
      outcome.broker = session.broker;
    } catch (err) {
      recordFailure(outcome, err);
    } finally {
      live.settingUp--;
      slots.release();
    }
    if (session) {
      live.streaming++;
      try {
        outcome.udp = await runMedia(session, {
          bitrateBps: settings.bitrateBps,
          durationMs: settings.durationMs,
          packetBytes: settings.packetBytes,
          maxLossPct: options.maxLossPct ?? 10,
          endpoint: target.pcoipUdp ?? target.pcoipTcp ?? { host: session.allocation.ipAddress, port: session.allocation.port },
          pacer,
          rtt,
          locateSpi: options.locateSpi,
          ...(options.udpSourcePort !== undefined ? { localPort: options.udpSourcePort } : {}),
        });
        outcome.ok = true;
      } catch (err) {
        recordFailure(outcome, err);
      } finally {
        live.streaming--;
      }
    }
    if (outcome.ok) live.ok++;
    else live.failed++;
  };

  try {
    await Promise.all(Array.from({ length: options.users }, (_, i) => runOne(i)));
  } finally {
    if (progressTimer) clearInterval(progressTimer);
    pacer.stop();
  }
  return buildReport(outcomes, rtt, performance.now() - started, settings);
}

function recordFailure(outcome: UserOutcome, err: unknown): void {
  outcome.ok = false;
  if (err instanceof SessionFailure) {
    outcome.stage = err.stage;
    outcome.kind = err.kind;
    outcome.message = err.message;
    outcome.connectorId ??= err.connectorId;
    if (err.udp) outcome.udp = err.udp;
  } else {
    outcome.kind = 'network';
    outcome.message = err instanceof Error ? err.message : String(err);
  }
}

function buildReport(outcomes: UserOutcome[], rtt: Histogram, wallMs: number, settings: LoadReport['settings']): LoadReport {
  const setup = new Histogram();
  const lossPerUser = new Histogram();
  const spread = new Map<string, ConnectorSpread>();
  const failuresByKind: Partial<Record<FailureKind, number>> = {};
  let sent = 0;
  let received = 0;
  let connectorSent = 0;
  for (const o of outcomes) {
    if (o.setupMs !== undefined) setup.record(o.setupMs);
    if (o.udp && o.udp.sent > 0) {
      sent += o.udp.sent;
      received += o.udp.received;
      connectorSent += Math.max(o.udp.connectorSent, o.udp.received);
      lossPerUser.record((100 * (o.udp.sent - o.udp.received)) / o.udp.sent);
    }
    if (!o.ok && o.kind) failuresByKind[o.kind] = (failuresByKind[o.kind] ?? 0) + 1;
    const id = o.connectorId ?? '(none)';
    const s = spread.get(id) ?? { id, users: 0, ok: 0, failed: 0 };
    s.users++;
    if (o.ok) s.ok++;
    else s.failed++;
    spread.set(id, s);
  }
  const pct = (part: number, whole: number) => (whole === 0 ? 0 : (100 * part) / whole);
  const failures = outcomes.filter((o) => !o.ok);
  const perProfile = new Map<string, { users: number; ok: number; setup: Histogram; requests: number; connections: number; setUp: number }>();
  for (const o of outcomes) {
    const p = perProfile.get(o.profile) ?? { users: 0, ok: 0, setup: new Histogram(), requests: 0, connections: 0, setUp: 0 };
    p.users++;
    if (o.ok) p.ok++;
    if (o.setupMs !== undefined) p.setup.record(o.setupMs);
    if (o.broker) (p.setUp++, (p.requests += o.broker.requests), (p.connections += o.broker.connections));
    perProfile.set(o.profile, p);
  }
  return {
    users: outcomes.length,
    ok: outcomes.length - failures.length,
    failed: failures.length,
    failures,
    failuresByKind,
    setupMs: setup.summary(),
    udp: {
      sent,
      received,
      lossPct: pct(sent - received, sent),
      upLossPct: pct(sent - connectorSent, sent),
      downLossPct: pct(connectorSent - received, sent),
      lossPerUserPct: lossPerUser.summary(),
      rttMs: rtt.summary(),
    },
    perConnector: [...spread.values()].sort((a, b) => a.id.localeCompare(b.id)),
    perProfile: [...perProfile].map(([profile, p]) => ({
      profile,
      users: p.users,
      ok: p.ok,
      failed: p.users - p.ok,
      setupMs: p.setup.summary(),
      requestsPerUser: p.setUp === 0 ? 0 : p.requests / p.setUp,
      connectionsPerUser: p.setUp === 0 ? 0 : p.connections / p.setUp,
    })),
    wallMs,
    settings,
  };
}

/** Counts permits; waiters are served in arrival order. */
class Semaphore {
  private free: number;
  private readonly waiting: Array<() => void> = [];

  constructor(permits: number) {
    this.free = permits;
  }

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}
