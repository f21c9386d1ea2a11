import { checkIp, compileAllowedIps, parseClientIp, parseIpRange } from '../../src/policy/ip';

const admitted = { ok: true };
const refused = { ok: false, code: 'ip_not_allowed' };

function check(allowed: string[], ip: string | undefined) {
  return checkIp(compileAllowedIps(allowed), ip);
}

describe('parseIpRange: valid entries', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1', 32],
    ['0.0.0.0', '0.0.0.0', 32],
    ['255.255.255.255', '255.255.255.255', 32],
    ['10.0.0.0/8', '10.0.0.0', 8],
    ['192.168.1.0/24', '192.168.1.0', 24],
    ['0.0.0.0/0', '0.0.0.0', 0],
    ['10.0.0.1/32', '10.0.0.1', 32],
    ['::1', '::1', 128],
    ['2001:db8::', '2001:db8::', 128],
    ['2001:db8::/32', '2001:db8::', 32],
    ['::/0', '::', 0],
    ['2001:db8::1/128', '2001:db8::1', 128],
    ['::ffff:10.0.0.1', '10.0.0.1', 32],
    ['::ffff:10.0.0.0/104', '10.0.0.0', 8],
    ['::ffff:a00:1', '10.0.0.1', 32],
    ['::ffff:0:0/96', '0.0.0.0', 0],
  ])('accepts %j as %s/%d', (entry, address, bits) => {
    const range = parseIpRange(entry);
    expect(range).not.toBeNull();
    expect(range![0].toString()).toBe(address);
    expect(range![1]).toBe(bits);
  });
});

describe('parseIpRange: invalid entries', () => {
  it.each([
    ['', 'empty'],
    ['abc', 'not an address'],
    ['localhost', 'a host name'],
    ['10.0.0.0/33', 'IPv4 prefix over 32'],
    ['10.0.0.0/-1', 'negative prefix'],
    ['10.0.0.0/', 'empty prefix'],
    ['10.0.0.0/8/8', 'two prefixes'],
    ['::/129', 'IPv6 prefix over 128'],
    ['2001:db8::/abc', 'non-numeric prefix'],
    ['0x7f.1', 'two-part hex IPv4'],
    ['127.1', 'two-part IPv4'],
    ['127.0.1', 'three-part IPv4'],
    ['2130706433', 'one-part IPv4'],
    ['0x7f.0.0.1', 'hex octet'],
    ['010.0.0.1', 'leading zero (octal-looking) octet'],
    ['0x7f.1/8', 'two-part hex IPv4 CIDR'],
    ['127.1/8', 'two-part IPv4 CIDR'],
    ['256.0.0.1', 'octet over 255'],
    ['1.2.3.4.5', 'five parts'],
    ['::ffff:0x7f.0.0.1', 'hex octet in an IPv4-mapped IPv6 address'],
    ['::ffff:010.0.0.1', 'leading-zero octet in an IPv4-mapped IPv6 address'],
    ['::ffff:127.1', 'two-part IPv4 in an IPv6 address'],
    ['::ffff:0x7f.0.0.0/104', 'hex octet in an IPv4-mapped CIDR'],
    ['2001:db8:::1', 'three colons'],
    ['2001:db8::g', 'non-hex digit'],
    [' 10.0.0.1', 'leading space'],
    ['10.0.0.1 ', 'trailing space'],
    ['10.0.0.0/8 ', 'trailing space after a CIDR'],
    [`${'1'.repeat(70)}`, 'over-long'],
  ])('refuses %j (%s)', (entry) => {
    expect(parseIpRange(entry)).toBeNull();
  });

  it.each([undefined, null, 42, ['10.0.0.1']])('refuses the non-string %p without throwing', (entry) => {
    expect(parseIpRange(entry as unknown as string)).toBeNull();
  });
});

describe('compileAllowedIps', () => {
  it('compiles every entry in order', () => {
    const ranges = compileAllowedIps(['10.0.0.0/8', '::1']);
    expect(ranges?.map(([address, bits]) => `${address.toString()}/${bits}`)).toEqual(['10.0.0.0/8', '::1/128']);
  });

  // Audit item 2: a stored entry that does not parse used to be dropped, and a list left empty
  // admitted every address. Now the whole allowlist refuses.
  it.each([['10.0.0.0/8 '], ['10.0.0.1/32,10.0.0.2/32'], ['010.0.0.1'], ['10.0.0.0/33'], ['10.0.0.0/8', 'bogus', '::1']])(
    'gives null for a list with an entry that does not parse (%j), and checkIp then refuses every address',
    (...entries) => {
      const ranges = compileAllowedIps(entries);
      expect(ranges).toBeNull();
      for (const ip of ['10.0.0.1', '10.0.0.2', '::1', '203.0.113.9', undefined]) expect(checkIp(ranges, ip)).toEqual(refused);
    },
  );
});

