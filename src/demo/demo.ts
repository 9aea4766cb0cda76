import { fileURLToPath } from 'node:url';
import { createServer, isIP, type AddressInfo } from 'node:net';
import { createSocket } from 'node:dgram';
import { loadConfigFile } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { createLogger, type Logger } from '../logger.ts';
import { App } from '../app.ts';
import type { SimConnector } from '../sim/connector.ts';
import { simCommand, startSimPool } from '../sim/pool.ts';
import { formatHostPort, type HostPort } from '../util/address.ts';
import { ErrorCodes, isPlbError } from '../errors.ts';

/**
 * `pcoip-lb demo` (what `npm start` runs): simulated Connectors on loopback and pcoip-lb in
 * front of them with config/demo.yaml (health checks and admin server included). The
 * Connectors' ports in the config are replaced by the ones the simulators got (they listen on
 * ephemeral ports), and each simulator advertises pcoip-lb's PCoIP address in
 * allocate-resource-resp, as Connectors installed behind one shared address
 * (`--external-pcoip-ip`) do.
 */

export const DEMO_CONFIG_PATH = fileURLToPath(new URL('../../config/demo.yaml', import.meta.url));

export interface DemoOptions {
  configPath: string;
  /** Overrides listeners.broker.bind. */
  broker?: HostPort;
  /** Overrides listeners.pcoipTcp.bind and listeners.pcoipUdp.bind. */
  pcoip?: HostPort;
  /** Overrides admin.bind. */
  admin?: HostPort;
  logLevel?: string;
}

export interface Demo {
  app: App;
  sims: SimConnector[];
  listeners: { broker?: AddressInfo; pcoipTcp?: AddressInfo; pcoipUdp?: AddressInfo };
  /** What to print for a newcomer: addresses and what to try next. */
  banner(): string;
  /** Handles one line typed on stdin; returns the answer to print. */
  command(line: string): string;
  stop(): Promise<void>;
}

/** How often `--pcoip HOST:0` tries another port when something took the chosen one first. */
const PCOIP_PORT_ATTEMPTS = 5;

export async function startDemo(options: DemoOptions): Promise<Demo> {
  const fileConfig = loadConfigFile(options.configPath);
  const logger: Logger = createLogger((options.logLevel ?? fileConfig.logging.level) as Config['logging']['level']);
  const sims = await startSimPool(
    fileConfig.connectors.map((c) => ({ id: c.id, host: c.address })),
    { logger },
  );
  let app: App | undefined;
  try {
    const connectors = fileConfig.connectors.map((c) => ({ ...c, ports: { ...sims.find((s) => s.id === c.id)!.connectorConfig().ports } }));
    const started = await startApp({ ...fileConfig, connectors }, options, logger);
    app = started.app;
    const listeners = started.listeners;
    if (listeners.pcoipTcp) {
      const host = isWildcard(listeners.pcoipTcp.address) ? '127.0.0.1' : listeners.pcoipTcp.address;
      for (const sim of sims) sim.setAdvertisedPcoip(host, listeners.pcoipTcp.port);
    }
    const running = app;
    return {
      app: running,
      sims,
      listeners,
      banner: () => banner(listeners, running.adminAddress, sims, running.currentConfig.health.checks.length > 0),
      command: (line) => (line.trim() === 'help' ? HELP : simCommand(line, sims)),
      stop: async () => {
        await running.stop(running.currentConfig.shutdown.grace);
        await Promise.all(sims.map((s) => s.stop()));
        // pino writes asynchronously: flush so the last lines are not lost when the process exits.
        await new Promise<void>((resolve) => logger.flush(() => resolve()));
      },
    };
  } catch (err) {
    await app?.stop(0);
    await Promise.all(sims.map((s) => s.stop()));
    throw err;
  }
}

function withOverrides(config: Config, options: DemoOptions): Config {
  const listeners = { ...config.listeners };
  if (options.broker && listeners.broker) listeners.broker = { ...listeners.broker, bind: options.broker };
  if (options.pcoip && listeners.pcoipTcp) listeners.pcoipTcp = { ...listeners.pcoipTcp, bind: options.pcoip };
  if (options.pcoip && listeners.pcoipUdp) listeners.pcoipUdp = { ...listeners.pcoipUdp, bind: options.pcoip };
  const admin = options.admin ? { ...config.admin, enabled: true, bind: options.admin } : config.admin;
  return { ...config, listeners, admin };
}

