/**
 * SSRF guard for webhook URLs. Two layers:
 *  - `validateWebhookUrl` at create time: scheme, credentials, and literal hosts
 *    (IP literals in every form WHATWG URL normalizes, and `localhost`).
 *  - `makeGuardedLookup` at delivery time: a `lookup` for node:http(s) that refuses the
 *    connection when any address the name resolves to is private. The socket connects to
 *    the address that was checked, so a DNS answer that changes between the check and the
 *    connection (DNS rebinding) cannot slip through.
 */
import dns from 'node:dns';
import { isIPv4, isIPv6, type LookupFunction } from 'node:net';
import { AppError } from '../core/errors.js';

// ---------------------------------------------------------------------------------------
// Address classification

/** Ranges that are not the public internet (RFC 6890 and successors). */
const PRIVATE_V4: ReadonlyArray<readonly [string, number]> = [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // CGNAT shared address space
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata lives here)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // TEST-NET-1
  ['192.88.99.0', 24], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // TEST-NET-2
  ['203.0.113.0', 24], // TEST-NET-3
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and 255.255.255.255 broadcast
];

/**
 * Special blocks inside 2000::/3 (global unicast); everything outside 2000::/3 is refused
 * outright (loopback, unspecified, unique-local fc00::/7, link-local fe80::/10, site-local,
 * multicast ff00::/8, discard 100::/64, …) except the forms that embed an IPv4 address.
 */
const PRIVATE_V6_IN_GLOBAL: ReadonlyArray<readonly [string, number]> = [
  ['2001::', 23], // IETF protocol assignments: Teredo, benchmarking, ORCHID, …
  ['2001:db8::', 32], // documentation
  ['3fff::', 20], // documentation (RFC 9637)
];

