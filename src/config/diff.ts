import type { Config, ConnectorConfig } from './schema.ts';
import { formatKeyPath } from './load.ts';

/**
 * What a reload would change, worked out from two validated configs. Pure: the App applies the
 * result. Every changed leaf is classified as
 * - restart-required: the running value stays (listener binds, listeners added or removed,
 *   affinity prefixes — which would re-key every client and so move pinned clients — and the
 *   keys named in RESTART_ONLY);
 * - a listener setting (timeouts, limits), applied to that listener;
 * - a Connector added, removed or changed (by id, never by list position);
 * - anything else (balance, affinity.ttl, shutdown, logging, health…), applied by the App.
 */
export interface RestartRequired {
  /** Key path, e.g. `listeners.broker.bind`. */
  path: string;
  reason: string;
}

export interface ConfigDiff {
  restartRequired: RestartRequired[];
  /** Changed settings per listener (key names), for listeners running before and after. */
  listeners: Record<string, string[]>;
  connectors: { added: string[]; removed: string[]; changed: Array<{ id: string; keys: string[] }> };
  /** Other changed key paths that are applied (balance.*, affinity.ttl, logging.level, …). */
  applied: string[];
}

/** Top-level sections or paths (prefix match) that only take effect at start. */
const RESTART_ONLY: ReadonlyArray<{ prefix: string; reason: string }> = [
  { prefix: 'affinity.perSession', reason: 'per-session placement is wired into the listeners at start' },
  { prefix: 'affinity.ipv4Prefix', reason: 'changing a client-key prefix re-keys every client and would move pinned clients' },
  { prefix: 'affinity.ipv6Prefix', reason: 'changing a client-key prefix re-keys every client and would move pinned clients' },
  { prefix: 'workers', reason: 'the number of worker processes is fixed at start' },
  { prefix: 'admin', reason: 'the admin server is started (bound, token read) at start' },
  { prefix: 'pidFile', reason: 'the pid file is written at start' },
  { prefix: 'cluster', reason: 'the cluster store connection is made at start' },
  { prefix: 'kernel.table', reason: 'the nftables table is created under its name at start' },
];

/** Listener keys (first path segment) that only take effect when the listener is created. */
const LISTENER_RESTART_KEYS: Readonly<Record<string, string>> = {
  bind: 'a listening address is bound at start',
  tls: 'the TLS mode and settings are fixed when the listener is created',
  http: 'the terminating listener is configured at start',
  rewriteTarget: 'the per-Connector listeners are bound at start',
  sniRouting: 'the SNI router is attached when the listener is created',
  probe: 'the UDP probe fan-out is attached when the listener is created',
  dataPlane: 'the data plane (user space or kernel) is chosen at start',
};

/** Settings of a terminating broker listener applied on reload (the rest is fixed when it is created). */
const TERMINATE_RELOADABLE_KEYS: ReadonlySet<string> = new Set(['maxConnections', 'maxConnectionsPerClient', 'firstByteTimeout']);

export function diffConfig(from: Config, to: Config): ConfigDiff {
  const diff: ConfigDiff = { restartRequired: [], listeners: {}, connectors: diffConnectors(from.connectors, to.connectors), applied: [] };
  const a = from as unknown as Record<string, unknown>;
  const b = to as unknown as Record<string, unknown>;
  for (const section of unionKeys(a, b)) {
    if (section === 'connectors') continue;
    if (section === 'listeners') {
      diffListeners(from.listeners as Record<string, unknown>, to.listeners as Record<string, unknown>, diff);
      continue;
    }
    for (const path of changedPaths(a[section], b[section], [section])) {
      const rule = RESTART_ONLY.find((r) => path === r.prefix || path.startsWith(`${r.prefix}.`) || path.startsWith(`${r.prefix}[`));
      if (!rule) diff.applied.push(path);
      else if (!diff.restartRequired.some((r) => r.path === rule.prefix)) diff.restartRequired.push({ path: rule.prefix, reason: rule.reason });
    }
  }
  return diff;
}

export function isEmptyDiff(diff: ConfigDiff): boolean {
  const c = diff.connectors;
  return (
    diff.restartRequired.length === 0 &&
    Object.keys(diff.listeners).length === 0 &&
    c.added.length + c.removed.length + c.changed.length === 0 &&
    diff.applied.length === 0
  );
}

/**
 * The config that actually runs after the reload: `to`, except that every restart-required
 * value keeps its running value from `from` (a listener that was added stays unbound, one that
 * was removed keeps running, a changed bind keeps its old address).
 */
