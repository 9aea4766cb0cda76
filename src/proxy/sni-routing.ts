import type { Socket } from 'node:net';
import type { Logger } from '../logger.ts';
import { RateLimitedLog } from '../logger.ts';
import type { Placer } from '../balance/placer.ts';
import type { Allocation, SessionTable } from '../balance/sessions.ts';
import type { ConnectorView } from '../pool/pool.ts';
import { ClientHelloPeeker, DEFAULT_MAX_HELLO_BYTES, type HelloResult } from '../pcoip/client-hello.ts';
import type { EarlyRouting } from './tcp-proxy.ts';
import type { SessionRegistry } from '../sessions/registry.ts';

/**
 * 4172/TCP routing by the SNI of the client's TLS ClientHello (listeners.pcoipTcp.sniRouting,
 * experimental: docs/pcoip-protocol.md marks as unverified whether real clients send the allocation's `sni`).
 * Reads the ClientHello off the paused connection without terminating TLS; when its SNI names
 * an allocation learned on 443, pins the client address to that allocation's Connector — ahead
 * of whatever address affinity said — so this connection and the client's UDP flow go there.
 * Anything else (no SNI, unknown SNI, not TLS, a slow client) falls back to address routing.
 * The bytes read are handed back to be forwarded first, unchanged.
 */

export interface PeekResult {
  consumed: Buffer;
  outcome: HelloResult | { status: 'timeout' } | { status: 'closed' };
}

/** Reads from a paused socket until the ClientHello is decided, the bound, a timeout or close. */
export function peekClientHello(client: Socket, timeoutMs: number, maxBytes = DEFAULT_MAX_HELLO_BYTES): Promise<PeekResult> {
  return new Promise((resolve) => {
    const peeker = new ClientHelloPeeker(maxBytes);
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (outcome: PeekResult['outcome']) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.off('close', onEnd);
      client.pause();
      resolve({ consumed: Buffer.concat(chunks), outcome });
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      const result = peeker.push(chunk);
      if (result.status !== 'need-more') done(result);
    };
    const onEnd = () => done({ status: 'closed' });
    const timer = setTimeout(() => done({ status: 'timeout' }), timeoutMs);
    client.on('data', onData);
    client.once('end', onEnd);
    client.once('close', onEnd);
    client.resume();
  });
}

export interface SniRouterDeps {
  placer: Placer;
  sessions: SessionTable;
  logger: Logger;
  now: () => number;
  /** Multi-core / cluster: ask the replica about an SNI this process has no allocation for (bounded). */
  lookupAllocation?: (sni: string) => Promise<void> | undefined;
  /** Counts SNIs that name no one session (pcoip_lb_sni_ambiguous_total). */
  registry?: Pick<SessionRegistry, 'countAmbiguousSni'>;
}

export class SniRouter {
  private readonly deps: SniRouterDeps;
  private readonly timeoutMs: number;
  private readonly notTlsLog = new RateLimitedLog();
  private readonly ambiguousLog = new RateLimitedLog();

  constructor(deps: SniRouterDeps, timeoutMs: number) {
    this.deps = deps;
    this.timeoutMs = timeoutMs;
  }

  /** The pcoipTcp listener's early-routing hook. */
  readonly route = async (client: Socket, clientAddress: string): Promise<EarlyRouting> => {
    const { consumed, outcome } = await peekClientHello(client, this.timeoutMs);
    const { logger, sessions, placer } = this.deps;
    const now = this.deps.now();
    if (outcome.status === 'error') {
      this.notTlsLog.maybe(now, (suppressed) =>
        logger.warn({ listener: 'pcoipTcp', client: clientAddress, reason: outcome.reason, err: outcome.message, suppressed }, 'first bytes are not a TLS ClientHello; routing by address'),
      );
      return { consumed };
    }
    if (outcome.status !== 'done' || outcome.sni === undefined) {
      if (outcome.status === 'timeout') logger.debug({ listener: 'pcoipTcp', client: clientAddress }, 'no ClientHello in time; routing by address');
      return { consumed };
    }
    let match = sessions.matchSni(outcome.sni, now);
    if (!match.ok && match.reason === 'unknown' && this.deps.lookupAllocation) {
      // Learned by another worker or instance, whose record may not have reached us yet.
      const wait = this.deps.lookupAllocation(outcome.sni.toLowerCase());
      if (wait) {
        await wait;
        match = sessions.matchSni(outcome.sni, this.deps.now());
      }
    }
    if (!match.ok) {
      if (match.reason === 'ambiguous') {
        this.deps.registry?.countAmbiguousSni();
        this.ambiguousLog.maybe(now, (suppressed) =>
          logger.info(
            { listener: 'pcoipTcp', client: clientAddress, sni: outcome.sni, suppressed },
            'SNI was seen in more than one live session (a constant default?): it names no one session; routing by address affinity',
          ),
        );
      }
      if (match.reason === 'tag-expired') {
        logger.info({ listener: 'pcoipTcp', client: clientAddress, sni: outcome.sni }, 'SNI names an allocation whose connect tag expired unused; routing by address');
      }
      return { consumed, sni: outcome.sni };
    }
    const allocation = match.allocation;
    const before = placer.learn(clientAddress, allocation.connectorId, now);
    logger.info(
      { listener: 'pcoipTcp', client: clientAddress, sni: outcome.sni, connector: allocation.connectorId, ...(before && before !== allocation.connectorId ? { overrides: before } : {}) },
      before && before !== allocation.connectorId ? 'SNI matches a learned allocation: routed by it, overriding address affinity' : 'SNI matches a learned allocation: routed by it',
    );
    return { consumed, sni: outcome.sni, connectorId: allocation.connectorId, ...this.flowHooks(allocation) };
  };

  /** Counts this connection on the allocation (it lives while its flows do) if it reached that Connector. */
  private flowHooks(allocation: Allocation): Pick<EarlyRouting, 'opened' | 'closed'> {
    let counted = false;
    return {
      opened: (connector: ConnectorView) => {
        if (connector.id !== allocation.connectorId) return;
        counted = true;
        this.deps.sessions.flowOpened(allocation, this.deps.now());
      },
      closed: () => {
        if (counted) this.deps.sessions.flowClosed(allocation, this.deps.now());
      },
    };
  }
}
