import type { Config } from './config/schema.ts';
import { diffConfig, effectiveConfig, type ConfigDiff } from './config/diff.ts';
import type { Logger } from './logger.ts';
import type { ProcessState } from './state/process-state.ts';
import type { ControlPlane } from './control-plane.ts';
import type { DataPlane } from './data-plane.ts';

export interface ReloadParts {
  logger: Logger;
  state: ProcessState;
  /** The single process and the primary: health settings and checks. */
  control?: ControlPlane;
  /** The single process and the workers: listener settings. */
  data?: DataPlane;
  /** Flow counts for the "config reloaded" line. */
  flows: () => unknown;
}

/**
 * One reload, the same steps in every role: work out what changed, apply the one step that can
 * fail first (a new health CA file — a failure then changes nothing), then the state owners, the
 * control plane, the listeners and the log level; log what needs a restart and what was applied.
 * Returns the config now running (changes that need a restart keep their running value).
 */
export function applyReload(from: Config, next: Config, parts: ReloadParts): { running: Config; diff: ConfigDiff; pinsDropped: number } {
  const { logger, state, control, data } = parts;
  const diff = diffConfig(from, next);
  const running = effectiveConfig(from, next, diff);
  control?.reconfigureHealth(running, diff.applied.some((p) => p.startsWith('health.')));
  for (const r of diff.restartRequired) {
    logger.warn({ key: r.path, reason: r.reason }, `reload: ${r.path} changed but needs a restart; keeping the running value`);
  }
  const pinsDropped = state.reload(from, running, diff);
  control?.reloaded(running);
  data?.reload(running);
  logger.level = running.logging.level;
  logger.info(
    {
      connectors: diff.connectors,
      listeners: diff.listeners,
      applied: diff.applied,
      restartRequired: diff.restartRequired.map((r) => r.path),
      pinsDropped,
      flows: parts.flows(),
    },
    'config reloaded',
  );
  return { running, diff, pinsDropped };
}
