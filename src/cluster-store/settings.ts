import { hostname } from 'node:os';
import type { AnyRedisClientOptions } from '@redis/client';
import type { ClusterConfig } from '../config/schema.ts';
import { readCaFile, readSecret } from '../config/referenced.ts';
import { ErrorCodes } from '../errors.ts';

/**
 * The validated `cluster:` section turned into what the store client needs: secrets read from
 * their file or environment variable (never logged: `describe()` is what logs show), the CA
 * file read, the instance id defaulted to the host name.
 */
export interface StoreSettings {
  instanceId: string;
  keyPrefix: string;
  /** The URL as configured (it carries no password: the schema refuses one). */
  url: string;
  username: string | undefined;
  password: string | undefined;
  tls: { ca: string | undefined; servername: string | undefined; insecure: boolean } | undefined;
  connectTimeoutMs: number;
  lookupTimeoutMs: number;
  heartbeatMs: number;
}

export function resolveStoreSettings(cfg: ClusterConfig, env: NodeJS.ProcessEnv = process.env, host: () => string = hostname): StoreSettings {
  const url = new URL(cfg.redis.url);
  const username = cfg.redis.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
  return {
    instanceId: cfg.instanceId ?? defaultInstanceId(host()),
    keyPrefix: cfg.keyPrefix,
    url: cfg.redis.url,
    username,
    password: cfg.redis.password ? readStorePassword(cfg, env) : undefined,
    tls: url.protocol === 'rediss:' ? { ca: cfg.redis.tls?.ca ? readCaFile(cfg.redis.tls.ca, 'cluster.redis.tls.ca', ErrorCodes.CLUSTER_CONFIG) : undefined, servername: cfg.redis.tls?.servername, insecure: cfg.redis.tls?.insecure ?? false } : undefined,
    connectTimeoutMs: cfg.timeouts.connect,
    lookupTimeoutMs: cfg.timeouts.lookup,
    heartbeatMs: cfg.timeouts.heartbeat,
  };
}

/** The host name as an instance id: the characters the schema allows, at most 253. */
export function defaultInstanceId(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 253);
  return cleaned === '' ? 'pcoip-lb' : cleaned;
}

/** For logs and /status: scheme, user, host, port and database; never the password. */
export function describeStore(s: StoreSettings): string {
  const url = new URL(s.url);
  url.username = s.username ? encodeURIComponent(s.username) : '';
  url.password = '';
  return url.toString().replace(/\/$/, '');
}

/** Back-off between reconnect attempts: 100 ms doubling to 5 s, ±20 % so instances do not retry in step. */
export function reconnectDelay(retries: number, random: () => number = Math.random): number {
  const base = Math.min(5000, 100 * 2 ** Math.min(retries, 6));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export function clientOptions(s: StoreSettings): AnyRedisClientOptions {
  const url = new URL(s.url);
  url.username = '';
  const socketCommon = { connectTimeout: s.connectTimeoutMs, reconnectStrategy: (retries: number) => reconnectDelay(retries) };
  return {
    url: url.toString(),
    RESP: 2,
    ...(s.username !== undefined ? { username: s.username } : {}),
    ...(s.password !== undefined ? { password: s.password } : {}),
    name: `pcoip-lb:${s.instanceId}`,
    // A command issued while the store is away fails at once: the data plane never queues behind it.
    disableOfflineQueue: true,
    disableClientInfo: true,
    socket: s.tls
      ? {
          ...socketCommon,
          tls: true,
          ...(s.tls.ca ? { ca: s.tls.ca } : {}),
          ...(s.tls.servername ? { servername: s.tls.servername } : {}),
          rejectUnauthorized: !s.tls.insecure,
        }
      : socketCommon,
  };
}

/** `cluster.redis.password` from its file or environment variable (start and preflight read it alike). */
export function readStorePassword(cfg: ClusterConfig, env: NodeJS.ProcessEnv): string {
  return readSecret(cfg.redis.password!, 'cluster.redis.password', 'password', ErrorCodes.CLUSTER_CONFIG, env).value;
}
