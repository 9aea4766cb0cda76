import type { Config } from '../config/schema.ts';
import { loadCheckedConfigFile, loadConfigFile } from '../config/load.ts';
import type { ConfigDiff } from '../config/diff.ts';
import { ErrorCodes, PlbError, isPlbError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { ReloadOutcome } from './reload-outcome.ts';
import { AdminClient } from '../admin/client.ts';
import { adminTarget } from '../admin/commands.ts';
import { readPidFile } from './pid-file.ts';

export type { ReloadOutcome } from './reload-outcome.ts';

/**
 * Reload, process side (SIGHUP and POST /reload): re-read the config file the process was
 * started with and apply it. An invalid file is rejected with every error logged
 * (file:line:col key.path) and the running config stays.
 */
/** The single-process App, or the multi-core Supervisor (which passes the result to its workers). */
export interface Reloadable {
  reload(next: Config): { diff: ConfigDiff; pinsDropped: number };
}

export function reloadFromFile(app: Reloadable, configPath: string, logger: Logger, logLevelOverride?: string): ReloadOutcome {
  let next: Config;
  try {
    // Every check start makes (certificate, CA and token files too), so a reload that would not
    // start is rejected with the same file:line errors.
    next = loadCheckedConfigFile(configPath, { tokenEnvMissing: 'error' }).config;
    // A --log-level given on the command line outranks the file, on reload as at start.
    if (logLevelOverride) next.logging.level = logLevelOverride as Config['logging']['level'];
    const { diff, pinsDropped } = app.reload(next);
    return {
      ok: true,
      connectors: diff.connectors,
      listeners: diff.listeners,
      applied: diff.applied,
      restartRequired: diff.restartRequired.map((r) => r.path),
      pinsDropped,
    };
  } catch (err) {
    const outcome: ReloadOutcome = isPlbError(err)
      ? { ok: false, code: err.code, message: err.message, errors: err.details }
      : { ok: false, code: ErrorCodes.RELOAD, message: err instanceof Error ? err.message : String(err), errors: [] };
    logger.error({ code: outcome.code, file: configPath, errors: outcome.errors }, `reload rejected: ${outcome.message}; the running config stays`);
    return outcome;
  }
}

export interface ReloadRequest {
  configPath: string;
  pid?: number;
  admin?: string;
  token?: string;
}

/**
 * Reload, command side (`pcoip-lb reload`). Validates the file first, so the operator sees its
 * errors in the terminal and nothing is sent. Then, in this order:
 * - `--pid N`: SIGHUP to that process;
 * - the admin API (`--admin`, else the config's admin.bind) `POST /reload`, which answers with
 *   what was applied or why it was rejected;
 * - when the admin API is off or unreachable: SIGHUP to the pid in the config's `pidFile`.
 * Returns the lines to print.
 */
export async function requestReload(req: ReloadRequest): Promise<string[]> {
  const config = loadConfigFile(req.configPath);
  if (req.pid !== undefined) return [sighup(req.pid, 'pid from --pid')];
  let adminError: PlbError | undefined;
  if (config.admin.enabled || req.admin) {
    const target = adminTarget({ admin: req.admin, token: req.token, config: config.admin });
    try {
      const outcome = await new AdminClient(target.url, target.token, 30_000).post<ReloadOutcome>('/reload');
      return describeOutcome(outcome);
    } catch (err) {
      if (!isPlbError(err) || err.code !== ErrorCodes.ADMIN_UNREACHABLE || !config.pidFile) throw err;
      adminError = err;
    }
  }
  if (config.pidFile) {
    const lines = [sighup(readPidFile(config.pidFile), `pid from ${config.pidFile}`)];
    return adminError ? [`admin API not reachable (${adminError.message}); falling back to the pid file`, ...lines] : lines;
  }
  throw new PlbError(
    ErrorCodes.RELOAD,
    `${req.configPath}: no way to reach the running pcoip-lb: enable admin (admin.enabled), set pidFile, pass --pid, or send it SIGHUP yourself`,
  );
}

function sighup(pid: number, source: string): string {
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PlbError(ErrorCodes.RELOAD, `cannot signal pid ${pid} (${source}): ${code === 'ESRCH' ? 'no such process (stale pid file?)' : (code ?? String(err))}`, [], {
      cause: err,
    });
  }
  return `sent SIGHUP to pcoip-lb (${source}: ${pid}); its log says "config reloaded" or "reload rejected"`;
}

function describeOutcome(outcome: ReloadOutcome): string[] {
  if (!outcome.ok) throw new PlbError(outcome.code, `reload rejected: ${outcome.message}`, outcome.errors);
  const c = outcome.connectors;
  const lines = [
    `reloaded: Connectors added [${c.added.join(', ')}], removed [${c.removed.join(', ')}], changed [${c.changed.map((x) => x.id).join(', ')}]; ` +
      `${outcome.pinsDropped} pin(s) dropped`,
  ];
  const listeners = Object.entries(outcome.listeners).map(([name, keys]) => `${name}.{${keys.join(',')}}`);
  if (listeners.length || outcome.applied.length) lines.push(`applied: ${[...listeners, ...outcome.applied].join(' ')}`);
  if (outcome.restartRequired.length) lines.push(`needs a restart (running value kept): ${outcome.restartRequired.join(' ')}`);
  return lines;
}
