/**
 * Allowed-IP checks with ipaddr.js. Entries are compiled once per record (when it is verified and
 * cached), so a request only parses its own address and walks a short list of ranges.
 */
import ipaddr from 'ipaddr.js';
import { ADMIT, type PolicyResult } from './result.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** A parsed allowlist entry: network address and prefix length. */
export type IpRange = readonly [Address, number];

/** Folds IPv4-mapped IPv6 (`::ffff:10.0.0.1`) into plain IPv4 so both spellings match alike. */
function normalise(address: Address, bits: number): IpRange {
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [address, bits];
}

/** An IPv6 address with an embedded IPv4 tail (`::ffff:10.0.0.1`) must write that tail in four-part decimal too. */
function embeddedIPv4IsDecimal(address: string): boolean {
  const tail = address.slice(address.lastIndexOf(':') + 1);
  return !tail.includes('.') || ipaddr.IPv4.isValidFourPartDecimal(tail);
}

/**
 * Parses one allowlist entry: an IPv4 or IPv6 address, or a CIDR range. IPv4 must be in the plain
 * four-part decimal form (`10.0.0.1`), because ipaddr.js would also accept `0x0a.1`, which no
 * administrator means; the same holds for the IPv4 tail of an IPv6 entry (`::ffff:0x7f.0.0.1` is
 * refused). Returns `null` for anything else.
 */
export function parseIpRange(entry: string): IpRange | null {
  if (typeof entry !== 'string' || entry.length === 0 || entry.length > 64) return null;
  try {
    if (entry.includes('/')) {
      const isV4 = ipaddr.IPv4.isValidCIDRFourPartDecimal(entry);
      if (!isV4 && !(ipaddr.IPv6.isValidCIDR(entry) && embeddedIPv4IsDecimal(entry.slice(0, entry.indexOf('/'))))) return null;
      const [address, bits] = ipaddr.parseCIDR(entry);
      return normalise(address, bits);
    }
    if (ipaddr.IPv4.isValidFourPartDecimal(entry)) return [ipaddr.IPv4.parse(entry), 32];
    if (ipaddr.IPv6.isValid(entry) && embeddedIPv4IsDecimal(entry)) return normalise(ipaddr.IPv6.parse(entry), 128);
  } catch {
    return null;
  }
  return null;
}

/**
 * Compiles a record's `allowedIps`: `[]` for an empty list (any address), or `null` when any entry
 * does not parse. Entries are validated on write, so that only happens to a record changed behind
 * keygate's back; dropping the entry would widen access (to everyone, once none is left), so the
 * whole allowlist becomes one that admits no address instead.
 */
export function compileAllowedIps(entries: readonly string[]): IpRange[] | null {
  const ranges: IpRange[] = [];
  for (const entry of entries) {
    const range = parseIpRange(entry);
    if (!range) return null;
    ranges.push(range);
  }
  return ranges;
}

/**
 * Recently parsed client addresses. Parsing with ipaddr.js costs microseconds (several regular
 * expressions), while an API sees the same few addresses over and over; parsed addresses are
 * immutable, so they can be shared. Cleared when full, which keeps it bounded under address churn.
 */
const parsedClients = new Map<string, Address | null>();
const PARSED_CLIENTS_MAX = 4096;

/** Parses the client address (`req.ip`), IPv4-mapped IPv6 folded to IPv4; `null` when unusable. */
export function parseClientIp(ip: string | undefined): Address | null {
  if (!ip) return null;
  let parsed = parsedClients.get(ip);
  if (parsed !== undefined) return parsed;
  parsed = null;
  if (ip.length <= 64 && ipaddr.isValid(ip)) {
    try {
      parsed = ipaddr.process(ip);
    } catch {
      parsed = null;
    }
  }
  if (parsedClients.size >= PARSED_CLIENTS_MAX) parsedClients.clear();
  parsedClients.set(ip, parsed);
  return parsed;
}

/**
 * Admits when the allowlist is empty (`[]`) or the client address falls in one of its ranges;
 * refuses `ip_not_allowed` otherwise: for an unknown address, and for every address when the
 * allowlist could not be compiled (`null`).
 */
export function checkIp(ranges: readonly IpRange[] | null, clientIp: string | undefined): PolicyResult {
  if (ranges === null) return { ok: false, code: 'ip_not_allowed' };
  if (ranges.length === 0) return ADMIT;
  const client = parseClientIp(clientIp);
  if (client) {
    for (const [network, bits] of ranges) {
      if (network.kind() === client.kind() && client.match(network, bits)) return ADMIT;
    }
  }
  return { ok: false, code: 'ip_not_allowed' };
}
