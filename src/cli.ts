import { readFileSync } from 'node:fs';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { loadConfigFile } from './config/load.ts';
import { isPlbError } from './errors.ts';
import { createLogger, type Logger } from './logger.ts';
import { App } from './app.ts';

/** The only module that exits the process or installs signal handlers. */

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function printError(err: unknown): void {
  if (isPlbError(err)) {
    process.stderr.write(`error ${err.code}: ${err.message}\n`);
    for (const line of err.details) process.stderr.write(`  ${line}\n`);
  } else {
    process.stderr.write(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
}

const withConfig = <T>(y: Argv<T>) =>
  y.option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'path to the YAML config file' });

async function runStart(configPath: string, logLevel: string | undefined): Promise<void> {
  const config = loadConfigFile(configPath);
  const level = (logLevel ?? config.logging.level) as (typeof LOG_LEVELS)[number];
  const logger = createLogger(level);
  const app = new App(config, logger);
  await app.start();
  installSignalHandlers(app, logger);
}

/** pino writes asynchronously; flush so the last lines (the flows closed at shutdown) are not lost. */
function exitAfterFlush(logger: Logger, code: number): void {
  logger.flush(() => process.exit(code));
}

function installSignalHandlers(app: App, logger: Logger): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      exitAfterFlush(logger, 1);
    }
    stopping = true;
    const grace = app.currentConfig.shutdown.grace;
    logger.info({ signal, graceMs: grace, flows: app.activeFlows() }, 'shutting down: no new flows; waiting for open ones');
    app.stop(grace).then(
      () => {
        logger.info('stopped');
        exitAfterFlush(logger, 0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        exitAfterFlush(logger, 1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('pcoip-lb')
    .usage('$0 <command> [options]\n\nLoad balancer for HP Anyware (PCoIP) Connector pools.')
    .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'override logging.level from the config' })
    .command(
      'start',
      'run the proxy',
      (y) => withConfig(y),
      async (args) => {
        await runStart(args.config, args.logLevel);
      },
    )
    .command(
      'check-config',
      'validate a config file: exit 0 if valid, else list every error with file, line and key path',
      (y) => withConfig(y),
      (args) => {
        const config = loadConfigFile(args.config);
        const listeners = Object.keys(config.listeners).join(', ');
        process.stdout.write(`${args.config}: OK (${config.connectors.length} Connector(s); listeners: ${listeners})\n`);
      },
    )
    .demandCommand(1, 'name a command: start, check-config (see --help)')
    .strict()
    .version(pkg.version)
    .help()
    .alias('h', 'help')
    .fail((msg, err) => {
      if (err) printError(err);
      else process.stderr.write(`${msg}\n\nRun "pcoip-lb --help" for usage.\n`);
      process.exit(1);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  printError(err);
  process.exit(1);
});
