import { isIP } from 'node:net';
import { z } from 'zod';
import { DURATION_PATTERN, formatDuration, parseDuration } from '../util/duration.ts';
import { formatHostPort, isValidHost, parseHostPort, type HostPort } from '../util/address.ts';
import { isLoopbackHost } from '../admin/token.ts';

/**
 * The config schema. Strict everywhere: an unknown key is an error, because a misspelt key that
 * is silently ignored is how a proxy ends up running with a default nobody chose.
 * Durations are strings with a unit; they parse to milliseconds.
 */

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * Bounds of a duration key in ms. The floors stop typos (`5ms` for `5m`) and busy loops
 * (`health.interval: 0s` ran ~260 rounds a second); `zero` says what `0s` means where it is
 * allowed below the floor (one meaning per kind: "never" for idle timeouts, "off" for timers that
 * only cut clients).
 */
interface DurationBounds {
  min: number;
  max: number;
  zero?: string;
}

const duration = (what: string, bounds: DurationBounds) =>
  z
    .string({ error: `${what} must be a duration string such as "500ms", "5s", "2m" or "1h"` })
    .regex(DURATION_PATTERN, { error: (issue) => `"${String(issue.input)}" is not a duration; use a number with a unit: ms, s, m, h or d (e.g. "120s")` })
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === 0 && bounds.zero !== undefined) return 0;
      if (ms === undefined || ms < bounds.min || ms > bounds.max) {
        const zero = bounds.zero === undefined ? '' : `, or 0s (${bounds.zero})`;
        ctx.addIssue({ code: 'custom', message: `must be between ${formatDuration(bounds.min)} and ${formatDuration(bounds.max)}${zero}; got "${text}"` });
        return z.NEVER;
      }
      return ms;
    });

/** Every listener's idleTimeout: `0s` means never (a flow is closed only by either side). */
const IDLE_TIMEOUT: DurationBounds = { min: 100, max: 30 * DAY, zero: 'never' };

const hostPort = z
  .string({ error: 'must be a "host:port" string ("[v6]:port" for IPv6)' })
  // For editors (the JSON Schema); the transform below gives the precise error.
  .meta({ pattern: '^(\\[[0-9A-Fa-f:.]+\\]|[^:\\[\\]\\s]+):[0-9]{1,5}$', description: 'host:port ([v6]:port for IPv6)' })
  .transform((text, ctx): HostPort => {
    const parsed = parseHostPort(text);
    if ('error' in parsed) {
      ctx.addIssue({ code: 'custom', message: parsed.error });
      return z.NEVER;
    }
    return parsed;
  });

const port = z.number().int().min(1).max(65535);

export const CONNECTOR_STATES = ['active', 'drain', 'maint'] as const;
export type ConnectorState = (typeof CONNECTOR_STATES)[number];

// ---- Kernel data plane (issue 11; docs/kernel.md). Kept in one block so other config work merges cleanly.

export const DATA_PLANES = ['user', 'kernel', 'auto'] as const;
export type DataPlane = (typeof DATA_PLANES)[number];

/**
 * Who moves a 4172 listener's packets once a client is placed: `user` (default) relays them in
 * this process; `kernel` programs nftables (DNAT to the client's Connector, SNAT towards it,
 * conntrack carries the replies) and refuses to start when the kernel cannot do it; `auto` uses
 * the kernel when every precondition holds, else user space with one warning line.
 */
const dataPlane = z.enum(DATA_PLANES, { error: `must be one of ${DATA_PLANES.join(', ')}` }).default('user');

const ipLiteral = (family: 4 | 6) =>
  z.string().refine((text) => isIP(text) === family, { message: `must be an IPv${family} address (no brackets, no port)` });

/** The nftables side of `dataPlane: kernel`. */
const kernelDataPlane = z
  .strictObject({
    /** The one nftables table (family inet) pcoip-lb owns: created at start, replaced if stale, deleted at stop. */
    table: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]{0,30}$/, 'must be 1-31 letters, digits or "_", starting with a letter')
      .default('pcoip_lb'),
    /**
     * Source address of forwarded packets towards the Connectors (an address of this host on
     * their side), so their replies come back through this host and conntrack can undo the NAT.
     */
    snat: z
      .strictObject({
        ipv4: ipLiteral(4).optional(),
        ipv6: ipLiteral(6).optional(),
      })
      .prefault({}),
  })
  .prefault({});

