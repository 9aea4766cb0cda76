import { readFileSync } from 'node:fs';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { fileURLToPath } from 'node:url';
import { formatKeyPath, loadCheckedConfigFile, loadConfigFile } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { ErrorCodes, PlbError, isPlbError } from './errors.ts';
import { createLogger, type Logger } from './logger.ts';
import { App } from './app.ts';
import { reloadFromFile, requestReload } from './control/reload.ts';
import { Supervisor } from './cluster/primary.ts';
import { resolveWorkers } from './cluster/workers.ts';
import { removePidFile, writePidFile } from './control/pid-file.ts';
import { AdminClient } from './admin/client.ts';
import { ADMIN_TOKEN_ENV, adminTarget, setStateCommand, statusCommand, waitForDrain } from './admin/commands.ts';
import { sessionsCommand } from './admin/sessions-command.ts';
import { parseDuration } from './util/duration.ts';
import { createInterface } from 'node:readline';
import { parseAdminAddress, parseHostPort, type HostPort } from './util/address.ts';

/** The only module that exits the process or installs signal handlers. */

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** From src/ and from dist/ alike. The demo module itself is imported only by `demo` (see below). */
const DEMO_CONFIG_PATH = fileURLToPath(new URL('../config/demo.yaml', import.meta.url));

/** Set by the start command's handler: its errors are log lines (printError). */
let startRunning = false;

/**
 * `start` logs JSON lines on stdout. When stdout is not a terminal (a service manager, a
 * container runtime, a log collector), an error that ends it is one more such line there —
 * pino's shape, level fatal — and nothing goes to stderr, so the stream stays parseable.
 * Everything else (other commands, a terminal) gets the human line on stderr.
 */
function printError(err: unknown): void {
  if (startRunning && !process.stdout.isTTY) {
    const fields = isPlbError(err)
      ? { code: err.code, ...(err.details.length > 0 ? { details: err.details } : {}), msg: err.message }
      : { err: err instanceof Error ? { type: err.name, message: err.message, stack: err.stack } : { message: String(err) }, msg: err instanceof Error ? err.message : String(err) };
    process.stdout.write(`${JSON.stringify({ level: 60, time: new Date().toISOString(), app: 'pcoip-lb', ...fields })}\n`);
    return;
  }
  if (isPlbError(err)) {
    process.stderr.write(`error ${err.code}: ${err.message}\n`);
    for (const line of err.details) process.stderr.write(`  ${line}\n`);
  } else {
    process.stderr.write(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
}

const withConfig = <T>(y: Argv<T>) =>
  y.option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'path to the YAML config file' });

/** Only the commands whose logging it changes take --log-level (the others print, they do not log). */
const withLogLevel = <T>(y: Argv<T>, describe: string) => y.option('log-level', { type: 'string', choices: LOG_LEVELS, describe });

/** `--admin` as `host:port` or `http://host:port`, everywhere: the admin server's base URL. */
const adminUrlOption = (value: string | undefined): string | undefined => {
  if (value === undefined) return undefined;
  const parsed = parseAdminAddress(String(value));
  if ('error' in parsed) throw new Error(`--admin ${parsed.error}`);
  return parsed.url;
};

const ADMIN_OPTION_HELP = 'admin API address, host:port or http://host:port (default: from --config admin.bind, else 127.0.0.1:8404)';

/** Options of the commands that talk to a running proxy through its admin API. */
const withAdmin = <T>(y: Argv<T>) =>
  y
    .option('admin', { type: 'string', coerce: adminUrlOption, describe: ADMIN_OPTION_HELP })
    .option('token', { type: 'string', describe: `admin bearer token (default: $${ADMIN_TOKEN_ENV}, else from --config admin.token)` })
    .option('config', { alias: 'c', type: 'string', describe: 'config file to read admin.bind and admin.token from' });

function adminClient(args: { admin?: string; token?: string; config?: string }): AdminClient {
  const target = adminTarget({ admin: args.admin, token: args.token, config: args.config ? loadConfigFile(args.config).admin : undefined });
  return new AdminClient(target.url, target.token);
}

/** `enable <id>` and `maint <id>`: one admin POST each. */
function stateCommand(action: 'enable' | 'maint', describe: string) {
  return {
    command: `${action} <id>`,
    describe,
    builder: (y: Argv) => withAdmin(y).positional('id', { type: 'string', demandOption: true, describe: 'Connector id' }),
    handler: async (args: { id: string; admin?: string; token?: string; config?: string }) => {
      await setStateCommand(adminClient(args), process.stdout, args.id, action);
    },
  };
}

