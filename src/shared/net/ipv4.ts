// Pure IPv4 address and CIDR arithmetic shared by the allocator, the policy validator and the nft rule builder.

/** Cidr is a canonical IPv4 network: base address (host bits zero) as an unsigned 32-bit number and its prefix length. */
export interface Cidr {
  readonly base: number;
  readonly prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** parseIpv4 returns the address as an unsigned 32-bit number, or undefined unless it is a dotted quad without leading zeros. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** formatIpv4 renders an unsigned 32-bit number as a dotted quad. */
export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
}

/** prefixMask returns the network mask of a prefix length as an unsigned 32-bit number. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** parseCidr parses "a.b.c.d/n" (or a bare address as /32); `canonical` is false when host bits were set. */
export function parseCidr(text: string): { cidr: Cidr; canonical: boolean } | undefined {
  const [addrText, prefixText, extra] = text.split('/');
  if (addrText === undefined || extra !== undefined) return undefined;
  const addr = parseIpv4(addrText);
  if (addr === undefined) return undefined;
  let prefix = 32;
  if (prefixText !== undefined) {
    if (!/^(3[0-2]|[12]?\d)$/.test(prefixText)) return undefined;
    prefix = Number(prefixText);
  }
  const base = (addr & prefixMask(prefix)) >>> 0;
  return { cidr: { base, prefix }, canonical: base === addr };
}

/** formatCidr renders a Cidr as "a.b.c.d/n". */
export function formatCidr(cidr: Cidr): string {
  return `${formatIpv4(cidr.base)}/${cidr.prefix}`;
}

/** cidrLast returns the highest address inside a Cidr. */
export function cidrLast(cidr: Cidr): number {
  return (cidr.base | ~prefixMask(cidr.prefix)) >>> 0;
}

/** cidrContains tells whether `inner` lies entirely inside `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && ((inner.base & prefixMask(outer.prefix)) >>> 0) === outer.base;
}

/** cidrOverlaps tells whether two networks share at least one address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b) || cidrContains(b, a);
}

/** addressIn tells whether a single address lies inside a Cidr. */
export function addressIn(cidr: Cidr, addr: number): boolean {
  return ((addr & prefixMask(cidr.prefix)) >>> 0) === cidr.base;
}

/** cidrOf parses a CIDR that is known to be valid (constants), throwing otherwise. */
export function cidrOf(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed || !parsed.canonical) throw new Error(`not a canonical IPv4 CIDR: ${text}`);
  return parsed.cidr;
}

/** PRIVATE_RANGES are the RFC 1918 and RFC 6598 ranges a cell address pool may come from. */
export const PRIVATE_RANGES: readonly Cidr[] = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'].map(cidrOf);

/** FORBIDDEN_DESTINATIONS are never reachable from a cell, whatever the allow-list says (this-network, loopback, link-local incl. metadata services, multicast, reserved, broadcast). */
export const FORBIDDEN_DESTINATIONS: readonly Cidr[] = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4'].map(cidrOf);