/** Cross-key checks of the kernel data plane; called from configSchema's superRefine. */
interface KernelCheckInput {
  workers: 'auto' | number;
  listeners: { pcoipTcp?: { dataPlane: DataPlane; sniRouting: boolean } | undefined; pcoipUdp?: { dataPlane: DataPlane } | undefined };
  connectors: ReadonlyArray<{ address: string }>;
  kernel: { snat: { ipv4?: string | undefined; ipv6?: string | undefined } };
}

function checkKernelDataPlane(cfg: KernelCheckInput, ctx: z.RefinementCtx): void {
  const { pcoipTcp, pcoipUdp } = cfg.listeners;
  if (pcoipTcp && pcoipTcp.dataPlane !== 'user' && pcoipTcp.sniRouting) {
    ctx.addIssue({
      code: 'custom',
      path: ['listeners', 'pcoipTcp', 'dataPlane'],
      message: `${pcoipTcp.dataPlane} cannot be combined with sniRouting: the kernel forwards a connection before any ClientHello is seen (use dataPlane: user or sniRouting: false)`,
    });
  }
  const kernelAsked = [pcoipTcp, pcoipUdp].some((l) => l !== undefined && l.dataPlane !== 'user');
  if (kernelAsked && typeof cfg.workers === 'number' && cfg.workers > 1) {
    ctx.addIssue({
      code: 'custom',
      path: ['workers'],
      message: 'with dataPlane kernel or auto the kernel forwards the media and one process places the clients: use workers: 1 or auto',
    });
  }
  if (pcoipTcp?.dataPlane !== 'kernel' && pcoipUdp?.dataPlane !== 'kernel') return;
  // `auto` falls back at start instead; `kernel` must be possible with this config.
  const families = new Set<number>();
  cfg.connectors.forEach((c, i) => {
    const family = isIP(c.address);
    if (family === 0) {
      ctx.addIssue({ code: 'custom', path: ['connectors', i, 'address'], message: 'dataPlane: kernel needs an IP address here (nftables DNAT cannot resolve names)' });
    } else families.add(family);
  });
  for (const family of [4, 6] as const) {
    if (families.has(family) && cfg.kernel.snat[`ipv${family}`] === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['kernel', 'snat', `ipv${family}`],
        message: `dataPlane: kernel with IPv${family} Connectors needs the source address towards them (an address of this host on their side)`,
      });
    }
  }
}

// ---- end of the kernel data plane block

const tcpListenerFields = {
  bind: hostPort,
  /** How long to wait for the Connector to accept before giving up on the client's connection. */
  connectTimeout: duration('connectTimeout', { min: 100, max: 5 * MINUTE }).prefault('5s'),
  /** Open connections on this listener; past it new connections are closed at once (refused, logged). */
  maxConnections: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Open connections per client (affinity client key: an office behind one NAT is one client). */
  maxConnectionsPerClient: z.number().int().min(1).max(1_000_000).default(1000),
  /** Close a client that sent nothing this long after connecting (TLS clients speak first). "0s" disables. */
  firstByteTimeout: duration('firstByteTimeout', { min: 100, max: DAY, zero: 'off' }).prefault('10s'),
};

const pemFile = z.string().min(1, 'must be the path of a PEM file');

/**
 * `mode: terminate` makes the proxy the TLS server on 443 (so it can follow the broker exchange)
 * and re-encrypts to each Connector; `passthrough` (default) forwards TLS untouched.
 */
const brokerTls = z
  .strictObject({
    mode: z.enum(['passthrough', 'terminate']).default('passthrough'),
    /** PEM files; the certificate for a client's SNI is picked by SAN/CN, the first is the default. */
    certificates: z.array(z.strictObject({ cert: pemFile, key: pemFile })).min(1, 'list at least one { cert, key }').optional(),
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    /** How often the certificate files are checked for changes (new files apply to new handshakes). */
    reloadInterval: duration('reloadInterval', { min: 100, max: DAY }).prefault('10s'),
    upstream: z
      .strictObject({
        /** PEM bundle that signed the Connectors' certificates. */
        ca: pemFile.optional(),
        /** Skip verification of the Connectors' certificates (self-signed installs); warned at start-up. */
        insecure: z.boolean().default(false),
        /** Name to send as SNI and to verify against; default: the Connector's address when it is a name. */
        servername: z.string().refine(isValidHost, { message: 'must be a host name' }).optional(),
      })
      .optional(),
  })
  .superRefine((tls, ctx) => {
    if (tls.mode === 'passthrough') {
      for (const key of ['certificates', 'upstream'] as const) {
        if (tls[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'only used with mode: terminate (set mode: terminate or remove this key)' });
      }
      return;
    }
    if (!tls.certificates) ctx.addIssue({ code: 'custom', path: ['certificates'], message: 'mode: terminate needs at least one { cert, key } pair of PEM files' });
    const up = tls.upstream;
    if (!up || (up.ca === undefined && !up.insecure)) {
      ctx.addIssue({
        code: 'custom',
        path: up ? ['upstream'] : [],
        message: 'mode: terminate re-encrypts to the Connectors: set upstream.ca (PEM that signed their certificates) or upstream.insecure: true (self-signed Connectors, no verification)',
      });
    } else if (up.ca !== undefined && up.insecure) {
      ctx.addIssue({ code: 'custom', path: ['upstream', 'insecure'], message: 'upstream.ca verifies and upstream.insecure: true skips verification: choose one' });
    }
  })
  .prefault({});

