import type { ConnectorConfig, ConnectorState } from '../config/schema.ts';

/**
 * The pool: which Connectors exist (config), and whether each may be used (operator state AND
 * measured health). No I/O: health checkers and the admin API call the setters; listeners and
 * the placer read. Every change bumps `version`, which lets the placer rebuild lazily.
 */
export type HealthStatus = 'up' | 'down';

export interface ConnectorView {
  readonly id: string;
  readonly address: string;
  readonly ports: { readonly broker: number; readonly pcoip: number };
  readonly weight: number;
  readonly state: ConnectorState;
  readonly health: HealthStatus;
  /** Why the Connector is down, from the last failing check; empty when up. */
  readonly healthReason: string;
}

/** May receive clients it has never seen: up and active. */
export function mayTakeNewClients(c: ConnectorView): boolean {
  return c.health === 'up' && c.state === 'active';
}

/** Keeps receiving new flows of clients already pinned to it: up and not in maintenance (drain still admits). */
export function admitsPinnedClients(c: ConnectorView): boolean {
  return c.health === 'up' && c.state !== 'maint';
}

export type PoolChange =
  /** `origin`: set here (the admin API, a reload) or applied from another instance (the cluster store). */
  | { kind: 'state'; id: string; from: ConnectorState; to: ConnectorState; origin: 'local' | 'remote' }
  | { kind: 'health'; id: string; from: HealthStatus; to: HealthStatus; reason: string };

export class Pool {
  private connectors = new Map<string, ConnectorView>();
  private listeners: Array<(change: PoolChange) => void> = [];
  /** Bumped on every change so cached derived data (selection tables) knows when to rebuild. */
  version = 0;

  constructor(configs: readonly ConnectorConfig[]) {
    this.replaceConfig(configs);
  }

  /**
   * Applies a (new) list of Connectors. Known ids keep their measured health; a Connector that
   * changed address or ports is a different machine, so its health starts afresh.
   */
  replaceConfig(configs: readonly ConnectorConfig[]): void {
    const next = new Map<string, ConnectorView>();
    for (const cfg of configs) {
      const old = this.connectors.get(cfg.id);
      const sameTarget = old && old.address === cfg.address && old.ports.broker === cfg.ports.broker && old.ports.pcoip === cfg.ports.pcoip;
      next.set(cfg.id, {
        id: cfg.id,
        address: cfg.address,
        ports: { broker: cfg.ports.broker, pcoip: cfg.ports.pcoip },
        weight: cfg.weight,
        state: cfg.state,
        health: sameTarget ? old.health : 'up',
        healthReason: sameTarget ? old.healthReason : '',
      });
    }
    this.connectors = next;
    this.version++;
  }

  get(id: string): ConnectorView | undefined {
    return this.connectors.get(id);
  }

  all(): ConnectorView[] {
    return [...this.connectors.values()];
  }

  setState(id: string, state: ConnectorState, origin: 'local' | 'remote' = 'local'): boolean {
    const c = this.connectors.get(id);
    if (!c) return false;
    if (c.state === state) return true;
    this.connectors.set(id, { ...c, state });
    this.version++;
    this.emit({ kind: 'state', id, from: c.state, to: state, origin });
    return true;
  }

  setHealth(id: string, health: HealthStatus, reason = ''): boolean {
    const c = this.connectors.get(id);
    if (!c) return false;
    if (c.health === health && c.healthReason === reason) return true;
    this.connectors.set(id, { ...c, health, healthReason: health === 'up' ? '' : reason });
    this.version++;
    if (c.health !== health) this.emit({ kind: 'health', id, from: c.health, to: health, reason });
    return true;
  }

  onChange(listener: (change: PoolChange) => void): void {
    this.listeners.push(listener);
  }

  private emit(change: PoolChange): void {
    for (const l of this.listeners) l(change);
  }
}