export function effectiveConfig(from: Config, to: Config, diff: ConfigDiff): Config {
  const out = structuredClone(to) as unknown as Record<string, unknown>;
  const running = from as unknown as Record<string, unknown>;
  for (const { path } of diff.restartRequired) {
    const keys = splitPath(path);
    setIn(out, keys, getIn(running, keys));
  }
  return out as unknown as Config;
}

function diffListeners(from: Record<string, unknown>, to: Record<string, unknown>, diff: ConfigDiff): void {
  for (const name of unionKeys(from, to)) {
    const before = from[name];
    const after = to[name];
    if (before === undefined || after === undefined) {
      diff.restartRequired.push({
        path: `listeners.${name}`,
        reason: before === undefined ? 'a new listener is bound at start' : 'a listener is only closed at shutdown',
      });
      continue;
    }
    const keys: string[] = [];
    // The terminating broker listener takes its settings at start except its connection limits
    // (rotated certificate files are picked up without a restart: see tls.reloadInterval).
    const terminating = name === 'broker' && (before as { tls?: { mode?: string } }).tls?.mode === 'terminate';
    for (const path of changedPaths(before, after, ['listeners', name])) {
      const key = path.slice(`listeners.${name}.`.length);
      const top = key.split('.')[0]!;
      const reason =
        terminating && !TERMINATE_RELOADABLE_KEYS.has(top) ? 'the terminating broker listener is configured at start' : LISTENER_RESTART_KEYS[top];
      if (reason) {
        const restartPath = `listeners.${name}.${top}`;
        if (!diff.restartRequired.some((r) => r.path === restartPath)) diff.restartRequired.push({ path: restartPath, reason });
      } else keys.push(key);
    }
    if (keys.length > 0) diff.listeners[name] = keys;
  }
}

function diffConnectors(from: readonly ConnectorConfig[], to: readonly ConnectorConfig[]): ConfigDiff['connectors'] {
  const before = new Map(from.map((c) => [c.id, c]));
  const after = new Map(to.map((c) => [c.id, c]));
  const result: ConfigDiff['connectors'] = { added: [], removed: [], changed: [] };
  for (const c of to) {
    const old = before.get(c.id);
    if (!old) result.added.push(c.id);
    else {
      const keys = changedPaths(old, c, []);
      if (keys.length > 0) result.changed.push({ id: c.id, keys });
    }
  }
  for (const c of from) if (!after.has(c.id)) result.removed.push(c.id);
  return result;
}

/** Key paths of the leaves that differ between two plain JSON-like values. */
export function changedPaths(a: unknown, b: unknown, path: PropertyKey[]): string[] {
  if (Object.is(a, b)) return [];
  const bothObjects = isPlainObject(a) && isPlainObject(b);
  const bothArrays = Array.isArray(a) && Array.isArray(b);
  if (!bothObjects && !bothArrays) return [formatKeyPath(path)];
  if (bothArrays && a.length !== b.length) return [formatKeyPath(path)];
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const keys = bothArrays ? [...(a as unknown[]).keys()] : unionKeys(ao, bo);
  return keys.flatMap((k) => changedPaths(ao[k as keyof typeof ao], bo[k as keyof typeof bo], [...path, k]));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function unionKeys(a: unknown, b: unknown): string[] {
  const keys = new Set<string>();
  if (isPlainObject(a)) for (const k of Object.keys(a)) keys.add(k);
  if (isPlainObject(b)) for (const k of Object.keys(b)) keys.add(k);
  return [...keys];
}

/** `listeners.broker.bind` → ['listeners','broker','bind'] (paths here never contain list indexes). */
function splitPath(path: string): string[] {
  return path.split('.');
}

function getIn(obj: Record<string, unknown>, keys: string[]): unknown {
  let cur: unknown = obj;
  for (const k of keys) cur = isPlainObject(cur) ? cur[k] : undefined;
  return cur;
}

function setIn(obj: Record<string, unknown>, keys: string[], value: unknown): void {
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    if (!isPlainObject(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1]!;
  if (value === undefined) delete cur[last];
  else cur[last] = structuredClone(value);
}

/**
 * The Connector list to hand the pool on reload. A Connector whose `state` the new config does
 * not change keeps the state it has at run time, so a drain or maint set through the admin
 * API survives a reload that edits something else; a state the config changes is applied.
 */
export function connectorsWithRuntimeState(
  from: readonly ConnectorConfig[],
  to: readonly ConnectorConfig[],
  runtimeState: (id: string) => ConnectorConfig['state'] | undefined,
): ConnectorConfig[] {
  const before = new Map(from.map((c) => [c.id, c]));
  return to.map((c) => {
    const old = before.get(c.id);
    const current = runtimeState(c.id);
    return old && old.state === c.state && current !== undefined && current !== c.state ? { ...c, state: current } : c;
  });
}