function parseIPv4(ip: string): number | null {
  if (!isIPv4(ip)) return null;
  const p = ip.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

/** 128-bit value of a valid IPv6 literal (no brackets, no zone). */
function parseIPv6(ip: string): bigint | null {
  if (!isIPv6(ip)) return null;
  let s = ip;
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    const v4 = parseIPv4(last);
    if (v4 === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 0) return null;
  const groups = [...head, ...Array<string>(fill).fill('0'), ...tail];
  let v = 0n;
  for (const g of groups) {
    const n = Number.parseInt(g, 16);
    if (!/^[0-9a-f]{1,4}$/i.test(g) || Number.isNaN(n)) return null;
    v = (v << 16n) | BigInt(n);
  }
  return v;
}

const V4_RANGES = PRIVATE_V4.map(([base, len]) => ({ base: parseIPv4(base)!, len }));
const V6_RANGES = PRIVATE_V6_IN_GLOBAL.map(([base, len]) => ({ base: parseIPv6(base)!, len: BigInt(len) }));

const inV4 = (ip: number, base: number, len: number): boolean =>
  len === 0 || ip >>> (32 - len) === base >>> (32 - len);
const inV6 = (ip: bigint, base: bigint, len: bigint): boolean => ip >> (128n - len) === base >> (128n - len);

function isPrivateV4(ip: number): boolean {
  return V4_RANGES.some((r) => inV4(ip, r.base, r.len));
}

function isPrivateV6(ip: bigint): boolean {
  const low32 = Number(ip & 0xffffffffn);
  // ::ffff:a.b.c.d (IPv4-mapped): the IPv4 address decides.
  if (inV6(ip, 0xffffn << 32n, 96n)) return isPrivateV4(low32);
  // 64:ff9b::/96 (NAT64 well-known prefix): the embedded IPv4 address decides.
  if (inV6(ip, 0x0064ff9bn << 96n, 96n)) return isPrivateV4(low32);
  // 2002::/16 (6to4): the IPv4 address in bits 16..47 decides.
  if (inV6(ip, 0x2002n << 112n, 16n)) return isPrivateV4(Number((ip >> 80n) & 0xffffffffn));
  // Only 2000::/3 is global unicast; this also covers ::, ::1, ::a.b.c.d (IPv4-compatible),
  // 64:ff9b:1::/48, 100::/64, fc00::/7, fe80::/10, fec0::/10 and ff00::/8.
  if (!inV6(ip, 1n << 125n, 3n)) return true;
  return V6_RANGES.some((r) => inV6(ip, r.base, r.len));
}

/**
 * True when `ip` is not a public unicast address: private, loopback, link-local,
 * unique-local, CGNAT, multicast, unspecified, documentation or otherwise reserved.
 * Accepts IPv4 (dotted, or the decimal/octal/hex forms WHATWG URL normalizes), IPv6 with
 * or without brackets and zone id, IPv4-mapped / NAT64 / 6to4 IPv6. Anything that is not
 * an IP address at all is treated as private (fail closed).
 */
export function isPrivateAddress(ip: string): boolean {
  let s = ip.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  const v4 = parseIPv4(s);
  if (v4 !== null) return isPrivateV4(v4);
  const v6 = parseIPv6(s);
  if (v6 !== null) return isPrivateV6(v6);
  // 0x7f000001, 2130706433, 0177.0.0.1, 127.1 …: let WHATWG URL say what a browser would dial.
  if (/^[0-9a-fx.]+$/i.test(s)) {
    try {
      const host = new URL(`http://${s}/`).hostname;
      const n = parseIPv4(host);
      if (n !== null) return isPrivateV4(n);
    } catch {
      // not a host at all
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Create-time validation

export type WebhookUrlRefusal =
  | 'invalid_url'
  | 'scheme_not_allowed'
  | 'credentials_not_allowed'
  | 'missing_host'
  | 'localhost_not_allowed'
  | 'private_address';

function refuse(reason: WebhookUrlRefusal, message: string): AppError {
  return new AppError('VALIDATION_ERROR', message, { details: { field: 'webhook_url', reason } });
}

function isLocalhostName(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.+$/, '');
  return h === 'localhost' || h.endsWith('.localhost');
}

/** The host part of a URL without IPv6 brackets, or null when it is a name, not an IP literal. */
export function ipLiteralOf(url: URL): string | null {
  const h = url.hostname;
  if (h.startsWith('[') && h.endsWith(']')) return h.slice(1, -1);
  return isIPv4(h) ? h : null;
}

/**
 * Checks a webhook URL where a task is created (and again before every delivery): http or
 * https only, no credentials, a host, and no private / loopback / link-local / … IP literal
 * or `localhost` unless `allowPrivate`. Names that resolve to private addresses are caught
 * at delivery time by `makeGuardedLookup`. Throws AppError VALIDATION_ERROR with
 * `details: { field: 'webhook_url', reason }`.
 */
export function validateWebhookUrl(raw: string, opts: { allowPrivate: boolean }): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refuse('invalid_url', 'webhook_url is not a valid absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw refuse('scheme_not_allowed', `webhook_url must use http or https, not ${url.protocol.replace(/:$/, '')}`);
  }
  if (url.username !== '' || url.password !== '') {
    throw refuse('credentials_not_allowed', 'webhook_url must not contain a username or password');
  }
  if (url.hostname === '') throw refuse('missing_host', 'webhook_url must have a host');
  if (!opts.allowPrivate) {
    if (isLocalhostName(url.hostname)) {
      throw refuse('localhost_not_allowed', 'webhook_url must not point at localhost');
    }
    const ip = ipLiteralOf(url);
    if (ip !== null && isPrivateAddress(ip)) {
      throw refuse('private_address', `webhook_url must not point at a private or reserved address (${ip})`);
    }
  }
  return url;
}

// ---------------------------------------------------------------------------------------
// Delivery-time guard

/** Error code of the connection failure raised by the guarded lookup. */
export const PRIVATE_ADDRESS_CODE = 'EWEBHOOKPRIVATE';

export class PrivateAddressError extends Error {
  readonly code = PRIVATE_ADDRESS_CODE;
  constructor(
    readonly hostname: string,
    readonly address: string,
  ) {
    super(`refused: ${hostname} resolves to a private address (${address})`);
    this.name = 'PrivateAddressError';
  }
}

/**
 * A `lookup` for node:http(s) `request({ lookup })` / net.connect: resolves with
 * `dns.lookup` (all addresses) and fails the connection when ANY of them is private,
 * unless `allowPrivate`. Answers in the shape the caller asked for (`all` or single), so it
 * works with and without autoSelectFamily (happy eyeballs).
 */
export function makeGuardedLookup(opts: { allowPrivate: boolean }): LookupFunction {
  return (hostname, options, callback) => {
    const o = options as dns.LookupOptions | number | undefined;
    const family = (typeof o === 'number' ? o : (o?.family ?? 0)) as number;
    const wantAll = typeof o === 'object' && o?.all === true;
    const lookupOpts: dns.LookupAllOptions = { all: true, family };
    if (typeof o === 'object' && o?.hints !== undefined) lookupOpts.hints = o.hints;
    dns.lookup(hostname, lookupOpts, (err, addresses) => {
      if (err) return callback(err, '', undefined);
      if (!addresses || addresses.length === 0) {
        const e = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname });
        return callback(e, '', undefined);
      }
      if (!opts.allowPrivate) {
        const bad = addresses.find((a) => isPrivateAddress(a.address));
        if (bad) return callback(new PrivateAddressError(hostname, bad.address), '', undefined);
      }
      if (wantAll) return callback(null, addresses);
      callback(null, addresses[0].address, addresses[0].family);
    });
  };
}

/** The guarded lookup with private addresses refused. */
export const guardedLookup: LookupFunction = makeGuardedLookup({ allowPrivate: false });