/**
 * Issue 14: load-balancer cookie stickiness (HP-template style: AWS ALB lb_cookie, GCP
 * GENERATED_COOKIE), terminate mode only, off by default. pcoip-lb adds one Set-Cookie naming the
 * Connector (opaque, HMAC-SHA256) and routes by it ahead of JSESSIONID. Keys: one per line of
 * keyFile, or comma/space separated in the environment variable keyEnv; the first signs, all verify.
 */
const lbCookie = z
  .strictObject({
    enabled: z.boolean().default(false),
    name: z
      .string()
      .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/, 'must be a cookie name: 1-64 token characters (letters, digits, ! # $ % & \' * + - . ^ _ ` | ~)')
      .refine((n) => n.toUpperCase() !== 'JSESSIONID', { message: "must differ from the Connectors' JSESSIONID" })
      .default('PCOIPLB'),
    keyFile: z.string().min(1, 'must be the path of a file with one key per line').optional(),
    keyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
    /** Max-Age of the cookie, and how old a cookie may be to be honoured. */
    maxAge: duration('maxAge', { min: MINUTE, max: 7 * DAY }).prefault('1h'),
  })
  .superRefine((c, ctx) => {
    if (c.keyFile !== undefined && c.keyEnv !== undefined) ctx.addIssue({ code: 'custom', path: ['keyEnv'], message: 'set one of keyFile or keyEnv, not both' });
    else if (c.enabled && c.keyFile === undefined && c.keyEnv === undefined) ctx.addIssue({ code: 'custom', path: ['enabled'], message: 'lbCookie needs its HMAC keys: set keyFile (one key per line) or keyEnv (an environment variable)' });
  })
  .prefault({});

const brokerListener = z.strictObject({
  ...tcpListenerFields,
  /** Idle broker connections are short HTTP keep-alives; 5 minutes is generous. */
  idleTimeout: duration('idleTimeout', IDLE_TIMEOUT).prefault('5m'),
  tls: brokerTls,
  /** HTTP/1.1 limits, applied when tls.mode is terminate (the proxy then reads the requests). */
  http: z
    .strictObject({
      maxHeaderBytes: z.number().int().min(1024).max(1_048_576).default(16_384),
      maxHeaderCount: z.number().int().min(8).max(1000).default(100),
      /** A client must finish sending a request's headers within this (slow senders are cut). */
      headerTimeout: duration('headerTimeout', { min: 100, max: 10 * MINUTE }).prefault('10s'),
      // --- issue 14: slow bodies and silent Connectors ---
      /** A request body that brings no byte for this long (while pcoip-lb reads) gets 408. "0s": off. */
      bodyTimeout: duration('bodyTimeout', { min: 100, max: 10 * MINUTE, zero: 'off' }).prefault('10s'),
      /** A Connector that sends no byte of its answer this long after a fully sent request: 504. "0s": off. */
      responseTimeout: duration('responseTimeout', { min: 100, max: HOUR, zero: 'off' }).prefault('30s'),
    })
    .prefault({}),
  /**
   * Experimental, off by default: rewrite allocate-resource-resp's target to `publicAddress` and a
   * port per Connector, each served by its own 4172 TCP+UDP listener (no affinity needed).
   * Unverified: whether real clients honour a port other than 4172.
   */
  rewriteTarget: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** The address clients dial (the proxy's public address). */
      publicAddress: z.string().refine(isValidHost, { message: 'must be an IP address or host name' }).optional(),
      /** Where the per-Connector listeners bind. */
      bindAddress: z.string().refine(isValidHost, { message: 'must be an IP address or host name' }).default('0.0.0.0'),
      /** Connector id → public port (TCP and UDP). 0 picks a free port (tests). */
      ports: z.record(z.string(), z.number().int().min(0).max(65535)).default({}),
    })
    .prefault({}),
  lbCookie,
});

