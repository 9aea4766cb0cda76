import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import { configErrors as errors } from '../helpers/config-errors.ts';

/** affinity.perSession (experimental, off by default) and what it needs. */

const config = (broker: string, sniRouting: boolean, probe: boolean) => `
listeners:
  broker: { bind: "127.0.0.1:0", tls: ${broker} }
  pcoipTcp: { bind: "127.0.0.1:0", sniRouting: ${sniRouting} }
  pcoipUdp: { bind: "127.0.0.1:0", probe: { enabled: ${probe} } }
connectors:
  - { id: conn-a, address: 192.0.2.1 }
affinity: { perSession: true }
`;
const TERMINATE = '{ mode: terminate, certificates: [{ cert: /a.crt, key: /a.key }], upstream: { insecure: true } }';

describe('affinity.perSession', () => {
  it('is off by default', () => {
    const yaml = 'listeners:\n  pcoipUdp: { bind: "127.0.0.1:0" }\nconnectors:\n  - { id: a, address: 192.0.2.1 }\n';
    expect(parseConfigText(yaml, 't.yaml').affinity.perSession).toBe(false);
  });

  it('is accepted with a terminating broker, sniRouting and the UDP probe', () => {
    expect(errors(config(TERMINATE, true, true))).toEqual([]);
  });

  it('names everything it still needs, in one message', () => {
    expect(errors(config('{ mode: passthrough }', false, false)).join('\n')).toContain(
      'affinity.perSession: needs listeners.broker.tls.mode: terminate (sessions are learned from the broker exchange), and listeners.pcoipTcp.sniRouting: true (4172/TCP follows its session by SNI), and listeners.pcoipUdp.probe.enabled: true (4172/UDP finds its session by the probe)',
    );
    expect(errors(config(TERMINATE, true, false)).join('\n')).toMatch(/affinity\.perSession: needs listeners\.pcoipUdp\.probe\.enabled: true/);
  });
});
