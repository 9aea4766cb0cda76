import { describe, expect, it } from 'vitest';
import { endianness } from 'node:os';
import { canonicalAddress, parseProcNetUdp } from '../../src/util/proc-net-udp.ts';

// Lines as Linux prints them on a little-endian host (x86-64, arm64): each 32-bit word of an
// address is a host-order integer, ports are plain hex.
const UDP4 = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
11248: 0100007F:B500 00000000:0000 07 00000000:00012C00 00:00000000 00000000     0        0 23871 2 0000000087c18072 17
  312: 0100007F:9C40 0101007F:104C 01 00000000:00000000 00:00000000 00000000     0        0 23999 2 0000000087c18073 0
`;
const UDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  455: 0000000000000000FFFF00000100007F:8AD7 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23873 2 0000000082271d8a 0
 7739: 00000000000000000000000001000000:A74B 00000000000000000000000001000000:104C 01 00000000:00000900 00:00000000 00000000     0        0 23872 2 000000005950e2fa 3
`;

describe.skipIf(endianness() !== 'LE')('parseProcNetUdp', () => {
  it('reads addresses, ports, queues, inode and drops of IPv4 sockets', () => {
    expect(parseProcNetUdp(UDP4)).toEqual([
      { local: { address: '127.0.0.1', port: 0xb500 }, remote: { address: '0.0.0.0', port: 0 }, txQueue: 0, rxQueue: 0x12c00, inode: 23871, drops: 17 },
      { local: { address: '127.0.0.1', port: 0x9c40 }, remote: { address: '127.0.1.1', port: 4172 }, txQueue: 0, rxQueue: 0, inode: 23999, drops: 0 },
    ]);
  });

  it('reads IPv6 (and IPv4-mapped) addresses in canonical form', () => {
    const rows = parseProcNetUdp(UDP6);
    expect(rows.map((r) => [r.local.address, r.remote.address, r.remote.port, r.rxQueue, r.drops])).toEqual([
      ['::ffff:7f00:1', '::', 0, 0, 0],
      ['::1', '::1', 4172, 0x900, 3],
    ]);
  });

  it('keeps only the rows whose ports pass the filter, and skips the header', () => {
    expect(parseProcNetUdp(UDP4, (_local, remote) => remote === 4172).map((r) => r.inode)).toEqual([23999]);
    expect(parseProcNetUdp('')).toEqual([]);
  });

  it('writes configured addresses the way the table is decoded', () => {
    expect(canonicalAddress('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalAddress('::ffff:127.0.0.1')).toBe('::ffff:7f00:1');
    expect(canonicalAddress('192.0.2.1')).toBe('192.0.2.1');
  });
});