async function runStart(configPath: string, logLevel: string | undefined): Promise<void> {
  // The schema plus every check short of binding (files read, token resolved), as check-config.
  const { config, warningFindings } = loadCheckedConfigFile(configPath, { tokenEnvMissing: 'error' });
  // --log-level outranks the file everywhere: in this process, in every worker, on reload.
  if (logLevel) config.logging.level = logLevel as Config['logging']['level'];
  const logger = createLogger(config.logging.level);
  for (const w of warningFindings) logger.warn({ code: w.code, key: formatKeyPath(w.path), file: configPath }, w.message);
  const workers = resolveWorkers(config);
  // workers: 1 is the single-process path; more runs a primary (this process) and N workers.
  const running: Running = workers.count > 1 ? new Supervisor(config, logger, workers.count, (err) => fatal(err)) : new App(config, logger);
  const fatal = (err: Error) => {
    logger.fatal({ err }, 'fatal: shutting down');
    void running.stop(0).finally(() => exitAfterFlush(logger, 1));
  };
  if (workers.count > 1) logger.info({ workers: workers.count, why: workers.why }, `starting ${workers.count} worker processes`);
  // Installed before binding: SIGHUP's default action would kill a process still starting.
  let ready = false;
  running.setReloadSource(() => reloadFromFile(running, configPath, logger, logLevel));
  process.on('SIGHUP', () => {
    if (!ready) return void logger.warn({ signal: 'SIGHUP' }, 'reload ignored: still starting');
    logger.info({ signal: 'SIGHUP', file: configPath }, 'reloading config');
    running.requestReload();
  });
  if (config.pidFile) {
    // Written before binding (a reload that comes early is ignored, see above) and removed on any exit.
    const pidFile = config.pidFile;
    writePidFile(pidFile);
    process.on('exit', () => removePidFile(pidFile));
  }
  await running.start();
  installSignalHandlers(running, logger);
  ready = true;
}

/** What the signal handlers and reload need of the single-process App or the multi-core Supervisor. */
type Running = Pick<App, 'currentConfig' | 'activeFlows' | 'stop' | 'stats' | 'start' | 'reload' | 'setReloadSource' | 'requestReload'>;

/** pino writes asynchronously; flush so the last lines (the flows closed at shutdown) are not lost. */
function exitAfterFlush(logger: Logger, code: number): void {
  logger.flush(() => process.exit(code));
}