const pcoipTcpListener = z.strictObject({
  ...tcpListenerFields,
  /** The 4172/TCP control channel can be quiet for long stretches of a healthy session. */
  idleTimeout: duration('idleTimeout', IDLE_TIMEOUT).prefault('1h'),
  /**
   * Experimental, unverified with real clients (docs/pcoip-protocol.md): peek at the TLS ClientHello and route
   * by an SNI learned from the broker exchange ahead of address affinity. Needs broker terminate.
   */
  sniRouting: z.boolean().default(false),
  /** See DATA_PLANES (kernel data plane block). */
  dataPlane,
});

const pcoipUdpListener = z.strictObject({
  bind: hostPort,
  /** PCoIP sessions die after 30–60 s of silence, so anything below 60 s would cut live sessions. */
  idleTimeout: duration('idleTimeout', IDLE_TIMEOUT).prefault('120s'),
  /** Cap on concurrent UDP flows; a new flow past it is refused and logged. */
  maxFlows: z.number().int().min(1).max(10_000_000).default(100_000),
  /** Cap on concurrent UDP flows per client (affinity client key): stops a flood of new source ports. */
  maxFlowsPerClient: z.number().int().min(1).max(10_000_000).default(1000),
  /**
   * SO_RCVBUF (bytes) of the listening socket and of each flow's upstream socket. The kernel
   * default (~208 KB, < 5 ms of a busy pool) overflows on an event-loop pause; Linux caps it at
   * net.core.rmem_max.
   */
  recvBufferSize: z.number().int().min(65_536).max(1_073_741_824).default(4 * 1024 * 1024),
  /** SO_SNDBUF (bytes) of the same sockets; unset: the OS default (capped by net.core.wmem_max). */
  sendBufferSize: z.number().int().min(65_536).max(1_073_741_824).optional(),
  /**
   * Latency budget of each receive queue: each buffer follows what its socket receives in this
   * long (within 256 KiB..recvBufferSize; up at once, down after a few seconds of lower rate),
   * so a stall turns into at most about this much delay, and loss beyond it, instead of up to
   * recvBufferSize of delay. 0s: off (fixed recvBufferSize).
   */
  maxQueueDelay: duration('maxQueueDelay', { min: 5, max: 10 * SECOND, zero: 'off' }).prefault('50ms'),
  /** See DATA_PLANES (kernel data plane block). */
  dataPlane,
  /** Per-flow media quality from the clear ESP header of each datagram (loss, reordering, jitter, rekeys; docs/sessions.md). */
  mediaQuality: z.boolean().default(true),
  /**
   * Experimental, unverified with real Connectors, off by default (docs/sessions.md): a new flow
   * from an address with live sessions on several Connectors is sent to each (newest first, at
   * most `candidates`, `datagrams` each) and pinned to the one that answers within `deadline`.
   */
  probe: z
    .strictObject({
      enabled: z.boolean().default(false),
      candidates: z.number().int().min(2).max(8).default(3),
      datagrams: z.number().int().min(1).max(16).default(4),
      // Long enough for a round trip to a Connector, short enough that media waiting for it is not stale.
      deadline: duration('deadline', { min: 50, max: 10_000 }).prefault('500ms'),
    })
    .prefault({}),
});

const connector = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be 1-63 characters of letters, digits, ".", "_" or "-"'),
  address: z.string().refine(isValidHost, { message: 'must be an IPv4/IPv6 address (no brackets, no port) or a host name' }),
  ports: z
    .strictObject({
      broker: port.default(443),
      pcoip: port.default(4172),
    })
    .prefault({}),
  weight: z.number().int().min(1).max(1000).default(1),
  state: z.enum(CONNECTOR_STATES).default('active'),
});

