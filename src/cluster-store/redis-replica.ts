import { performance } from 'node:perf_hooks';
import { ErrorCodes } from '../errors.ts';
import { RateLimitedLog, type Logger } from '../logger.ts';
import type { LookupQuery, OperatorStateRecord, PinRecord, StateChange } from '../state/changes.ts';
import type { StateReplica } from '../state/replica.ts';
import {
  decodeHeartbeat,
  decodeMessage,
  decodeOperatorState,
  decodeValue,
  encodeHeartbeat,
  encodeMessage,
  encodeValue,
  type ConnectorViewRecord,
  type Decoded,
  type KnownConnector,
} from './codec.ts';
import { StoreKeys } from './keys.ts';
import { ClusterStoreStats, type InvalidSource, type LookupResult } from './metrics.ts';
import { PinKeepAlive, keepAliveSlack } from './pin-keepalive.ts';
import { clientOptions, describeStore, type StoreSettings } from './settings.ts';
import { StoreConnection, type Command, type Reply } from './store-connection.ts';
import { findDisagreements, instanceViews, type ClusterStatus, type ReceivedHeartbeat } from './view.ts';

/**
 * This instance's replica in the cluster store (Redis or Valkey): the StateReplica the owners
 * (Placer, SessionTable, Pool) publish to and look up in, through StateSync (docs/ha.md).
 *
 *  - look-ups are bounded (`cluster.timeouts.lookup`): a timeout, a store that is away or a bad
 *    value answers `undefined`, so the data plane decides alone (consistent hashing agrees);
 *  - writes are asynchronous: coalesced per key and sent as one pipeline every few ms;
 *    while the store is away they are not queued (reconciling re-publishes what still matters);
 *    while reconciling they are (bounded): made after its snapshot, only they carry them;
 *  - changes made elsewhere arrive on the pub/sub channel and are handed to `onRemote`;
 *  - every value read is checked (codec.ts) and a bad one is logged, counted and ignored;
 *  - one log line per store state change (connected, down, back, slow, in time again);
 *  - a heartbeat carries this instance's view of the Connectors (the cluster view).
 *
 * Conflicts: a `placed` pin (consistent hashing, nothing known) never overwrites a stored pin
 * (PLACE_PIN_SCRIPT); if one is there, this instance adopts it. A `repinned`/`learned` pin, a session and
 * an operator state overwrite; when reconciling, the newer (`at`) of the local and stored value wins.
 */
export interface SelfDescription {
  version: string;
  startedAt: number;
  listeners: Record<string, string>;
  connectors: ConnectorViewRecord[];
}

export interface RedisReplicaOptions {
  settings: StoreSettings;
  /** affinity.ttl: how long a pin (and a learned session) outlives its client's last flow. */
  affinityTtlMs: number;
  knownConnector: KnownConnector;
  /**
   * What this instance holds that the cluster should have, for reconciling: live pins and
   * learned sessions. (Operator states published or applied here are remembered by the replica
   * itself, with when they were set; any given here are merged in, the newest per Connector.)
   */
  localState: (now: number) => Iterable<StateChange>;
  describeSelf: () => SelfDescription;
  logger: Logger;
  now?: () => number;
}

type StoreState = 'starting' | 'up' | 'down' | 'closed';

interface Write {
  commands: Command[];
  /** A `placed` pin: sent as PLACE_PIN_SCRIPT; its reply says whether it was written (and announced) or which pin to adopt. */
  placed?: PinRecord;
}

/**
 * A `placed` pin (consistent hashing, nothing known) in one atomic step, so its announcement keeps
 * its place among this instance's writes: written and published only where no pin is stored (or
 * where something that is not a string sits on the key: garbage is replaced); otherwise the
 * stored pin and its remaining lifetime are returned, for this instance to adopt.
 * KEYS[1] pin key; ARGV: value, PX, channel, message.
 */
