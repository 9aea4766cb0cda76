import type { Logger } from '../logger.ts';
import { ErrorCodes, PlbError } from '../errors.ts';
import type { HostPort } from '../util/address.ts';
import type { SimConnector } from './connector.ts';
import { connectorsYaml, simCommand, simSpecs, startSimPool } from './pool.ts';

/**
 * `pcoip-lb simulate`: simulated Connectors for operators — to rehearse a deployment or load
 * test pcoip-lb before a logon storm. Prints where they listen and a `connectors:` block to
 * paste into pcoip-lb's config.
 */

export interface SimulateOptions {
  count: number;
  hostBase: string;
  brokerPort: number;
  pcoipPort: number;
  /** Ids that start unhealthy (GET /health answers 500). */
  unhealthy: string[];
  /** The PCoIP address allocate-resource-resp names (pcoip-lb's, when it fronts them with one address). */
  advertise?: HostPort;
  logger: Logger;
}

export interface Simulation {
  sims: SimConnector[];
  summary(): string;
  command(line: string): string;
  stop(): Promise<void>;
}

export async function startSimulation(options: SimulateOptions): Promise<Simulation> {
  const specs = simSpecs(options.count, options.hostBase);
  const unknown = options.unhealthy.filter((id) => !specs.some((s) => s.id === id));
  if (unknown.length > 0) {
    throw new PlbError(ErrorCodes.USAGE, `--unhealthy ${unknown.join(', ')}: no such Connector (ids: ${specs.map((s) => s.id).join(', ')})`);
  }
  const sims = await startSimPool(specs, {
    brokerPort: options.brokerPort,
    pcoipPort: options.pcoipPort,
    logger: options.logger,
    ...(options.advertise ? { advertise: { address: options.advertise.host, port: options.advertise.port } } : {}),
  });
  for (const id of options.unhealthy) sims.find((s) => s.id === id)!.setHealth(false, 'unhealthy since start (--unhealthy)');
  return {
    sims,
    summary: () => summary(sims),
    command: (line) => simCommand(line, sims),
    stop: async () => {
      await Promise.all(sims.map((s) => s.stop()));
      await new Promise<void>((resolve) => options.logger.flush(() => resolve()));
    },
  };
}

function summary(sims: readonly SimConnector[]): string {
  return [
    `${sims.length} simulated Connector(s) running (Ctrl-C stops them):`,
    ...sims.map(
      (s) =>
        `  ${s.id.padEnd(8)} broker https://${s.host}:${s.brokerPort}  pcoip ${s.host}:${s.pcoipPort} tcp+udp  health ${s.health.healthy ? 'up' : `DOWN (${s.health.reason})`}`,
    ),
    '',
    "Paste into pcoip-lb's config:",
    connectorsYaml(sims),
    '',
    'Type "unhealthy <id> [reason]", "healthy <id>" or "list" here.',
  ].join('\n');
}