/** `10%` → 0.1. Jitter is a share of the interval, so it scales with it. */
const percent = (what: string, max: number) =>
  z.string({ error: `${what} must be a percentage string such as "10%"` }).meta({ pattern: '^\\d+(\\.\\d+)?%$' }).transform((text, ctx) => {
    const match = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
    const value = match ? Number(match[1]) : NaN;
    if (!(value >= 0 && value <= max)) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a percentage between 0% and ${max}%` });
      return z.NEVER;
    }
    return value / 100;
  });

export const HEALTH_CHECKS = ['broker', 'pcoip'] as const;
const DEFAULT_HEALTH_TIMEOUT_MS = 2000;
export type HealthCheckName = (typeof HEALTH_CHECKS)[number];

/**
 * Active checks (HTTPS GET /health on the broker port, TCP connect to the pcoip port) and
 * passive detection (failed connects of real clients). Defaults follow HAProxy's rise/fall
 * model with a quicker interval than HP's load-balancer templates (30 s), so a broken Connector
 * stops getting new users within seconds.
 */
const health = z
  .strictObject({
    interval: duration('interval', { min: 100, max: DAY }).prefault('5s'),
    /**
     * A check that has not finished by then has failed (a hung Connector is a down Connector).
     * Default: 2s, or the interval when that is shorter (so `interval: 1s` alone stays valid).
     */
    timeout: duration('timeout', { min: 10, max: HOUR }).optional(),
    /** Consecutive passing rounds before a down Connector is up again. */
    rise: z.number().int().min(1).max(100).default(2),
    /** Consecutive failing rounds before an up Connector is down. */
    fall: z.number().int().min(1).max(100).default(3),
    /** Each round starts interval ± this share of it, so checks of a large pool do not all fire at once. */
    jitter: percent('jitter', 50).prefault('10%'),
    /** Which checks run; a Connector is up only when all of them pass. [] turns active checks off. */
    checks: z
      .array(z.enum(HEALTH_CHECKS))
      .default(['broker', 'pcoip'])
      .refine((list) => new Set(list).size === list.length, { message: 'list each check once' }),
    brokerPath: z.string().regex(/^\/[\x21-\x7e]*$/, 'must be a URL path starting with "/"').default('/health'),
    tls: z
      .strictObject({
        /** PEM file with the CA (or the self-signed certificate) to verify Connectors against. Unset: no verification. */
        ca: z.string().min(1).optional(),
      })
      .prefault({}),
    passive: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** This many failed connects (refused or timed out) within `window` mark a Connector down. */
        failures: z.number().int().min(1).max(10_000).default(3),
        window: duration('window', { min: 100, max: DAY }).prefault('10s'),
      })
      .prefault({}),
    /** A pinned client whose Connector is down: `repin` places its new flows elsewhere; `keep` refuses them. */
    onDown: z.enum(['repin', 'keep']).default('repin'),
    /** Close the established flows of a Connector when it goes down (off: flows may still be alive). */
    closeFlowsOnDown: z.boolean().default(false),
  })
  .transform((h) => ({ ...h, timeout: h.timeout ?? Math.min(DEFAULT_HEALTH_TIMEOUT_MS, h.interval) }))
  .superRefine((h, ctx) => {
    // A check still running when the next round is due would stretch every round, and with it
    // the promised fall × interval to take a hung Connector out (HAProxy's default is timeout = inter).
    if (h.timeout > h.interval) {
      ctx.addIssue({ code: 'custom', path: ['timeout'], message: `must not be longer than health.interval (${formatDuration(h.interval)}); got ${formatDuration(h.timeout)}` });
    }
  })
  .prefault({});

const adminToken = z
  .strictObject({
    /** File whose content (trimmed) is the bearer token. */
    file: z.string().min(1).optional(),
    /** Environment variable holding the bearer token. */
    env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
  })
  .refine((t) => (t.file === undefined) !== (t.env === undefined), { message: 'set exactly one of file or env' });

/** The admin HTTP server: /status, /metrics, drain/enable/maint, the live page. */
const admin = z
  .strictObject({
    enabled: z.boolean().default(true),
    bind: hostPort.prefault('127.0.0.1:8404'),
    /** Required when `bind` is not a loopback address; every request but /healthz must then carry it. */
    token: adminToken.optional(),
  })
  .superRefine((a, ctx) => {
    // Checked here (not only when the server starts) so check-config reports it with every other
    // error, at its line. The admin API can drain the whole pool.
    if (a.enabled && !a.token && !isLoopbackHost(a.bind.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['bind'],
        message: `${formatHostPort(a.bind.host, a.bind.port)} is not a loopback address: set admin.token.file or admin.token.env (a bearer token of at least 16 characters), or bind the admin server to 127.0.0.1`,
      });
    }
  })
  .prefault({});

/**
 * `cluster:` — several pcoip-lb instances as one pool through a Redis (or Valkey) store
 * (docs/ha.md). Absent: one instance, no store, nothing changes. The password never appears in
 * the URL (it would end up in logs and `ps`): it comes from a file or an environment variable.
 */
const REDIS_URL_SCHEMES = ['redis:', 'rediss:'];
const redisUrl = z.string({ error: 'must be a redis:// or rediss:// URL' }).superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a URL; use redis://host:port/db or rediss://host:port/db` });
    return;
  }
  if (!REDIS_URL_SCHEMES.includes(url.protocol)) ctx.addIssue({ code: 'custom', message: `scheme ${url.protocol} is not redis: or rediss: (TLS)` });
  else if (!url.hostname) ctx.addIssue({ code: 'custom', message: 'names no host (redis://host:port)' });
  if (url.password) ctx.addIssue({ code: 'custom', message: 'must not carry a password (it would be logged); use cluster.redis.password.file or .env' });
  if (!/^(\/\d{0,2})?$/.test(url.pathname)) ctx.addIssue({ code: 'custom', message: `path "${url.pathname}" is not a database number (/0 … /99)` });
  if (url.search || url.hash) ctx.addIssue({ code: 'custom', message: 'query strings and fragments are not supported; use the cluster.redis keys' });
});

