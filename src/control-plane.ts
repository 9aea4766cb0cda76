import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.ts';
import type { Logger } from './logger.ts';
import type { Pool } from './pool/pool.ts';
import { HealthMonitor } from './health/monitor.ts';
import { ADMIN_MAX_CONNECTIONS, AdminServer } from './admin/server.ts';
import { fdsNeededAtLimits, logFdLimit, readFdLimits } from './control/fd-limit.ts';
import { resolveAdminToken } from './admin/token.ts';
import type { AdminView } from './admin/view.ts';

/**
 * The control plane of an instance: the health monitor (which measures the Connectors and writes
 * their health into the pool) and the admin server (the operator's view and hands). It runs in
 * the single process, or in the multi-core primary — never in a worker.
 */
export class ControlPlane {
  readonly health: HealthMonitor;
  private admin: AdminServer | undefined;
  private config: Config;
  private readonly logger: Logger;

  constructor(config: Config, pool: Pool, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.health = new HealthMonitor(pool, config.health, logger);
  }

  get adminAddress(): AddressInfo | undefined {
    return this.admin?.address();
  }

  /**
   * Throws (before anything listens or checks) when a non-loopback admin bind has no token.
   * Call first, so a refused start binds nothing.
   */
  checkAdmin(): string | undefined {
    return resolveAdminToken(this.config.admin);
  }

  async start(view: AdminView): Promise<void> {
    const token = this.checkAdmin();
    // One line: the descriptor limit in force (each worker is forked with the same) and whether the configured limits fit in it.
    logFdLimit(this.logger, readFdLimits(), fdsNeededAtLimits(this.config, ADMIN_MAX_CONNECTIONS));
    this.health.start();
    if (this.config.admin.enabled) {
      this.admin = new AdminServer(view, this.config.admin, token, this.logger);
      await this.admin.listen();
    }
  }

  async stop(): Promise<void> {
    this.health.stop();
    await this.admin?.close();
  }

  /** The one reload step that can fail (a new CA file): call before changing anything else. */
  reconfigureHealth(running: Config, healthChanged: boolean): void {
    if (healthChanged) this.health.reconfigure(running.health);
  }

  /** After the pool took the new Connectors: check the new ones, forget the removed ones. */
  reloaded(running: Config): void {
    this.health.sync();
    this.config = running;
  }
}
