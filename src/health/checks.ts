import { request } from 'node:https';
import { connect, isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { HealthCheckName } from '../config/schema.ts';
import { formatHostPort } from '../util/address.ts';
import { ownExhaustion } from '../util/fd-exhaustion.ts';

/**
 * The two active checks. Each resolves (never rejects) with a result, and always within its
 * timeout: a Connector that accepts and then says nothing is as broken as one that refuses.
 */
export interface CheckResult {
  readonly check: HealthCheckName;
  readonly ok: boolean;
  /** Why it failed ("HTTP 500: Cannot communicate with broker", "ECONNREFUSED", …); empty when ok. */
  readonly reason: string;
  readonly latencyMs: number;
  /**
   * Set (EMFILE, ENFILE, ENOBUFS) when the check could not even open its socket because
   * pcoip-lb ran out of descriptors or buffers: says nothing about the Connector.
   */
  readonly exhausted?: string;
}

export interface CheckTarget {
  readonly address: string;
  readonly ports: { readonly broker: number; readonly pcoip: number };
}

export interface CheckOptions {
  readonly checks: readonly HealthCheckName[];
  readonly timeoutMs: number;
  readonly brokerPath: string;
  /** PEM CA to verify the Connector's certificate against; undefined: no verification (self-signed Connectors). */
  readonly ca: string | undefined;
}

/** Enough for the `/health` JSON; a larger answer is not a health response. */
const MAX_BODY_BYTES = 16 * 1024;
/** Remote text ends up in logs: keep it short and on one line. */
const MAX_REASON_CHARS = 200;

/** HP's contract: 200 `{"status":"success"}` when healthy; 500 `{"status":"Error","reason":"…"}` otherwise. */
export function judgeHealthResponse(statusCode: number, body: string): { ok: boolean; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  const fields = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
  if (statusCode === 200) {
    if (typeof fields.status === 'string' && fields.status.toLowerCase() === 'success') return { ok: true, reason: '' };
    return { ok: false, reason: 'HTTP 200 without "status": "success" in a JSON body' };
  }
  const reason = typeof fields.reason === 'string' && fields.reason.trim() !== '' ? `: ${oneLine(fields.reason)}` : '';
  return { ok: false, reason: `HTTP ${statusCode}${reason}` };
}

function oneLine(text: string): string {
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > MAX_REASON_CHARS ? `${flat.slice(0, MAX_REASON_CHARS)}…` : flat;
}

function describeError(err: NodeJS.ErrnoException): string {
  return err.code ?? oneLine(err.message);
}

type Settle = (ok: boolean, reason: string, exhausted?: string) => void;

/** Settles a check that failed with a socket error: the errno as the reason, and whether the proxy itself was out of fds. */
function settleError(settle: Settle, err: NodeJS.ErrnoException): void {
  settle(false, describeError(err), ownExhaustion(err));
}

/**
 * Runs one check: the first verdict wins, no verdict within `timeoutMs` is a failure, and the
 * connection `start` opened is torn down either way.
 */
function bounded(check: HealthCheckName, timeoutMs: number, start: (settle: Settle) => { destroy(): void }): Promise<CheckResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    let connection: { destroy(): void } | undefined;
    const settle: Settle = (ok, reason, exhausted) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      connection?.destroy();
      resolve({ check, ok, reason, latencyMs: performance.now() - started, ...(exhausted ? { exhausted } : {}) });
    };
    const timer = setTimeout(() => settle(false, `no answer within ${timeoutMs} ms`), timeoutMs);
    connection = start(settle);
    if (settled) connection.destroy();
  });
}

/** HTTPS GET of the broker's health path, on a fresh connection each time (no keep-alive: a check tests connecting too). */
export function checkBroker(target: CheckTarget, options: Pick<CheckOptions, 'timeoutMs' | 'brokerPath' | 'ca'>): Promise<CheckResult> {
  return bounded('broker', options.timeoutMs, (settle) => {
    const req = request(
      {
        hostname: target.address,
        port: target.ports.broker,
        path: options.brokerPath,
        method: 'GET',
        agent: false,
        rejectUnauthorized: options.ca !== undefined,
        ca: options.ca,
        // SNI carries names only; a Connector addressed by IP gets none.
        servername: isIP(target.address) === 0 ? target.address : '',
        headers: { accept: 'application/json', 'user-agent': 'pcoip-lb-health', connection: 'close' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) settle(false, `response larger than ${MAX_BODY_BYTES} bytes`);
          else chunks.push(chunk);
        });
        res.on('end', () => {
          const verdict = judgeHealthResponse(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
          settle(verdict.ok, verdict.reason);
        });
        res.on('error', (err: NodeJS.ErrnoException) => settleError(settle, err));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => settleError(settle, err));
    req.end();
    return req;
  });
}

/** TCP connect to the pcoip port (there is no health endpoint on 4172; the Security Gateway accepting is the signal). */
export function checkPcoipTcp(target: CheckTarget, timeoutMs: number): Promise<CheckResult> {
  return bounded('pcoip', timeoutMs, (settle) => {
    const socket = connect({ host: target.address, port: target.ports.pcoip });
    socket.once('connect', () => settle(true, ''));
    socket.once('error', (err: NodeJS.ErrnoException) => settleError(settle, err));
    return socket;
  });
}

export interface RoundResult {
  readonly ok: boolean;
  /**
   * Set (the errno) when no check failed on the Connector's account but at least one could not
   * run because pcoip-lb was out of descriptors: the round says nothing and must not count.
   */
  readonly inconclusive?: string;
  /** The failing checks, each named: `broker /health: HTTP 500: …; pcoip 10.0.1.11:4172: ECONNREFUSED`. */
  readonly reason: string;
  readonly results: readonly CheckResult[];
}

/** Runs the configured checks in parallel; the round passes only when every one passes. */
export async function runRound(target: CheckTarget, options: CheckOptions): Promise<RoundResult> {
  const results = await Promise.all(
    options.checks.map((check) => (check === 'broker' ? checkBroker(target, options) : checkPcoipTcp(target, options.timeoutMs))),
  );
  return judgeRound(results, (r) =>
    r.check === 'broker' ? `broker ${options.brokerPath}: ${r.reason}` : `pcoip ${formatHostPort(target.address, target.ports.pcoip)}/tcp: ${r.reason}`,
  );
}

/**
 * One round's verdict from its checks: passes when all pass; fails when any check failed on the
 * Connector's account; otherwise, when a check could not run because pcoip-lb was out of
 * descriptors, it is inconclusive (it proves nothing either way). Pure.
 */
export function judgeRound(results: readonly CheckResult[], describe: (r: CheckResult) => string): RoundResult {
  const failed = results.filter((r) => !r.ok && r.exhausted === undefined);
  const exhausted = results.find((r) => r.exhausted !== undefined)?.exhausted;
  const reason = (failed.length > 0 ? failed : results.filter((r) => !r.ok)).map(describe).join('; ');
  if (failed.length === 0 && exhausted !== undefined) return { ok: false, inconclusive: exhausted, reason, results };
  return { ok: failed.length === 0, reason, results };
}