const cluster = z
  .strictObject({
    /** This instance's name in the store (heartbeats, the cluster view). Default: the host name. */
    instanceId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, 'must be 1-253 characters of letters, digits, ".", "_" or "-"').optional(),
    /** Every key and channel starts with `<keyPrefix>:`, so several pools can share one Redis. */
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/, 'must be 1-100 characters of letters, digits, ".", "_", "-" or ":"')
      .refine((p) => !p.endsWith(':'), { message: 'must not end with ":" (it is added)' })
      .default('pcoip-lb'),
    redis: z.strictObject({
      url: redisUrl,
      /** ACL user (Redis 6+); also accepted as redis://user@host. */
      username: z.string().min(1).optional(),
      /** ACL or requirepass password, from a file (trimmed) or an environment variable. */
      password: adminToken.optional(),
      /** rediss:// only: PEM CA bundle to verify the server with (default: the system CAs), or insecure: true. */
      tls: z
        .strictObject({
          ca: pemFile.optional(),
          servername: z.string().refine(isValidHost, { message: 'must be a host name' }).optional(),
          insecure: z.boolean().default(false),
        })
        .refine((t) => !(t.ca !== undefined && t.insecure), { message: 'ca verifies and insecure: true skips verification: choose one' })
        .optional(),
    }),
    timeouts: z
      .strictObject({
        /** Give up on one connection attempt after this (then retry with back-off). */
        connect: duration('connect', { min: 100, max: 60_000 }).prefault('2s'),
        /** A client's first flow waits at most this long for the store, then this instance decides alone. */
        lookup: duration('lookup', { min: 1, max: 5000 }).prefault('75ms'),
        /** How often this instance announces itself; missing 3 heartbeats in a row, it leaves the cluster view. */
        heartbeat: duration('heartbeat', { min: 100, max: 60_000 }).prefault('1s'),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    let url: URL | undefined;
    try {
      url = new URL(c.redis.url);
    } catch {
      return; // reported on redis.url
    }
    if (c.redis.tls && url.protocol !== 'rediss:') ctx.addIssue({ code: 'custom', path: ['redis', 'tls'], message: 'only used with a rediss:// URL' });
    if (c.redis.username !== undefined && url.username && decodeURIComponent(url.username) !== c.redis.username) {
      ctx.addIssue({ code: 'custom', path: ['redis', 'username'], message: 'differs from the user in redis.url; name it once' });
    }
  });
/** One message for every way `workers` can be wrong (zod would otherwise say "Too small" without naming auto). */
const WORKERS_ERROR = { error: 'must be "auto" or a whole number from 1 to 64' };

export const BALANCE_ALGORITHMS = ['maglev', 'rendezvous'] as const;
export type BalanceAlgorithm = (typeof BALANCE_ALGORITHMS)[number];

