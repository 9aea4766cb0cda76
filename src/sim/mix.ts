import { LEGACY_BEHAVIOUR, type ClientBehaviour } from './client.ts';

/**
 * Client mixes for the load generator: which share of simulated users speaks the broker exchange
 * how (ClientBehaviour). Users get their profile by index, in a fixed weighted cycle, so a run is
 * reproducible and every profile appears once per `sum of weights` users.
 */
export interface ClientProfile {
  name: string;
  weight: number;
  behaviour: ClientBehaviour;
}

export interface ClientMix {
  name: string;
  profiles: readonly ClientProfile[];
}

/** One connection per request, no probe, JSESSIONID: the simulator before issue 14. */
export const LEGACY_MIX: ClientMix = { name: 'legacy', profiles: [{ name: 'per-request', weight: 1, behaviour: LEGACY_BEHAVIOUR }] };

/**
 * What docs/pcoip-protocol.md says real clients do, mixed: most send a probe hello first; some keep one TLS
 * connection for the whole exchange (open-source client), others open one per request
 * (Teradici's description); one in eight ignores cookies and is followed by its CLIENT-LOG-ID;
 * one spells the log id header in another case. With realistic Connector ids (the default).
 */
export const REALISTIC_MIX: ClientMix = {
  name: 'realistic',
  profiles: [
    { name: 'keep-alive, probe', weight: 3, behaviour: { probe: true, connection: 'keep-alive', cookies: 'jar', logIdHeader: 'CLIENT-LOG-ID' } },
    { name: 'keep-alive, Client-Log-Id', weight: 1, behaviour: { probe: false, connection: 'keep-alive', cookies: 'jar', logIdHeader: 'Client-Log-Id' } },
    { name: 'per-request, probe', weight: 2, behaviour: { probe: true, connection: 'per-request', cookies: 'jar', logIdHeader: 'CLIENT-LOG-ID' } },
    { name: 'per-request', weight: 1, behaviour: LEGACY_BEHAVIOUR },
    { name: 'keep-alive, probe, no cookies (log id only)', weight: 1, behaviour: { probe: true, connection: 'keep-alive', cookies: 'none', logIdHeader: 'CLIENT-LOG-ID' } },
  ],
};

export const CLIENT_MIXES: Readonly<Record<string, ClientMix>> = { legacy: LEGACY_MIX, realistic: REALISTIC_MIX };

/** The profile of user `index` (0-based): a weighted cycle over the mix's profiles. */
export function profileFor(mix: ClientMix, index: number): ClientProfile {
  const total = mix.profiles.reduce((n, p) => n + p.weight, 0);
  let slot = index % total;
  for (const p of mix.profiles) {
    if (slot < p.weight) return p;
    slot -= p.weight;
  }
  return mix.profiles[0]!;
}
