import { describe, expect, it } from 'vitest';
import { clientKey, parseIpv6 } from '../../src/balance/client-key.ts';

const defaults = { ipv4Prefix: 32, ipv6Prefix: 64 };

describe('clientKey', () => {
  it.each([
    ['127.0.2.5', defaults, '127.0.2.5/32'],
    ['::ffff:127.0.2.5', defaults, '127.0.2.5/32'],
    ['192.0.2.77', { ipv4Prefix: 24, ipv6Prefix: 64 }, '192.0.2.0/24'],
    ['192.0.2.77', { ipv4Prefix: 0, ipv6Prefix: 64 }, '0.0.0.0/0'],
    ['2001:db8:1:2:aaaa:bbbb:cccc:dddd', defaults, '2001:db8:1:2:0:0:0:0/64'],
    ['2001:db8:1:2::1', defaults, '2001:db8:1:2:0:0:0:0/64'],
    ['2001:db8:1:2::1', { ipv4Prefix: 32, ipv6Prefix: 56 }, '2001:db8:1:0:0:0:0:0/56'],
    ['2001:db8:1:2ff::1', { ipv4Prefix: 32, ipv6Prefix: 56 }, '2001:db8:1:200:0:0:0:0/56'],
    ['::1', { ipv4Prefix: 32, ipv6Prefix: 128 }, '0:0:0:0:0:0:0:1/128'],
    ['fe80::1%eth0', defaults, 'fe80:0:0:0:0:0:0:0/64'],
  ])('%s with %o → %s', (address, prefixes, expected) => {
    expect(clientKey(address, prefixes)).toBe(expected);
  });

  it('groups two addresses of one /64 and separates neighbouring /64s', () => {
    expect(clientKey('2001:db8:0:1::10', defaults)).toBe(clientKey('2001:db8:0:1:ffff::99', defaults));
    expect(clientKey('2001:db8:0:1::10', defaults)).not.toBe(clientKey('2001:db8:0:2::10', defaults));
  });
});

describe('parseIpv6', () => {
  it.each([
    ['::', [0, 0, 0, 0, 0, 0, 0, 0]],
    ['2001:db8::', [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]],
    ['::ffff:192.0.2.4', [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x204]],
    ['2001:db8:3:4:5:6:7:8', [0x2001, 0xdb8, 3, 4, 5, 6, 7, 8]],
  ])('%s', (text, words) => {
    expect(parseIpv6(text)).toEqual(words);
  });

  it.each(['1:2:3', '1::2::3', '12345::', '::g', '1:2:3:4:5:6:7:8:9', '::1.2.3'])('rejects %s', (text) => {
    expect(parseIpv6(text)).toBeUndefined();
  });
});