const PLACE_PIN_SCRIPT = `
if redis.call('TYPE', KEYS[1]).ok == 'string' then return { redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]) } end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return false`;

/** Writes waiting for the next batch, at most; past it the oldest are dropped (counted). */
const MAX_PENDING_WRITES = 20_000;
/** How long a write waits to share a batch with others (short: a pin must be in the store before the client's next flow reaches another instance). */
const FLUSH_DELAY_MS = 1;
/** Keys checked per pipeline when reconciling. */
const RECONCILE_CHUNK = 500;
/** Instances listed at most (the set of heartbeat keys is an index; a hostile one is cut here). */
const MAX_INSTANCES = 256;
/** After a look-up timeout, look-ups must answer in time this long before "slow" is over. */
const SLOW_CLEAR_MS = 5000;

export class RedisReplica implements StateReplica {
  readonly stats = new ClusterStoreStats();
  readonly instanceId: string;
  readonly storeUrl: string;
  private readonly options: RedisReplicaOptions;
  private readonly keys: StoreKeys;
  private readonly keepAlive: PinKeepAlive;
  private readonly conn: StoreConnection;
  private readonly now: () => number;
  private readonly remoteListeners: Array<(change: StateChange) => void> = [];
  private readonly pending = new Map<string, Write>();
  private readonly invalidLogs = new Map<InvalidSource, RateLimitedLog>();
  private readonly refusedLog = new RateLimitedLog(10_000);
  /**
   * The latest operator state per Connector this instance made or applied, with when it was set:
   * what reconciling compares with the stored hash (a drain made while the store was away is
   * written when it is back, unless someone else's is newer).
   */
  private readonly operatorLog = new Map<string, OperatorStateRecord>();
  private state: StoreState = 'starting';
  private stateSince: number;
  private lastError: string | undefined;
  private everUp = false;
  private reconciling = false;
  private heartbeatStartedAt: number | undefined;
  private slowSince: number | undefined;
  private lastTimeoutAt = 0;
  private others: ReceivedHeartbeat[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private readyWaiters: Array<(up: boolean) => void> = [];

  constructor(options: RedisReplicaOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
    this.stateSince = this.now();
    this.instanceId = options.settings.instanceId;
    this.storeUrl = describeStore(options.settings);
    this.keys = new StoreKeys(options.settings.keyPrefix);
    this.keepAlive = new PinKeepAlive({ ttlMs: options.affinityTtlMs, slackMs: keepAliveSlack(options.affinityTtlMs) });
    this.conn = new StoreConnection(clientOptions(options.settings), this.keys.channel, {
      onUsable: () => this.usable(),
      onTrouble: (reason) => this.trouble(reason),
      onMessage: (text) => this.message(text),
    });
  }

  /** Connects (in the background), starts heartbeats and pin refreshes. */
  start(): void {
    this.conn.start();
    const hb = this.options.settings.heartbeatMs;
    this.heartbeatTimer = setInterval(() => this.tick(), hb);
    this.heartbeatTimer.unref();
    this.keepAliveTimer = setInterval(() => this.refreshDue(), Math.max(250, keepAliveSlack(this.options.affinityTtlMs) / 2));
    this.keepAliveTimer.unref();
  }

  /** Resolves true once the store is up and reconciled (operator state read), false after `timeoutMs`. */
  whenUp(timeoutMs: number): Promise<boolean> {
    if (this.state === 'up') return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const done = (up: boolean) => {
        clearTimeout(timer);
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done);
        resolve(up);
      };
      this.readyWaiters.push(done);
    });
  }

  get up(): boolean {
    return this.state === 'up';
  }

  // ---- StateReplica ----------------------------------------------------------------------------

  async lookup(query: LookupQuery): Promise<StateChange | undefined> {
    const kind = query.kind;
    if (this.state !== 'up') return this.counted(kind, 'store-down');
    const key = this.keyOf(query);
    const started = performance.now();
    let answer: Reply[];
    try {
      answer = await withTimeout(this.conn.pipeline([['GET', key], ['PTTL', key]]), this.options.settings.lookupTimeoutMs);
    } catch (err) {
      if (!(err instanceof NoAnswer)) return this.counted(kind, 'error');
      this.noteTimeout();
      return this.counted(kind, 'timeout');
    }
    this.stats.lookupSeconds.observe({ kind }, (performance.now() - started) / 1000);
    this.noteInTime();
    const [value, pttl] = answer;
    if (value === null) return this.counted(kind, 'miss');
    const decoded: Decoded<StateChange> = typeof value === 'string' ? decodeValue(query, value, this.options.knownConnector) : { ok: false, reason: describeReply(value) };
    if (!decoded.ok) {
      this.invalid('lookup', key, decoded.reason);
      return this.counted(kind, 'invalid');
    }
    this.stats.lookup(kind, 'hit');
    return this.asLive(decoded.value, pttl);
  }

  publish(change: StateChange): void {
    if (this.state === 'closed') return;
    if (change.kind === 'operator-state') this.noteOperator(change);
    if (!this.accepting) {
      this.stats.writesSkipped++;
      return;
    }
    const now = this.now();
    if (change.kind === 'pin') this.keepAlive.written(change.key, now);
    if (change.kind === 'pin' && change.reason === 'placed') {
      const key = this.keys.pin(change.key);
      const script: Command = ['EVAL', PLACE_PIN_SCRIPT, '1', key, encodeValue(change, this.instanceId), String(this.keepAlive.storedTtlMs), this.keys.channel, encodeMessage(this.instanceId, change)];
      this.enqueue(this.pendingId(change), { commands: [script], placed: change });
      return;
    }
    const write = this.writeCommands(change, now);
    if (write.length === 0) return; // an allocation whose connect tag has expired: nothing left to share
    this.enqueue(this.pendingId(change), { commands: [...write, this.announce(change)] });
  }

  publishLeases(deltas: ReadonlyMap<string, number>): void {
    for (const key of this.keepAlive.applyDeltas(deltas, this.now())) this.refresh(key);
  }

  onRemote(apply: (change: StateChange) => void): void {
    this.remoteListeners.push(apply);
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasUp = this.state === 'up';
    for (const t of [this.heartbeatTimer, this.keepAliveTimer, this.flushTimer]) if (t) clearTimeout(t);
    if (wasUp) {
      // Last writes and leaving the cluster view, bounded: a store that hangs does not hold up shutdown.
      const leave: Command[] = [['DEL', this.keys.instance(this.instanceId)], ['SREM', this.keys.instances, this.instanceId]];
      const writes = [...this.pending.values()].flatMap((w) => w.commands);
      this.pending.clear();
      await withTimeout(this.conn.pipeline([...writes, ...leave]), this.options.settings.connectTimeoutMs).catch(() => undefined);
    }
    this.state = 'closed';
    this.stats.up = false;
    for (const w of [...this.readyWaiters]) w(false);
    await this.conn.close();
  }

  // ---- cluster view ----------------------------------------------------------------------------

  /** The `cluster` section of /status: instances (this one fresh, the others as last read) and disagreements. */
  clusterStatus(): ClusterStatus {
    const now = this.now();
    const self: ReceivedHeartbeat = { record: { id: this.instanceId, at: now, ...this.options.describeSelf() }, receivedAt: now };
    const instances = instanceViews(this.instanceId, [self, ...this.others.filter((h) => h.record.id !== this.instanceId)], now);
    return {
      instanceId: this.instanceId,
      store: { url: this.storeUrl, up: this.state === 'up', since: new Date(this.stateSince).toISOString(), lastError: this.state === 'up' ? undefined : this.lastError },
      instances,
      disagreements: findDisagreements(instances),
    };
  }

  // ---- connection state --------------------------------------------------------------------------

  private usable(): void {
    if (this.state !== 'up' && this.state !== 'closed') void this.reconcile();
  }

  private trouble(reason: string): void {
    this.lastError = reason;
    if (this.state === 'up' || (this.state === 'starting' && !this.everUp)) this.setDown(reason);
  }

  private setDown(reason: string): void {
    const first = this.state === 'starting';
    this.state = 'down';
    this.stateSince = this.now();
    this.stats.up = false;
    this.others = [];
    this.options.logger.warn(
      { code: ErrorCodes.CLUSTER_STORE, store: this.storeUrl, reason },
      first
        ? `cluster store ${this.storeUrl} unreachable at start (${reason}): this instance decides alone (consistent hashing) until it connects`
        : `cluster store ${this.storeUrl} unreachable (${reason}): this instance decides alone (consistent hashing) until it is back`,
    );
  }

  private setUp(summary: Record<string, number>): void {
    const now = this.now();
    const downForMs = now - this.stateSince;
    const wasDown = this.state === 'down' && this.everUp;
    this.state = 'up';
    this.stateSince = now;
    this.stats.up = true;
    this.lastError = undefined;
    this.options.logger.info(
      { store: this.storeUrl, instance: this.instanceId, reconciled: summary, ...(wasDown ? { downForMs } : {}) },
      wasDown
        ? `cluster store ${this.storeUrl} back after ${(downForMs / 1000).toFixed(1)} s: reconciled`
        : `cluster store ${this.storeUrl} connected as instance ${this.instanceId}: reconciled`,
    );
    this.everUp = true;
    for (const w of [...this.readyWaiters]) w(true);
  }

  private noteTimeout(): void {
    this.lastTimeoutAt = this.now();
    if (this.slowSince !== undefined) return;
    this.slowSince = this.lastTimeoutAt;
    this.options.logger.warn(
      { code: ErrorCodes.CLUSTER_STORE, store: this.storeUrl, lookupTimeoutMs: this.options.settings.lookupTimeoutMs },
      `cluster store look-ups take longer than ${this.options.settings.lookupTimeoutMs} ms: new clients are placed without it (counted in pcoip_lb_cluster_lookup_timeouts_total)`,
    );
  }

  private noteInTime(): void {
    if (this.slowSince === undefined || this.now() - this.lastTimeoutAt < SLOW_CLEAR_MS) return;
    const timeouts = this.stats.lookupTimeouts;
    this.slowSince = undefined;
    this.options.logger.info({ store: this.storeUrl, lookupTimeoutsTotal: timeouts }, 'cluster store look-ups answer in time again');
  }

  /** A heartbeat round; also notices a store that stopped answering (no error, no reply). */
  private tick(): void {
    if (this.state === 'closed') return;
    const stallMs = Math.max(3 * this.options.settings.heartbeatMs, this.options.settings.connectTimeoutMs);
    if (this.heartbeatStartedAt !== undefined) {
      if (this.state === 'up' && this.now() - this.heartbeatStartedAt > stallMs) {
        this.lastError = `no answer for ${stallMs} ms`;
        this.setDown(this.lastError);
      }
      return;
    }
    if (this.state !== 'up') {
      if (this.conn.usable && !this.reconciling) void this.reconcile();
      return;
    }
    void this.heartbeat().catch(() => undefined);
  }

  private async heartbeat(): Promise<void> {
    this.heartbeatStartedAt = this.now();
    try {
      const hbKey = this.keys.instance(this.instanceId);
      const record = { id: this.instanceId, at: this.now(), ...this.options.describeSelf() };
      const [, , members] = await this.conn.pipeline([
        ['SET', hbKey, encodeHeartbeat(record), 'PX', String(3 * this.options.settings.heartbeatMs)],
        ['SADD', this.keys.instances, this.instanceId],
        ['SRANDMEMBER', this.keys.instances, String(MAX_INSTANCES)],
      ]);
      const ids = Array.isArray(members) ? members.filter((m): m is string => typeof m === 'string' && m.length <= 253) : [];
      if (ids.length === 0) return;
      const [values] = await this.conn.pipeline([['MGET', ...ids.map((id) => this.keys.instance(id))]]);
      const receivedAt = this.now();
      const seen: ReceivedHeartbeat[] = [];
      const gone: string[] = [];
      ids.forEach((id, i) => {
        const text = Array.isArray(values) ? values[i] : undefined;
        if (text === null || text === undefined) return void gone.push(id);
        const decoded = typeof text === 'string' ? decodeHeartbeat(id, text) : { ok: false as const, reason: describeReply(text) };
        if (decoded.ok) seen.push({ record: decoded.value, receivedAt });
        else this.invalid('heartbeat', this.keys.instance(id), decoded.reason);
      });
      this.others = seen;
      this.stats.instances = seen.length;
      // An id whose heartbeat expired has left; drop it from the index (fire and forget).
      if (gone.length > 0) void this.conn.pipeline([['SREM', this.keys.instances, ...gone]]).catch(() => undefined);
    } finally {
      this.heartbeatStartedAt = undefined;
    }
  }

  // ---- writes ------------------------------------------------------------------------------------

  /**
   * Whether writes are taken: the store is up, or it is being reconciled. A change made while
   * reconciling is newer than its snapshot of the local state, so it waits in `pending` (bounded)
   * and is sent right after; skipped, nothing would write it until the next reconnect.
   */
  private get accepting(): boolean {
    return this.state === 'up' || (this.reconciling && this.state !== 'closed');
  }

  private refresh(clientKey: string): void {
    if (!this.accepting) return;
    const key = this.keys.pin(clientKey);
    this.enqueue(`x:${key}`, { commands: [['PEXPIRE', key, String(this.keepAlive.storedTtlMs)]] });
  }

  private refreshDue(): void {
    const due = this.keepAlive.due(this.now());
    for (const key of due) this.refresh(key);
  }

  private enqueue(id: string, write: Write): void {
    this.pending.delete(id);
    this.pending.set(id, write);
    while (this.pending.size > MAX_PENDING_WRITES) {
      this.pending.delete(this.pending.keys().next().value!);
      this.stats.writesDropped++;
    }
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        void this.flush();
      }, FLUSH_DELAY_MS);
    }
  }

  private async flush(): Promise<void> {
    if (this.state !== 'up') {
      if (this.reconciling) return; // kept for when it is done (reconcile flushes them)
      this.dropPending();
      return;
    }
    const batch = [...this.pending.values()];
    this.pending.clear();
    if (batch.length === 0) return;
    const commands = batch.flatMap((w) => w.commands);
    this.stats.writes += batch.length;
    let replies: Reply[];
    try {
      replies = await this.conn.pipeline(commands);
    } catch {
      this.stats.failedBatches++;
      return;
    }
    this.noteRefused(replies);
    // Placed pins: announce the ones that were written, adopt the stored one where there was one.
    const followUp: Command[] = [];
    let at = 0;
    for (const w of batch) {
      if (w.placed) this.settlePlaced(w.placed, replies[at], followUp);
      at += w.commands.length;
    }
    if (followUp.length > 0) await this.conn.pipeline(followUp).catch(() => undefined);
  }

  /** The store is away: pending writes are not kept (the next reconcile re-publishes what still matters). */
  private dropPending(): void {
    this.stats.writesSkipped += this.pending.size;
    this.pending.clear();
  }

  /** Commands the store answered with an error (NOPERM from an ACL, OOM, …): counted, logged at most every 10 s. */
  private noteRefused(replies: Reply[]): void {
    const refused = replies.filter((r): r is Error => r instanceof Error);
    if (refused.length === 0) return;
    this.stats.writesRefused += refused.length;
    this.refusedLog.maybe(this.now(), (suppressed) =>
      this.options.logger.warn(
        { code: ErrorCodes.CLUSTER_STORE, store: this.storeUrl, refused: refused.length, suppressed, reason: refused[0]!.message.slice(0, 200) },
        `the cluster store refused ${refused.length} write(s): ${refused[0]!.message.slice(0, 200)}`,
      ),
    );
  }

  /** The outcome of PLACE_PIN_SCRIPT: nil (written and announced), or the pin that was there [value, pttl]. */
  private settlePlaced(pin: PinRecord, reply: Reply, followUp: Command[]): void {
    const key = this.keys.pin(pin.key);
    if (reply === null) return;
    const [stored, pttl] = Array.isArray(reply) ? (reply as Reply[]) : [reply, undefined];
    const decoded = typeof stored === 'string' ? decodeValue({ kind: 'pin', key: pin.key }, stored, this.options.knownConnector) : { ok: false as const, reason: describeReply(stored) };
    if (!decoded.ok) {
      // Garbage where a pin belongs: replace it with ours.
      this.invalid('lookup', key, decoded.reason);
      followUp.push(...this.writeCommands(pin, this.now()), this.announce(pin));
      return;
    }
    const existing = this.asLive(decoded.value, pttl) as PinRecord;
    if (existing.connectorId !== pin.connectorId) this.deliver(existing);
  }

  // ---- changes from elsewhere ------------------------------------------------------------------

  private message(text: string): void {
    if (this.state === 'closed') return;
    const decoded = decodeMessage(text, this.options.knownConnector);
    if (!decoded.ok) return this.invalid('message', this.keys.channel, decoded.reason);
    if (decoded.value.from === this.instanceId) return;
    const change = decoded.value.change;
    if (change.kind === 'pin') this.keepAlive.writtenElsewhere(change.key, this.now());
    this.deliver(change);
  }

  private deliver(change: StateChange): void {
    if (change.kind === 'operator-state') this.noteOperator(change);
    for (const apply of this.remoteListeners) {
      try {
        apply(change);
      } catch (err) {
        this.options.logger.error({ err, kind: change.kind }, 'applying a change from the cluster store failed');
      }
    }
  }

  private noteOperator(change: OperatorStateRecord): void {
    const known = this.operatorLog.get(change.connectorId);
    if (!known || change.at >= known.at) this.operatorLog.set(change.connectorId, change);
  }

  // ---- reconcile ---------------------------------------------------------------------------------

  /**
   * After (re)connecting: read the cluster's operator state, then compare every local pin and
   * learned session with the stored one: write ours where the store has none (or an older or
   * broken one), adopt the stored one where it is newer. Messages missed while away are
   * covered by this too.
   */
  private async reconcile(): Promise<void> {
    if (this.reconciling || this.state === 'closed') return;
    this.reconciling = true;
    this.stats.reconciles++;
    const summary = { operatorAdopted: 0, operatorWritten: 0, written: 0, adopted: 0, invalid: 0 };
    try {
      const now = this.now();
      const local = [...this.options.localState(now)];
      const writes: Command[] = [];
      for (const c of local) if (c.kind === 'operator-state') this.noteOperator(c);
      await this.reconcileOperator([...this.operatorLog.values()], writes, summary);
      const keyed = local.filter((c) => c.kind !== 'operator-state' && c.kind !== 'unpin');
      for (let i = 0; i < keyed.length; i += RECONCILE_CHUNK) {
        await this.reconcileChunk(keyed.slice(i, i + RECONCILE_CHUNK), writes, summary, now);
        if (writes.length > 0) this.noteRefused(await this.conn.pipeline(writes.splice(0)));
      }
      if (writes.length > 0) this.noteRefused(await this.conn.pipeline(writes.splice(0)));
      await this.heartbeat();
      if ((this.state as StoreState) !== 'closed') this.setUp(summary);
    } catch (err) {
      this.lastError = (err as Error).message;
      if (this.state === 'starting') this.setDown(this.lastError);
    } finally {
      this.reconciling = false;
    }
    // What was published while reconciling: sent now, or dropped (counted) if reconciling failed.
    const state = this.state as StoreState; // changed by the awaits above
    if (state === 'up') void this.flush();
    else if (state !== 'closed') this.dropPending();
  }

  private async reconcileOperator(local: OperatorStateRecord[], writes: Command[], summary: Record<string, number>): Promise<void> {
    const [flat] = await this.conn.pipeline([['HGETALL', this.keys.operator]]);
    const stored = new Map<string, OperatorStateRecord>();
    if (Array.isArray(flat)) {
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const [field, text] = [flat[i], flat[i + 1]];
        if (typeof field !== 'string' || typeof text !== 'string') continue;
        const decoded = decodeOperatorState(field, text, this.options.knownConnector);
        if (decoded.ok) stored.set(field, decoded.value);
        else (this.invalid('operator', `${this.keys.operator} ${field}`, decoded.reason), summary.invalid!++);
      }
    }
    const mine = new Map(local.map((r) => [r.connectorId, r]));
    for (const [id, s] of stored) {
      const l = mine.get(id);
      if (!l || s.at > l.at) (this.deliver(s), summary.operatorAdopted!++);
    }
    for (const [id, l] of mine) {
      const s = stored.get(id);
      if (!s || l.at > s.at) {
        writes.push(...this.writeCommands(l, this.now()), this.announce(l));
        summary.operatorWritten!++;
      }
    }
  }

  private async reconcileChunk(records: StateChange[], writes: Command[], summary: Record<string, number>, now: number): Promise<void> {
    const queries = records.map((r) => queryOf(r));
    const replies = await this.conn.pipeline(queries.flatMap((q) => [['GET', this.keyOf(q)], ['PTTL', this.keyOf(q)]] as Command[]));
    records.forEach((local, i) => {
      const q = queries[i]!;
      const key = this.keyOf(q);
      const [text, pttl] = [replies[2 * i], replies[2 * i + 1]];
      if (local.kind === 'allocation-claimed') {
        if (text !== null) writes.push(...this.writeCommands(local, now));
        return;
      }
      const write = () => {
        // Stored with when it was decided (what a later conflict compares); announced as live now.
        const announced = local.kind === 'pin' ? { ...local, at: now } : local;
        writes.push(...this.writeCommands(local, now), this.announce(announced));
        if (local.kind === 'pin') this.keepAlive.written(local.key, now);
        summary.written!++;
      };
      if (text === null) return write();
      const decoded = typeof text === 'string' ? decodeValue(q, text, this.options.knownConnector) : { ok: false as const, reason: describeReply(text) };
      if (!decoded.ok) {
        this.invalid('reconcile', key, decoded.reason);
        summary.invalid!++;
        return write();
      }
      const stored = decoded.value;
      if (sameOwner(stored, local)) {
        if (local.kind === 'pin' && typeof pttl === 'number') this.keepAlive.observed(local.key, pttl, now);
        return;
      }
      const localWins = local.kind === 'pin' ? local.reason !== 'placed' && local.at > timeOf(stored) : timeOf(local) > timeOf(stored);
      if (localWins) return write();
      this.deliver(this.asLive(stored, pttl));
      summary.adopted!++;
    });
  }

  /**
   * The commands that store a change (publish, reconcile, a placed pin over garbage). Pins and
   * sessions live TTL + slack; an allocation until its connect tag expires, counted from now, so
   * one written late (reconciling) never outlives its tag — an expired one is not written.
   */
  private writeCommands(change: StateChange, now: number): Command[] {
    const px = String(this.keepAlive.storedTtlMs);
    switch (change.kind) {
      case 'pin':
      case 'cookie':
      case 'log-id':
        return [['SET', this.keyOf(queryOf(change)), encodeValue(change, this.instanceId), 'PX', px]];
      case 'unpin':
        return [['DEL', this.keys.pin(change.key)]];
      case 'allocation':
        return change.tagExpiresAt > now ? [['SET', this.keys.allocation(change.sni), encodeValue(change, this.instanceId), 'PX', String(change.tagExpiresAt - now)]] : [];
      case 'allocation-claimed':
        return [['PEXPIRE', this.keys.allocation(change.sni), px]];
      case 'operator-state':
        return [['HSET', this.keys.operator, change.connectorId, encodeValue(change, this.instanceId)]];
    }
  }

  /** The change as the other instances hear of it. */
  private announce(change: StateChange): Command {
    return ['PUBLISH', this.keys.channel, encodeMessage(this.instanceId, change)];
  }

  /** Where a write waits in `pending`: a newer write of the same record replaces it; a claim does not replace its allocation. */
  private pendingId(change: StateChange): string {
    switch (change.kind) {
      case 'operator-state':
        return `w:${this.keys.operator}:${change.connectorId}`;
      case 'allocation-claimed':
        return `x:${this.keys.allocation(change.sni)}`;
      default:
        return `w:${this.keyOf(queryOf(change))}`;
    }
  }

  /**
   * A stored pin as its owners should apply it: `at` becomes when it was last live, worked out
   * from the key's remaining lifetime (it is kept TTL + slack past the last flow anywhere), so the
   * local copy expires with the stored one, never later — and not at once when the pin is older
   * than the TTL but its client still has flows elsewhere. Sessions keep their times.
   */
  private asLive(record: StateChange, pttl: Reply): StateChange {
    if (record.kind !== 'pin' || typeof pttl !== 'number' || pttl <= 0) return record;
    const now = this.now();
    this.keepAlive.observed(record.key, pttl, now);
    return { ...record, at: Math.min(now, now + pttl - this.options.affinityTtlMs) };
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private keyOf(query: LookupQuery): string {
    switch (query.kind) {
      case 'pin':
        return this.keys.pin(query.key);
      case 'cookie':
      case 'log-id':
        return this.keys.session(query.kind, query.key);
      case 'allocation':
        return this.keys.allocation(query.sni);
    }
  }

  private counted(kind: string, result: LookupResult): undefined {
    this.stats.lookup(kind, result);
    return undefined;
  }

  private invalid(source: InvalidSource, key: string, reason: string): void {
    this.stats.invalidValue(source);
    let log = this.invalidLogs.get(source);
    if (!log) this.invalidLogs.set(source, (log = new RateLimitedLog(10_000)));
    log.maybe(this.now(), (suppressed) =>
      this.options.logger.warn(
        { code: ErrorCodes.CLUSTER_VALUE, source, key: key.slice(0, 200), reason, suppressed },
        `ignored a malformed value from the cluster store (${source}, ${key.slice(0, 200)}): ${reason}`,
      ),
    );
  }
}

function queryOf(change: StateChange): LookupQuery {
  switch (change.kind) {
    case 'pin':
    case 'unpin':
      return { kind: 'pin', key: change.key };
    case 'cookie':
    case 'log-id':
      return { kind: change.kind, key: change.key };
    case 'allocation':
    case 'allocation-claimed':
      return { kind: 'allocation', sni: change.sni };
    case 'operator-state':
      throw new Error('operator state is not keyed per record');
  }
}

function sameOwner(a: StateChange, b: StateChange): boolean {
  return 'connectorId' in a && 'connectorId' in b && a.connectorId === b.connectorId;
}

function timeOf(c: StateChange): number {
  return c.kind === 'allocation' ? c.learnedAt : c.at;
}

/** What a non-string reply was, for the log (a WRONGTYPE error on a key of another type, …). */
function describeReply(reply: unknown): string {
  if (reply instanceof Error) return `store answered ${reply.message.slice(0, 120)}`;
  return `not a string value (${Array.isArray(reply) ? 'array' : typeof reply})`;
}

/** The store did not answer within the bound (told apart from an error reply or a broken connection). */
class NoAnswer extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new NoAnswer(`no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}
