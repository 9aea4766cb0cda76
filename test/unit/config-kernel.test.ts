import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import { PlbError } from '../../src/errors.ts';
import { resolveWorkers } from '../../src/cluster/workers.ts';
import { kernelListeners } from '../../src/kernel/from-config.ts';
import { diffConfig } from '../../src/config/diff.ts';

function errorsOf(text: string): readonly string[] {
  try {
    parseConfigText(text, 'k.yaml');
  } catch (err) {
    if (err instanceof PlbError) return err.details;
    throw err;
  }
  throw new Error('config was accepted');
}

const base = (udp: string, tcp = '', rest = '') => `
listeners:
  broker: { bind: "127.0.0.1:8443", tls: { mode: terminate, certificates: [{ cert: c.pem, key: k.pem }], upstream: { insecure: true } } }
  pcoipTcp: { bind: "127.0.0.1:4172"${tcp} }
  pcoipUdp: { bind: "127.0.0.1:4172"${udp} }
connectors:
  - { id: a, address: 198.51.100.11 }
${rest}`;

describe('config: the kernel data plane', () => {
  it('defaults to user space everywhere, with the table named pcoip_lb', () => {
    const cfg = parseConfigText(base(''), 'k.yaml');
    expect(cfg.listeners.pcoipUdp?.dataPlane).toBe('user');
    expect(cfg.listeners.pcoipTcp?.dataPlane).toBe('user');
    expect(cfg.kernel).toEqual({ table: 'pcoip_lb', snat: {} });
    expect(kernelListeners(cfg.listeners)).toEqual([]);
  });

  it('accepts kernel with an SNAT address for the Connectors\' family', () => {
    const cfg = parseConfigText(base(', dataPlane: kernel', ', dataPlane: auto', 'kernel: { table: lb_1, snat: { ipv4: 198.51.100.1 } }'), 'k.yaml');
    expect(kernelListeners(cfg.listeners)).toEqual([
      { name: 'pcoipUdp', proto: 'udp', dataPlane: 'kernel' },
      { name: 'pcoipTcp', proto: 'tcp', dataPlane: 'auto' },
    ]);
  });

  it('says what is wrong: sniRouting, DNS names, a missing SNAT address, workers > 1, a bad table name, an unknown mode', () => {
    expect(errorsOf(base('', ', dataPlane: kernel, sniRouting: true'))).toContainEqual(
      expect.stringMatching(/listeners\.pcoipTcp\.dataPlane: kernel cannot be combined with sniRouting/),
    );
    expect(errorsOf(base('', ', dataPlane: auto, sniRouting: true'))).toContainEqual(expect.stringMatching(/auto cannot be combined with sniRouting/));
    const named = base(', dataPlane: kernel', '', 'kernel: { snat: { ipv4: 198.51.100.1 } }').replace('address: 198.51.100.11', 'address: conn-a.example');
    expect(errorsOf(named)).toContainEqual(expect.stringMatching(/connectors\[0\]\.address: dataPlane: kernel needs an IP address/));
    expect(errorsOf(base(', dataPlane: kernel'))).toContainEqual(expect.stringMatching(/kernel\.snat\.ipv4: dataPlane: kernel with IPv4 Connectors needs/));
    expect(errorsOf(base(', dataPlane: kernel', '', 'kernel: { snat: { ipv4: "::1" } }'))).toContainEqual(expect.stringMatching(/kernel\.snat\.ipv4: must be an IPv4 address/));
    expect(errorsOf(base(', dataPlane: auto', '', 'workers: 2'))).toContainEqual(expect.stringMatching(/workers: .*kernel forwards the media/));
    expect(errorsOf(base('', '', 'kernel: { table: "x y" }'))).toContainEqual(expect.stringMatching(/kernel\.table: must be 1-31 letters/));
    expect(errorsOf(base(', dataPlane: xdp'))).toContainEqual(expect.stringMatching(/dataPlane: must be one of user, kernel, auto/));
  });

  it('auto (which may fall back to user space) accepts DNS names; workers auto is 1 in kernel mode', () => {
    const cfg = parseConfigText(base(', dataPlane: auto').replace('address: 198.51.100.11', 'address: conn-a.example').replace(/  broker:.*\n/, ''), 'k.yaml');
    expect(resolveWorkers(cfg, 8, 'linux')).toEqual({ count: 1, why: expect.stringContaining('dataPlane kernel or auto') });
  });

  it('a reload cannot switch the data plane or the table name (restart), but can change the SNAT address', () => {
    const from = parseConfigText(base(', dataPlane: kernel', '', 'kernel: { snat: { ipv4: 198.51.100.1 } }'), 'k.yaml');
    const to = parseConfigText(base('', '', 'kernel: { table: other, snat: { ipv4: 198.51.100.2 } }'), 'k.yaml');
    const diff = diffConfig(from, to);
    expect(diff.restartRequired.map((r) => r.path).sort()).toEqual(['kernel.table', 'listeners.pcoipUdp.dataPlane']);
    expect(diff.applied).toContain('kernel.snat.ipv4');
  });
});
