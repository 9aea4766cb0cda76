/**
 * Every error pcoip-lb raises on purpose carries a stable code, so operators can grep logs and
 * scripts can branch on it without parsing prose.
 */
export const ErrorCodes = {
  CONFIG_READ: 'PLB_E_CONFIG_READ',
  CONFIG_PARSE: 'PLB_E_CONFIG_PARSE',
  CONFIG_INVALID: 'PLB_E_CONFIG_INVALID',
  NO_CONNECTOR: 'PLB_E_NO_CONNECTOR',
  UPSTREAM_CONNECT: 'PLB_E_UPSTREAM_CONNECT',
  UPSTREAM_TIMEOUT: 'PLB_E_UPSTREAM_TIMEOUT',
  UPSTREAM_UNREACHABLE: 'PLB_E_UPSTREAM_UNREACHABLE',
  LISTEN: 'PLB_E_LISTEN',
  FLOW_LIMIT: 'PLB_E_FLOW_LIMIT',
  CONNECTION_LIMIT: 'PLB_E_CONNECTION_LIMIT',
  SLOW_CLIENT: 'PLB_E_SLOW_CLIENT',
  PID_FILE: 'PLB_E_PID_FILE',
  RELOAD: 'PLB_E_RELOAD',
  WORKER: 'PLB_E_WORKER',
  ADMIN_TOKEN_REQUIRED: 'PLB_E_ADMIN_TOKEN_REQUIRED',
  ADMIN_REQUEST: 'PLB_E_ADMIN_REQUEST',
  TLS_CERT: 'PLB_E_TLS_CERT',
  HTTP_MALFORMED: 'PLB_E_HTTP_MALFORMED',
  HTTP_TIMEOUT: 'PLB_E_HTTP_TIMEOUT',
  UPSTREAM_PROTOCOL: 'PLB_E_UPSTREAM_PROTOCOL',
  UPSTREAM_TLS: 'PLB_E_UPSTREAM_TLS',
  CONNECT_TAG_REUSED: 'PLB_E_CONNECT_TAG_REUSED',
  ADMIN_TOKEN_READ: 'PLB_E_ADMIN_TOKEN_READ',
  ADMIN_UNAUTHORIZED: 'PLB_E_ADMIN_UNAUTHORIZED',
  ADMIN_FORBIDDEN: 'PLB_E_ADMIN_FORBIDDEN',
  ADMIN_NOT_FOUND: 'PLB_E_ADMIN_NOT_FOUND',
  ADMIN_METHOD: 'PLB_E_ADMIN_METHOD',
  ADMIN_UNREACHABLE: 'PLB_E_ADMIN_UNREACHABLE',
  UNKNOWN_CONNECTOR: 'PLB_E_UNKNOWN_CONNECTOR',
  DRAIN_TIMEOUT: 'PLB_E_DRAIN_TIMEOUT',
  /** Kernel data plane (docs/kernel.md): a precondition that failed at start, or an nft/conntrack call that failed. */
  KERNEL_PLATFORM: 'PLB_E_KERNEL_PLATFORM',
  KERNEL_TOOL: 'PLB_E_KERNEL_TOOL',
  KERNEL_PERMISSION: 'PLB_E_KERNEL_PERMISSION',
  KERNEL_SYSCTL: 'PLB_E_KERNEL_SYSCTL',
  KERNEL_RP_FILTER: 'PLB_E_KERNEL_RP_FILTER',
  KERNEL_SNAT: 'PLB_E_KERNEL_SNAT',
  KERNEL_NFT: 'PLB_E_KERNEL_NFT',
  KERNEL_CONNTRACK: 'PLB_E_KERNEL_CONNTRACK',
  HEALTH_TLS_CA: 'PLB_E_HEALTH_TLS_CA',
  /** cluster: a password or CA file that cannot be read, an empty password. */
  CLUSTER_CONFIG: 'PLB_E_CLUSTER_CONFIG',
  /** cluster: the store is unreachable or not answering; this instance decides alone meanwhile. */
  CLUSTER_STORE: 'PLB_E_CLUSTER_STORE',
  /** cluster: a value read from the store is malformed or names an unknown Connector; ignored. */
  CLUSTER_VALUE: 'PLB_E_CLUSTER_VALUE',
  /** pcoip-lb itself ran out of file descriptors (EMFILE/ENFILE) or socket buffers (ENOBUFS): its own limit, never a Connector's fault. */
  FD_EXHAUSTED: 'PLB_E_FD_EXHAUSTED',
  /** listeners.broker.lbCookie: a key file or environment variable that is missing, empty or too short. */
  LB_COOKIE_KEY: 'PLB_E_LB_COOKIE_KEY',
  /** The terminating broker ignored a client-supplied identifier (forged/stale LB cookie, implausibly long id). */
  BROKER_ID_IGNORED: 'PLB_E_BROKER_ID_IGNORED',
  /** A command-line argument that parsed but makes no sense (an unknown id, a count out of range, a bad duration). */
  USAGE: 'PLB_E_USAGE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class PlbError extends Error {
  readonly code: ErrorCode;
  /** Extra lines (one per problem) for errors that report several problems at once. */
  readonly details: readonly string[];

  constructor(code: ErrorCode, message: string, details: readonly string[] = [], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PlbError';
    this.code = code;
    this.details = details;
  }
}

export function isPlbError(err: unknown): err is PlbError {
  return err instanceof PlbError;
}

/** Stable codes of the warnings a valid config can still draw (logged at start, printed by check-config). */
export const WarningCodes = {
  /** health.checks has no `broker` check (or is empty). */
  NO_BROKER_CHECK: 'PLB_W_NO_BROKER_CHECK',
  /** listeners.pcoipUdp.idleTimeout below the 60 s a PCoIP session may be silent. */
  UDP_IDLE_SHORT: 'PLB_W_UDP_IDLE_SHORT',
  /** check-config: the admin.token.env variable is not set in the shell it runs in. */
  ADMIN_TOKEN_ENV: 'PLB_W_ADMIN_TOKEN_ENV',
  /** check-config: the cluster.redis.password.env variable is not set in the shell it runs in. */
  CLUSTER_PASSWORD_ENV: 'PLB_W_CLUSTER_PASSWORD_ENV',
  /** 4172/UDP bound to a wildcard address (logged by the UDP listener at start). */
  UDP_WILDCARD: 'PLB_W_UDP_WILDCARD',
} as const;

export type WarningCode = (typeof WarningCodes)[keyof typeof WarningCodes];