export const configSchema = z
  .strictObject({
    listeners: z
      .strictObject({
        broker: brokerListener.optional(),
        pcoipTcp: pcoipTcpListener.optional(),
        pcoipUdp: pcoipUdpListener.optional(),
      })
      .refine((l) => l.broker || l.pcoipTcp || l.pcoipUdp, { message: 'configure at least one of broker, pcoipTcp, pcoipUdp' }),
    connectors: z.array(connector).min(1, 'list at least one Connector').superRefine(rejectDuplicateTargets),
    balance: z
      .strictObject({
        algorithm: z.enum(BALANCE_ALGORITHMS).default('maglev'),
        /** Maglev lookup table size; must be prime. 65537 keeps imbalance < 1 % up to ~650 Connectors. */
        tableSize: z.number().int().min(101).max(1_000_003).default(65_537),
      })
      .prefault({}),
    affinity: z
      .strictObject({
        ipv4Prefix: z.number().int().min(0).max(32).default(32),
        ipv6Prefix: z.number().int().min(0).max(128).default(64),
        /** How long a client stays pinned after its last flow ends. */
        ttl: duration('ttl', { min: SECOND, max: 30 * DAY }).prefault('1h'),
        /**
         * Experimental, off by default (docs/sessions.md): users behind one shared address are
         * placed per session, not per address — logins spread by their session, 4172/TCP by the
         * learned SNI, UDP by the probe fan-out. Needs a terminating broker, sniRouting and the probe.
         */
        perSession: z.boolean().default(false),
      })
      .prefault({}),
    /** Where `start` writes its pid, so that `pcoip-lb reload` can signal it (SIGHUP). Not written when unset. */
    pidFile: z.string().min(1).optional(),
    /**
     * Data-plane processes sharing the listening ports (SO_REUSEPORT, Linux). "auto": one per
     * core. 1: everything in one process (no workers). See docs/multicore.md.
     */
    workers: z.union([z.literal('auto'), z.number().int(WORKERS_ERROR).min(1, WORKERS_ERROR).max(64, WORKERS_ERROR)], WORKERS_ERROR).default('auto'),
    health,
    admin,
    /** Several instances as one pool (docs/ha.md); absent: a single instance, no store. */
    cluster: cluster.optional(),
    shutdown: z
      .strictObject({
        /** On SIGTERM/SIGINT: stop accepting, let TCP and UDP flows finish for this long, then close them. */
        grace: duration('grace', { min: 0, max: HOUR }).prefault('10s'),
      })
      .prefault({}),
    logging: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
    /** The kernel data plane's nftables settings (used when a listener has dataPlane kernel or auto). */
    kernel: kernelDataPlane,
  })
  .superRefine((cfg, ctx) => {
    checkKernelDataPlane(cfg, ctx);
    const rewritePorts = cfg.listeners.broker?.rewriteTarget;
    if (typeof cfg.workers === 'number' && cfg.workers > 1 && rewritePorts?.enabled && Object.values(rewritePorts.ports).some((p) => p === 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['workers'],
        message: 'more than one worker needs fixed listeners.broker.rewriteTarget.ports (a port 0 would differ in every worker); set the ports or use workers: 1',
      });
    }
    const seen = new Map<string, number>();
    cfg.connectors.forEach((c, i) => {
      const first = seen.get(c.id);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['connectors', i, 'id'], message: `duplicate id "${c.id}" (also connectors[${first}])` });
      } else seen.set(c.id, i);
    });
    const { broker, pcoipTcp } = cfg.listeners;
    rejectTcpBindConflicts(cfg, ctx);
    if (pcoipTcp?.sniRouting && broker?.tls.mode !== 'terminate') {
      ctx.addIssue({ code: 'custom', path: ['listeners', 'pcoipTcp', 'sniRouting'], message: 'needs listeners.broker.tls.mode: terminate (SNI values are learned from the broker exchange)' });
    }
    if (cfg.affinity.perSession) {
      const missing = [
        broker?.tls.mode !== 'terminate' ? 'listeners.broker.tls.mode: terminate (sessions are learned from the broker exchange)' : undefined,
        !pcoipTcp?.sniRouting ? 'listeners.pcoipTcp.sniRouting: true (4172/TCP follows its session by SNI)' : undefined,
        !cfg.listeners.pcoipUdp?.probe.enabled ? 'listeners.pcoipUdp.probe.enabled: true (4172/UDP finds its session by the probe)' : undefined,
      ].filter((m) => m !== undefined);
      if (missing.length > 0) ctx.addIssue({ code: 'custom', path: ['affinity', 'perSession'], message: `needs ${missing.join(', and ')}` });
    }
    const rewrite = broker?.rewriteTarget;
    if (rewrite?.enabled) {
      const at = (...p: (string | number)[]) => ['listeners', 'broker', 'rewriteTarget', ...p];
      if (broker?.tls.mode !== 'terminate') ctx.addIssue({ code: 'custom', path: at('enabled'), message: 'needs listeners.broker.tls.mode: terminate (the broker answers are rewritten)' });
      if (!rewrite.publicAddress) ctx.addIssue({ code: 'custom', path: at('publicAddress'), message: 'required when rewriteTarget is enabled: the address clients dial' });
      const ids = new Set(cfg.connectors.map((c) => c.id));
      for (const id of ids) if (rewrite.ports[id] === undefined) ctx.addIssue({ code: 'custom', path: at('ports'), message: `no port for Connector "${id}" (every Connector needs one)` });
      const used = new Map<number, string>();
      for (const [id, p] of Object.entries(rewrite.ports)) {
        if (!ids.has(id)) ctx.addIssue({ code: 'custom', path: at('ports', id), message: `no Connector has id "${id}"` });
        const other = used.get(p);
        if (p !== 0 && other !== undefined) ctx.addIssue({ code: 'custom', path: at('ports', id), message: `port ${p} is also used for "${other}"` });
        used.set(p, id);
      }
    }
    // Issue 14: the LB cookie is added by the terminating listener only.
    if (broker?.lbCookie.enabled && broker.tls.mode !== 'terminate') {
      ctx.addIssue({ code: 'custom', path: ['listeners', 'broker', 'lbCookie', 'enabled'], message: 'needs listeners.broker.tls.mode: terminate (the cookie is added to HTTP responses)' });
    }
    if (!isPrime(cfg.balance.tableSize)) {
      ctx.addIssue({ code: 'custom', path: ['balance', 'tableSize'], message: `${cfg.balance.tableSize} is not prime (try 65537)` });
    }
  });