describe('parseClientIp', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3', 'ipv4'],
    ['::1', '::1', 'ipv6'],
    ['::ffff:10.1.2.3', '10.1.2.3', 'ipv4'],
    ['::ffff:a01:203', '10.1.2.3', 'ipv4'],
    ['2001:db8::5', '2001:db8::5', 'ipv6'],
  ])('reads %j as %s (%s), folding IPv4-mapped IPv6 to IPv4', (ip, address, kind) => {
    const parsed = parseClientIp(ip);
    expect(parsed?.toString()).toBe(address);
    expect(parsed?.kind()).toBe(kind);
  });

  it.each([undefined, '', 'unknown', 'not-an-ip', '999.1.1.1'])('gives null for an unusable address %p', (ip) => {
    expect(parseClientIp(ip)).toBeNull();
  });
});

describe('checkIp', () => {
  it.each([
    ['a single IPv4 address, matching', ['10.0.0.1'], '10.0.0.1', admitted],
    ['a single IPv4 address, another client', ['10.0.0.1'], '10.0.0.2', refused],
    ['an IPv4 CIDR, inside', ['10.0.0.0/8'], '10.255.1.2', admitted],
    ['an IPv4 CIDR, outside', ['10.0.0.0/8'], '11.0.0.1', refused],
    ['a /24, first and outside', ['192.168.1.0/24'], '192.168.2.0', refused],
    ['0.0.0.0/0, any IPv4', ['0.0.0.0/0'], '203.0.113.9', admitted],
    ['a CIDR written with host bits set', ['10.1.2.3/8'], '10.200.0.1', admitted],
    ['an IPv6 address, matching', ['2001:db8::1'], '2001:db8::1', admitted],
    ['an IPv6 address, written differently', ['2001:db8::1'], '2001:0db8:0000:0000:0000:0000:0000:0001', admitted],
    ['an IPv6 address, another client', ['2001:db8::1'], '2001:db8::2', refused],
    ['an IPv6 CIDR, inside', ['2001:db8::/32'], '2001:db8:ffff::1', admitted],
    ['an IPv6 CIDR, outside', ['2001:db8::/32'], '2001:db9::1', refused],
    ['::1 loopback', ['::1'], '::1', admitted],
    ['an IPv4-mapped client against an IPv4 CIDR', ['10.0.0.0/8'], '::ffff:10.1.2.3', admitted],
    ['an IPv4-mapped client outside an IPv4 CIDR', ['10.0.0.0/8'], '::ffff:11.1.2.3', refused],
    ['an IPv4-mapped client in hex form', ['10.0.0.0/8'], '::ffff:a01:203', admitted],
    ['an IPv4 client against an IPv4-mapped CIDR', ['::ffff:10.0.0.0/104'], '10.1.2.3', admitted],
    ['an IPv4 client outside an IPv4-mapped CIDR', ['::ffff:10.0.0.0/104'], '11.1.2.3', refused],
    ['an IPv4-mapped client against an IPv4-mapped CIDR', ['::ffff:10.0.0.0/104'], '::ffff:10.9.9.9', admitted],
    ['an IPv4 client against an IPv4-mapped address', ['::ffff:10.0.0.1'], '10.0.0.1', admitted],
    ['an IPv4 client against an IPv6-only list', ['2001:db8::/32'], '10.0.0.1', refused],
    ['an IPv6 client against an IPv4-only list', ['0.0.0.0/0'], '2001:db8::1', refused],
    ['an IPv6 client when the list has both kinds', ['10.0.0.0/8', '2001:db8::/32'], '2001:db8::7', admitted],
    ['an IPv4 client when the list has both kinds', ['2001:db8::/32', '10.0.0.0/8'], '10.0.0.7', admitted],
  ])('%s', (_what, allowed, ip, expected) => {
    expect(check(allowed, ip)).toEqual(expected);
  });

  it.each([undefined, '', 'unknown', '10.0.0.1'])('admits any client (%p), even an unknown one, when the allowlist is empty', (ip) => {
    expect(checkIp([], ip)).toEqual(admitted);
  });

  it.each([undefined, '', 'unknown', 'garbage'])('refuses an unknown client address %p when the list is not empty', (ip) => {
    expect(check(['0.0.0.0/0', '::/0'], ip)).toEqual(refused);
  });
});
