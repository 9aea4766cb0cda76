import { z } from 'zod';
import { parseDuration } from '../util/duration.ts';
import { isValidHost, parseHostPort, type HostPort } from '../util/address.ts';

/**
 * The config schema. Strict everywhere: an unknown key is an error, because a misspelt key that
 * is silently ignored is how a proxy ends up running with a default nobody chose.
 * Durations are strings with a unit; they parse to milliseconds.
 */

const duration = (what: string) =>
  z.string({ error: `${what} must be a duration string such as "500ms", "5s", "2m" or "1h"` }).transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration; use a number with a unit: ms, s, m, h or d (e.g. "120s")` });
      return z.NEVER;
    }
    return ms;
  });

const hostPort = z.string({ error: 'must be a "host:port" string ("[v6]:port" for IPv6)' }).transform((text, ctx): HostPort => {
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

const tcpListenerFields = {
  bind: hostPort,
  /** How long to wait for the Connector to accept before giving up on the client's connection. */
  connectTimeout: duration('connectTimeout').prefault('5s'),
  /** Open connections on this listener; past it new connections are closed at once (refused, logged). */
  maxConnections: z.number().int().min(1).default(10_000),
  /** Open connections per client (affinity client key: an office behind one NAT is one client). */
  maxConnectionsPerClient: z.number().int().min(1).default(1000),
  /** Close a client that sent nothing this long after connecting (TLS clients speak first). "0s" disables. */
  firstByteTimeout: duration('firstByteTimeout').prefault('10s'),
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
    reloadInterval: duration('reloadInterval').prefault('10s'),
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

const brokerListener = z.strictObject({
  ...tcpListenerFields,
  /** Idle broker connections are short HTTP keep-alives; 5 minutes is generous. */
  idleTimeout: duration('idleTimeout').prefault('5m'),
  tls: brokerTls,
  /** HTTP/1.1 limits, applied when tls.mode is terminate (the proxy then reads the requests). */
  http: z
    .strictObject({
      maxHeaderBytes: z.number().int().min(1024).max(1_048_576).default(16_384),
      maxHeaderCount: z.number().int().min(8).max(1000).default(100),
      /** A client must finish sending a request's headers within this (slow senders are cut). */
      headerTimeout: duration('headerTimeout').prefault('10s'),
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
});

const pcoipTcpListener = z.strictObject({
  ...tcpListenerFields,
  /** The 4172/TCP control channel can be quiet for long stretches of a healthy session. */
  idleTimeout: duration('idleTimeout').prefault('1h'),
  /**
   * Experimental, unverified with real clients (PCOIP.md): peek at the TLS ClientHello and route
   * by an SNI learned from the broker exchange ahead of address affinity. Needs broker terminate.
   */
  sniRouting: z.boolean().default(false),
});

const pcoipUdpListener = z.strictObject({
  bind: hostPort,
  /** PCoIP sessions die after 30–60 s of silence, so anything below 60 s would cut live sessions. */
  idleTimeout: duration('idleTimeout').prefault('120s'),
  /** Cap on concurrent UDP flows; a new flow past it is refused and logged. */
  maxFlows: z.number().int().min(1).default(100_000),
  /** Cap on concurrent UDP flows per client (affinity client key): stops a flood of new source ports. */
  maxFlowsPerClient: z.number().int().min(1).default(1000),
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
  maxQueueDelay: duration('maxQueueDelay').prefault('50ms'),
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
  z.string({ error: `${what} must be a percentage string such as "10%"` }).transform((text, ctx) => {
    const match = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
    const value = match ? Number(match[1]) : NaN;
    if (!(value >= 0 && value <= max)) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a percentage between 0% and ${max}%` });
      return z.NEVER;
    }
    return value / 100;
  });

export const HEALTH_CHECKS = ['broker', 'pcoip'] as const;
export type HealthCheckName = (typeof HEALTH_CHECKS)[number];

/**
 * Active checks (HTTPS GET /health on the broker port, TCP connect to the pcoip port) and
 * passive detection (failed connects of real clients). Defaults follow HAProxy's rise/fall
 * model with a quicker interval than HP's load-balancer templates (30 s), so a broken Connector
 * stops getting new users within seconds.
 */
const health = z
  .strictObject({
    interval: duration('interval').prefault('5s'),
    /** A check that has not finished by then has failed (a hung Connector is a down Connector). */
    timeout: duration('timeout').prefault('2s'),
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
        window: duration('window').prefault('10s'),
      })
      .prefault({}),
    /** A pinned client whose Connector is down: `repin` places its new flows elsewhere; `keep` refuses them. */
    onDown: z.enum(['repin', 'keep']).default('repin'),
    /** Close the established flows of a Connector when it goes down (off: flows may still be alive). */
    closeFlowsOnDown: z.boolean().default(false),
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
  .prefault({});

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
    connectors: z.array(connector).min(1, 'list at least one Connector'),
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
        ttl: duration('ttl').prefault('1h'),
      })
      .prefault({}),
    /** Where `start` writes its pid, so that `pcoip-lb reload` can signal it (SIGHUP). Not written when unset. */
    pidFile: z.string().min(1).optional(),
    /**
     * Data-plane processes sharing the listening ports (SO_REUSEPORT, Linux). "auto": one per
     * core. 1: everything in one process (no workers). See docs/multicore.md.
     */
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(64)], { error: 'must be "auto" or a whole number from 1 to 64' }).default('auto'),
    health,
    admin,
    shutdown: z
      .strictObject({
        /** On SIGTERM/SIGINT: stop accepting, let TCP and UDP flows finish for this long, then close them. */
        grace: duration('grace').prefault('10s'),
      })
      .prefault({}),
    logging: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
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
    if (broker && pcoipTcp && broker.bind.port === pcoipTcp.bind.port && broker.bind.port !== 0 && broker.bind.host === pcoipTcp.bind.host) {
      ctx.addIssue({ code: 'custom', path: ['listeners', 'pcoipTcp', 'bind'], message: 'same TCP address as listeners.broker.bind' });
    }
    if (pcoipTcp?.sniRouting && broker?.tls.mode !== 'terminate') {
      ctx.addIssue({ code: 'custom', path: ['listeners', 'pcoipTcp', 'sniRouting'], message: 'needs listeners.broker.tls.mode: terminate (SNI values are learned from the broker exchange)' });
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

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}