function installSignalHandlers(app: Running, logger: Logger): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      exitAfterFlush(logger, 1);
      return;
    }
    stopping = true;
    const grace = app.currentConfig.shutdown.grace;
    const flows = app.activeFlows();
    // stop() closes the listeners synchronously before its first await: log only after that, so
    // whoever reads "shutting down" can rely on new connections being refused.
    const stopped = app.stop(grace);
    logger.info({ signal, graceMs: grace, flows }, 'shutting down: no new flows; waiting for open ones');
    stopped.then(
      () => {
        logger.info({ refused: Object.fromEntries(app.stats.refusals) }, 'stopped');
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

/** yargs coerce for `host:port` options. */
const hostPortOption = (flag: string) => (value: string | undefined): HostPort | undefined => {
  if (value === undefined) return undefined;
  const parsed = parseHostPort(String(value));
  if ('error' in parsed) throw new Error(`--${flag}: ${parsed.error}`);
  return parsed;
};

/** `demo --admin`: where to bind the admin server, written either way `--admin` is. */
const adminBindOption = (value: string | undefined): HostPort | undefined => {
  if (value === undefined) return undefined;
  const parsed = parseAdminAddress(String(value));
  if ('error' in parsed) throw new Error(`--admin ${parsed.error}`);
  return parsed.bind;
};

/**
 * `demo` and `simulate` run simulated Connectors, whose certificates come from the `selfsigned`
 * package: a dev dependency, so a production install (`npm ci --omit=dev`, the image) does not
 * carry it. They are imported only when run, so `start` and the other commands never load them.
 */
async function importDevOnly<T>(load: () => Promise<T>, command: string): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && /selfsigned/.test((err as Error).message)) {
      throw new PlbError(
        ErrorCodes.USAGE,
        `pcoip-lb ${command} needs the development dependencies (the simulated Connectors' certificates come from "selfsigned"): run it from a checkout after "npm ci", not from a production install`,
        [],
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * For long-running helpers (demo, simulate): each line typed on stdin goes to `command`; SIGINT
 * or SIGTERM runs `stop` and exits (a second signal exits at once). stdin closing is harmless.
 */
function runUntilSignal(stop: () => Promise<void>, command: (line: string) => string): void {
  const input = createInterface({ input: process.stdin, terminal: false });
  input.on('line', (line) => {
    const answer = command(line);
    if (answer) process.stdout.write(`${answer}\n`);
  });
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    input.close();
    process.stdout.write(`${signal}: stopping\n`);
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        printError(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('pcoip-lb')
    .usage('$0 <command> [options]\n\nLoad balancer for HP Anyware (PCoIP) Connector pools.')
    .command(
      'start',
      'run the proxy',
      (y) => withLogLevel(withConfig(y), 'override logging.level from the config (also on reload)'),
      async (args) => {
        startRunning = true;
        await runStart(args.config, args.logLevel);
      },
    )
    .command(
      'reload',
      'make the running pcoip-lb re-read its config file: validates the --config file, then asks the admin API (POST /reload), else signals the pid in pidFile (SIGHUP)',
      (y) =>
        withConfig(y)
          .option('pid', { type: 'number', describe: 'signal this process id (SIGHUP) instead of asking the admin API' })
          .option('admin', { type: 'string', coerce: adminUrlOption, describe: ADMIN_OPTION_HELP })
          .option('token', { type: 'string', describe: `admin token (default: $${ADMIN_TOKEN_ENV}, else the config's)` }),
      async (args) => {
        const lines = await requestReload({ configPath: args.config, pid: args.pid, admin: args.admin, token: args.token });
        for (const line of lines) process.stdout.write(`${line}\n`);
      },
    )
    .command(
      'check-config',
      'validate a config file as start does short of binding (schema, certificate/CA/token files): exit 0 if valid, else list every error with file, line and key path',
      (y) => withConfig(y),
      (args) => {
        // In an operator's shell the service's environment may be missing: an unset token variable only warns here.
        const { config, warnings } = loadCheckedConfigFile(args.config, { tokenEnvMissing: 'warning' });
        for (const line of warnings) process.stderr.write(`warning: ${line}\n`);
        const listeners = Object.keys(config.listeners).join(', ');
        const warned = warnings.length ? `; ${warnings.length} warning(s)` : '';
        process.stdout.write(`${args.config}: OK (${config.connectors.length} Connector(s); listeners: ${listeners}${warned})\n`);
      },
    )
    .command(
      'status',
      'show the pool of a running pcoip-lb: health, state, clients, flows per Connector',
      (y) => withAdmin(y).option('json', { type: 'boolean', default: false, describe: 'print the raw /status JSON' }),
      async (args) => {
        await statusCommand(adminClient(args), process.stdout, args.json);
      },
    )
    .command(
      'sessions',
      'list the sessions of a running pcoip-lb (broker exchange, 4172/TCP, UDP flows, media quality), worst quality first',
      (y) =>
        withAdmin(y)
          .option('connector', { type: 'string', describe: 'only sessions on this Connector' })
          .option('client', { type: 'string', describe: 'only sessions of this client address' })
          .option('state', { type: 'string', describe: 'only sessions in this state: logging-in, allocated, connected, streaming, ended' })
          .option('sort', { type: 'string', choices: ['quality', 'started'], describe: 'quality (default): worst loss and jitter first; started: newest first' })
          .option('limit', { type: 'number', describe: 'sessions per page (1–500, default 100)' })
          .option('offset', { type: 'number', describe: 'skip this many sessions (paging)' })
          .option('json', { type: 'boolean', default: false, describe: 'print the raw /sessions JSON' }),
      async (args) => {
        await sessionsCommand(adminClient(args), process.stdout, args);
      },
    )
    .command(
      'drain <id>',
      'stop sending new clients to a Connector; its pinned clients keep reconnecting to it',
      (y) =>
        withAdmin(y)
          .positional('id', { type: 'string', demandOption: true, describe: 'Connector id' })
          .option('wait', { type: 'boolean', default: false, describe: 'return only when the Connector has no flows left, showing progress' })
          .option('timeout', { type: 'string', describe: 'with --wait: give up after this long (e.g. 30m; default: no limit)' }),
      async (args) => {
        const timeoutMs = args.timeout === undefined ? 0 : parseDuration(args.timeout);
        if (timeoutMs === undefined) throw new PlbError(ErrorCodes.USAGE, `--timeout "${args.timeout}" is not a duration (e.g. 90s, 30m)`);
        const client = adminClient(args);
        await setStateCommand(client, process.stdout, args.id, 'drain');
        if (args.wait) await waitForDrain(client, process.stdout, args.id, { timeoutMs });
      },
    )
    .command(stateCommand('enable', 'put a Connector back in service (state active)'))
    .command(stateCommand('maint', 'take a Connector out entirely: no new clients, pinned clients move elsewhere'))
    .command(
      'demo',
      'pcoip-lb in front of 3 simulated Connectors on loopback, with health checks and the admin server (what `npm start` runs)',
      (y) =>
        withLogLevel(y, 'override logging.level of the demo config')
          .option('config', { alias: 'c', type: 'string', default: DEMO_CONFIG_PATH, defaultDescription: 'config/demo.yaml', describe: 'demo config' })
          .option('broker', { type: 'string', coerce: hostPortOption('broker'), describe: 'override listeners.broker.bind (host:port)' })
          .option('pcoip', { type: 'string', coerce: hostPortOption('pcoip'), describe: 'override the 4172 TCP and UDP binds (host:port; port 0: one free port for both)' })
          .option('admin', { type: 'string', coerce: adminBindOption, describe: 'override admin.bind (host:port or http://host:port)' }),
      async (args) => {
        const { startDemo } = await importDevOnly(() => import('./demo/demo.ts'), 'demo');
        const demo = await startDemo({
          configPath: args.config,
          ...(args.admin ? { admin: args.admin as HostPort } : {}),
          ...(args.broker ? { broker: args.broker as HostPort } : {}),
          ...(args.pcoip ? { pcoip: args.pcoip as HostPort } : {}),
          ...(args.logLevel ? { logLevel: args.logLevel } : {}),
        });
        process.stdout.write(`${demo.banner()}\n`);
        runUntilSignal(() => demo.stop(), (line) => demo.command(line));
      },
    )
    .command(
      'simulate',
      'run simulated Connectors (HTTPS broker + /health, 4172 TCP and UDP) to rehearse or load-test pcoip-lb',
      (y) =>
        withLogLevel(y, 'log level of the simulators (default info)')
          .option('connectors', { alias: 'n', type: 'number', demandOption: true, describe: 'how many (ids conn-a, conn-b, …)' })
          .option('host-base', { type: 'string', default: '127.0.1.', describe: 'Connector i listens on <host-base><i>' })
          .option('broker-port', { type: 'number', default: 0, describe: 'broker (HTTPS) port on every Connector; 0 = any free' })
          .option('pcoip-port', { type: 'number', default: 0, describe: 'PCoIP TCP+UDP port on every Connector; 0 = any free' })
          .option('unhealthy', { type: 'string', array: true, default: [] as string[], describe: 'ids whose /health starts at 500' })
          .option('advertise', { type: 'string', coerce: hostPortOption('advertise'), describe: "PCoIP address to hand out in allocate-resource-resp (pcoip-lb's)" }),
      async (args) => {
        const { startSimulation } = await importDevOnly(() => import('./sim/simulate.ts'), 'simulate');
        const simulation = await startSimulation({
          count: args.connectors,
          hostBase: args.hostBase,
          brokerPort: args.brokerPort,
          pcoipPort: args.pcoipPort,
          unhealthy: args.unhealthy.map(String),
          logger: createLogger((args.logLevel ?? 'info') as (typeof LOG_LEVELS)[number]),
          ...(args.advertise ? { advertise: args.advertise as HostPort } : {}),
        });
        process.stdout.write(`${simulation.summary()}\n`);
        runUntilSignal(() => simulation.stop(), (line) => simulation.command(line));
      },
    )
    .completion('completion', 'print a bash/zsh completion script (e.g. pcoip-lb completion >> ~/.bashrc)')
    .demandCommand(1, 'name a command: start, reload, check-config, status, sessions, drain, enable, maint, demo, simulate, completion (see --help)')
    .strict()
    .version(pkg.version)
    .help()
    .alias('h', 'help')
    .fail((msg, err) => {
      // A bad option value (coerce) reaches here as yargs' YError: a usage error, not a crash.
      if (err?.name === 'YError') process.stderr.write(`error ${ErrorCodes.USAGE}: ${err.message}\n\nRun "pcoip-lb --help" for usage.\n`);
      else if (err) printError(err);
      else process.stderr.write(`${msg}\n\nRun "pcoip-lb --help" for usage.\n`);
      process.exit(1);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  printError(err);
  process.exit(1);
});