export type Config = z.output<typeof configSchema>;
export type ConnectorConfig = Config['connectors'][number];
export type ListenersConfig = Config['listeners'];
export type BrokerListenerConfig = NonNullable<ListenersConfig['broker']>;
export type BrokerTlsConfig = BrokerListenerConfig['tls'];
export type HealthConfig = Config['health'];
export type AdminConfig = Config['admin'];
export type ClusterConfig = NonNullable<Config['cluster']>;

/**
 * Two TCP servers cannot listen on overlapping addresses (Linux refuses a wildcard and a specific
 * address on one port, too): catch it here, with both keys named, rather than as EADDRINUSE at start.
 */
function rejectTcpBindConflicts(cfg: z.output<typeof configSchema>, ctx: z.RefinementCtx): void {
  const binds: Array<{ key: string; path: string[]; bind: HostPort }> = [];
  if (cfg.listeners.broker) binds.push({ key: 'listeners.broker.bind', path: ['listeners', 'broker', 'bind'], bind: cfg.listeners.broker.bind });
  if (cfg.listeners.pcoipTcp) binds.push({ key: 'listeners.pcoipTcp.bind', path: ['listeners', 'pcoipTcp', 'bind'], bind: cfg.listeners.pcoipTcp.bind });
  if (cfg.admin.enabled) binds.push({ key: 'admin.bind', path: ['admin', 'bind'], bind: cfg.admin.bind });
  binds.forEach((b, i) => {
    const earlier = binds.slice(0, i).find((a) => tcpBindsOverlap(a.bind, b.bind));
    if (earlier) {
      const same = earlier.bind.host === b.bind.host ? 'same TCP address as' : 'overlaps the TCP address of';
      ctx.addIssue({ code: 'custom', path: b.path, message: `${same} ${earlier.key} (${formatHostPort(earlier.bind.host, earlier.bind.port)})` });
    }
  });
}

function tcpBindsOverlap(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port || a.port === 0) return false;
  if (a.host === b.host || a.host === '::' || b.host === '::') return true;
  const v4Wildcard = (x: HostPort, y: HostPort) => x.host === '0.0.0.0' && isIP(y.host) === 4;
  return v4Wildcard(a, b) || v4Wildcard(b, a);
}

/**
 * Two entries for one Connector (same address and broker or pcoip port) would split its clients'
 * affinity across two ids and double its share of new clients.
 */
function rejectDuplicateTargets(list: Array<{ id: string; address: string; ports: { broker: number; pcoip: number } }>, ctx: z.RefinementCtx): void {
  list.forEach((c, i) => {
    const address = c.address.toLowerCase();
    for (const port of ['broker', 'pcoip'] as const) {
      const j = list.findIndex((o, k) => k < i && o.address.toLowerCase() === address && o.ports[port] === c.ports[port]);
      if (j >= 0) {
        ctx.addIssue({ code: 'custom', path: [i, 'address'], message: `same address and ${port} port (${formatHostPort(c.address, c.ports[port])}) as connectors[${j}] ("${list[j]!.id}"): list each Connector once` });
        return;
      }
    }
  });
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}