/**
 * 4172/TCP and 4172/UDP must share one port number (the Connectors hand out one). For
 * `--pcoip HOST:0` the port is picked once for both; a clash with another program that took it
 * in the meantime is retried with another.
 */
async function startApp(base: Config, options: DemoOptions, logger: Logger): Promise<{ app: App; listeners: Demo['listeners'] }> {
  for (let attempt = 1; ; attempt++) {
    const pcoip = options.pcoip?.port === 0 ? { ...options.pcoip, port: await freeTcpAndUdpPort(options.pcoip.host) } : options.pcoip;
    const app = new App(withOverrides(base, { ...options, ...(pcoip ? { pcoip } : {}) }), logger);
    try {
      return { app, listeners: await app.start() };
    } catch (err) {
      const clash = isPlbError(err) && err.code === ErrorCodes.LISTEN && err.message.includes('EADDRINUSE');
      if (!(clash && options.pcoip?.port === 0 && attempt < PCOIP_PORT_ATTEMPTS)) throw err;
    }
  }
}

/** A port free for both TCP and UDP on `host` right now (the listeners bind it moments later). */
async function freeTcpAndUdpPort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const tcp = createServer();
    await new Promise<void>((resolve, reject) => tcp.once('error', reject).listen(0, host, () => resolve()));
    const { port } = tcp.address() as AddressInfo;
    const udp = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    const free = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, host, () => resolve(true));
    });
    if (free) udp.close();
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    if (free) return port;
  }
  throw new Error(`no port free for both TCP and UDP on ${host} after 20 tries`);
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

const HELP = [
  'Type:',
  '  unhealthy <id> [reason]   the simulated Connector\'s GET /health answers 500 with that reason',
  '  healthy <id>              GET /health answers 200 again',
  '  list                      the simulated Connectors, their health and sessions',
  'Ctrl-C stops the demo.',
].join('\n');

function banner(listeners: Demo['listeners'], admin: AddressInfo | undefined, sims: readonly SimConnector[], healthChecks: boolean): string {
  const at = (a: AddressInfo | undefined, proto: string) => (a ? `${formatHostPort(a.address, a.port)}/${proto}` : '(off)');
  const brokerTarget = listeners.broker ? formatHostPort(listeners.broker.address, listeners.broker.port) : undefined;
  const isDefault = listeners.broker?.port === 8443 && listeners.broker.address === '127.0.0.1';
  const adminAt = admin ? formatHostPort(admin.address, admin.port) : undefined;
  const victim = sims[1]?.id ?? sims[0]!.id;
  const lines = [
    `pcoip-lb demo: pcoip-lb in front of ${sims.length} simulated Connectors, all on this machine.`,
    '',
    `  pcoip-lb   broker ${at(listeners.broker, 'tcp')}   pcoip ${at(listeners.pcoipTcp, 'tcp')} ${at(listeners.pcoipUdp, 'udp')}`,
    `  admin      ${adminAt ? `http://${adminAt}/  (live page; JSON at /status)` : '(off)'}`,
    ...sims.map((s) => `  ${s.id.padEnd(10)} ${s.host}  broker :${s.brokerPort}  pcoip :${s.pcoipPort} (tcp+udp)  simulated`),
    '',
    'Try next, in another terminal:',
    // From the checkout: node24.sh brings Node >= 22.18 where the machine has an older one.
    `  ./scripts/node24.sh npm run bench:sessions -- --target ${isDefault ? 'demo' : brokerTarget} --users 50 --duration 5s`,
    '        50 simulated PCoIP users log in through pcoip-lb and stream UDP; a table says how it went',
    ...(adminAt
      ? [
          `  curl -s ${adminAt}/status`,
          '        the pool as JSON: health, state, pinned clients and flows per Connector (or open the live page)',
        ]
      : []),
    'And here:',
    `  unhealthy ${victim}     its GET /health answers 500${healthChecks ? `; pcoip-lb's health checks take it out of rotation` : ''}; "healthy ${victim}" brings it back`,
    '  help               all commands; Ctrl-C stops the demo',
  ];
  return lines.join('\n');
}
