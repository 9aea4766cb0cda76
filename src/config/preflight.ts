import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { Config } from './schema.ts';
import { WarningCodes, isPlbError, type WarningCode } from '../errors.ts';
import { loadPair } from '../proxy/tls-certificates.ts';
import { resolveAdminToken } from '../admin/token.ts';
import { readStorePassword } from '../cluster-store/settings.ts';
import type { SecretSource } from './referenced.ts';
import { formatDuration } from '../util/duration.ts';

/**
 * The checks `start` makes before it binds anything, beyond the schema: the files the config
 * names (certificates and keys, CA bundles, the admin token, the cluster store password) are read and parsed as start reads
 * them. `check-config` runs the same list, so "OK" means start gets past the config. Plus the
 * warnings a valid config can still deserve. Each finding names its key path, so the loader can
 * point at its line.
 */
export interface ConfigFinding {
  path: readonly (string | number)[];
  message: string;
}

export interface ConfigWarning extends ConfigFinding {
  code: WarningCode;
}

export interface PreflightOptions {
  env?: NodeJS.ProcessEnv;
  /**
   * `check-config` runs in an operator's shell, which need not have the service's environment:
   * there an unset `admin.token.env` (or `cluster.redis.password.env`) variable is a warning; for
   * start and reload it is an error.
   */
  tokenEnvMissing?: 'error' | 'warning';
}

/** PCoIP sessions can be silent for up to 60 s (docs/pcoip-protocol.md); a shorter UDP idle timeout cuts live ones. */
const PCOIP_SILENCE_MS = 60_000;

export function preflight(config: Config, options: PreflightOptions = {}): { errors: ConfigFinding[]; warnings: ConfigWarning[] } {
  const errors: ConfigFinding[] = [];
  const warnings: ConfigWarning[] = [];
  const tls = config.listeners.broker?.tls;
  if (tls?.mode === 'terminate') {
    const at = ['listeners', 'broker', 'tls'];
    (tls.certificates ?? []).forEach((pair, i) => {
      const unreadable = (['cert', 'key'] as const).map((key) => readProblem(pair[key])).map((problem, k) => ({ problem, key: k === 0 ? 'cert' : 'key' }));
      for (const { problem, key } of unreadable) if (problem) errors.push({ path: [...at, 'certificates', i, key], message: problem });
      if (unreadable.some((u) => u.problem)) return;
      try {
        loadPair(pair, i, tls.minVersion);
      } catch (err) {
        // loadPair's messages start with the key path, which the loader prints already.
        const message = err instanceof Error ? err.message.replace(/^listeners\.broker\.tls\.certificates\[\d+\](\.(cert|key))?: /, '') : String(err);
        errors.push({ path: [...at, 'certificates', i], message });
      }
    });
    if (tls.upstream?.ca !== undefined) checkCaFile(tls.upstream.ca, [...at, 'upstream', 'ca'], errors);
  }
  if (config.health.tls.ca !== undefined) checkCaFile(config.health.tls.ca, ['health', 'tls', 'ca'], errors);
  const env = options.env ?? process.env;
  const token = config.admin.token;
  if (config.admin.enabled && token) {
    checkSecret(() => resolveAdminToken(config.admin, env), ['admin', 'token'], token, WarningCodes.ADMIN_TOKEN_ENV, options, errors, warnings);
  }
  const cluster = config.cluster;
  if (cluster?.redis.password) {
    checkSecret(() => readStorePassword(cluster, env), ['cluster', 'redis', 'password'], cluster.redis.password, WarningCodes.CLUSTER_PASSWORD_ENV, options, errors, warnings);
  }
  if (cluster?.redis.tls?.ca !== undefined) checkCaFile(cluster.redis.tls.ca, ['cluster', 'redis', 'tls', 'ca'], errors);
  const checks = config.health.checks;
  if (!checks.includes('broker')) {
    warnings.push({
      path: ['health', 'checks'],
      code: WarningCodes.NO_BROKER_CHECK,
      message:
        checks.length === 0
          ? 'active health checks are off: only failed client connects (health.passive) take a Connector out, and one that accepts connections but never answers stays up'
          : 'no broker check: a Connector that accepts TCP but whose broker hangs or fails stays up and keeps getting new clients; add broker (HTTPS GET health.brokerPath)',
    });
  }
  const udpIdle = config.listeners.pcoipUdp?.idleTimeout;
  if (udpIdle !== undefined && udpIdle > 0 && udpIdle < PCOIP_SILENCE_MS) {
    warnings.push({
      path: ['listeners', 'pcoipUdp', 'idleTimeout'],
      code: WarningCodes.UDP_IDLE_SHORT,
      message: `${formatDuration(udpIdle)} is below the 60 s a PCoIP session may be silent: live sessions will be cut (keep >= 120s)`,
    });
  }
  return { errors, warnings };
}

/**
 * A secret read as start reads it (`read` throws its PlbError); a failure is an error at
 * `<at>.file` / `<at>.env`, or a warning for a variable unset in check-config's shell.
 */
function checkSecret(
  read: () => unknown,
  at: readonly string[],
  source: SecretSource,
  envWarning: WarningCode,
  options: PreflightOptions,
  errors: ConfigFinding[],
  warnings: ConfigWarning[],
): void {
  try {
    read();
  } catch (err) {
    if (!isPlbError(err)) throw err;
    const path = [...at, source.file !== undefined ? 'file' : 'env'];
    // The reader's message starts with the key path (which the loader prints) and the source in brackets.
    const prefix = `${path.join('.')} (`;
    const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length).replace('): ', ': ') : err.message;
    if (source.env !== undefined && options.tokenEnvMissing === 'warning') {
      warnings.push({ path, code: envWarning, message: `${message} in this shell; start refuses unless its environment sets it` });
    } else errors.push({ path, message });
  }
}

/** Why a file cannot be read, or undefined when it can. */
function readProblem(file: string): string | undefined {
  try {
    readFileSync(file);
    return undefined;
  } catch (err) {
    return `cannot read ${file}: ${describeFsError(err)}`;
  }
}

/** A CA bundle as start reads it: readable, and with at least one PEM certificate in it. */
function checkCaFile(file: string, path: readonly (string | number)[], errors: ConfigFinding[]): void {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    errors.push({ path, message: `cannot read ${file}: ${describeFsError(err)}` });
    return;
  }
  try {
    new X509Certificate(text);
  } catch {
    errors.push({ path, message: `${file} holds no PEM certificate` });
  }
}

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied (run check-config as the user pcoip-lb runs as)';
  if (code === 'EISDIR') return 'it is a directory';
  return code ?? String(err);
}
