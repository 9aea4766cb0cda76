import { loadConfigFile } from '../config/load.ts';
import type { App } from '../app.ts';
import type { Logger } from '../logger.ts';
import { readPidFile } from './pid-file.ts';
import { ErrorCodes, PlbError, isPlbError } from '../errors.ts';

/**
 * Reload, process side: re-read the config file the process was started with and apply it.
 * An invalid file is rejected with every error logged (file:line:col key.path) and the running
 * config stays. Returns whether the new config was applied.
 */
export function reloadFromFile(app: App, configPath: string, logger: Logger, logLevelOverride?: string): boolean {
  let next;
  try {
    next = loadConfigFile(configPath);
    // A --log-level given on the command line outranks the file, on reload as at start.
    if (logLevelOverride) next.logging.level = logLevelOverride as typeof next.logging.level;
  } catch (err) {
    if (isPlbError(err)) {
      logger.error({ code: err.code, file: configPath, errors: err.details }, `reload rejected: ${err.message}; the running config stays`);
    } else {
      logger.error({ err, file: configPath }, 'reload rejected: the running config stays');
    }
    return false;
  }
  app.reload(next);
  return true;
}

/**
 * Reload, command side (`pcoip-lb reload`): validate the file first, so the operator sees errors
 * in the terminal, then signal the running process (SIGHUP) found through `pid` or the config's
 * `pidFile`. Returns the pid signalled.
 */
export function signalReload(configPath: string, pid?: number): number {
  const config = loadConfigFile(configPath);
  const target = pid ?? (config.pidFile ? readPidFile(config.pidFile) : undefined);
  if (target === undefined) {
    throw new PlbError(
      ErrorCodes.RELOAD,
      `${configPath}: no way to find the running pcoip-lb: set pidFile in the config, pass --pid, or send SIGHUP to the process yourself`,
    );
  }
  try {
    process.kill(target, 'SIGHUP');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PlbError(ErrorCodes.RELOAD, `cannot signal pid ${target}: ${code === 'ESRCH' ? 'no such process (stale pid file?)' : (code ?? String(err))}`, [], {
      cause: err,
    });
  }
  return target;
}
