import type { ConfigDiff } from '../config/diff.ts';
import type { ErrorCode } from '../errors.ts';

/** What a reload did, as the admin API and `pcoip-lb reload` report it. */
export type ReloadOutcome =
  | { ok: true; connectors: ConfigDiff['connectors']; listeners: ConfigDiff['listeners']; applied: string[]; restartRequired: string[]; pinsDropped: number }
  | { ok: false; code: ErrorCode; message: string; errors: readonly string[] };
