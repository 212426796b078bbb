// Cell address allocator: the pool (default 10.88.0.0/16, private ranges only) is carved into one subnet per workspace
// (default /24); in each, .1 is the workspace gateway and the rest (minus network and broadcast) are cell addresses.
// Pure logic: the agent keeps one instance and restores it from live cells with claim() after a restart.
import { cidrContains, cidrLast, formatCidr, formatIpv4, parseCidr, PRIVATE_RANGES, type Cidr } from '../../shared/net/ipv4.js';

/** IpamErrorCode lists the allocator's stable failure codes. */
export type IpamErrorCode = 'INVALID_POOL' | 'PUBLIC_POOL' | 'POOL_EXHAUSTED' | 'SUBNET_EXHAUSTED' | 'ADDRESS_NOT_IN_SUBNET' | 'ADDRESS_IN_USE';

/** IpamError is thrown by Ipam with a stable code. */
export class IpamError extends Error {
  constructor(readonly code: IpamErrorCode, message: string) {
    super(message);
  }
}

/** CellAddress is one allocation: the cell's /32 address, its workspace gateway and the workspace subnet. */
export interface CellAddress {
  readonly workspaceId: string;
  readonly address: string;
  readonly gateway: string;
  readonly subnet: string;
}

/** IpamOptions configures the pool and the per-workspace subnet size. */
export interface IpamOptions {
  readonly pool?: string;
  readonly subnetPrefix?: number;
}

interface Subnet {
  readonly index: number;
  readonly used: Set<number>;
  cursor: number;
}

/**
 * Ipam hands out per-workspace subnets and cell addresses, next-fit: a released address is reused as late as possible,
 * also across workspaces (a subnet's cursor outlives its workspace, so the next workspace given the subnet continues
 * after the last address handed out in it rather than at its first). That narrows, but does not close, the window in
 * which something of an ended cell (a conntrack entry, a late kernel-log record) meets a later cell on its address: the
 * network layer never relies on it (cell marks, cell-network.ts).
 */
export class Ipam {
  readonly pool: Cidr;
  readonly subnetPrefix: number;
  private readonly subnets = new Map<string, Subnet>();
  /** The next-fit cursor of each subnet index no workspace holds now. */
  private readonly cursors = new Map<number, number>();

  constructor(options: IpamOptions = {}) {
    const text = options.pool ?? '10.88.0.0/16';
    const parsed = parseCidr(text);
    if (!parsed || !parsed.canonical) throw new IpamError('INVALID_POOL', `pool ${text} is not a canonical IPv4 CIDR`);
    if (!PRIVATE_RANGES.some((r) => cidrContains(r, parsed.cidr))) {
      throw new IpamError('PUBLIC_POOL', `pool ${text} is not inside a private range (10/8, 172.16/12, 192.168/16, 100.64/10)`);
    }
    this.pool = parsed.cidr;
    this.subnetPrefix = options.subnetPrefix ?? 24;
    if (!Number.isInteger(this.subnetPrefix) || this.subnetPrefix < this.pool.prefix || this.subnetPrefix > 29) {
      throw new IpamError('INVALID_POOL', `subnet prefix /${this.subnetPrefix} must be between /${this.pool.prefix} and /29`);
    }
  }

  /** allocate returns a fresh cell address in the workspace's subnet, giving the workspace a subnet on first use. */
  allocate(workspaceId: string): CellAddress {
    const subnet = this.subnetOf(workspaceId);
    const cidr = this.cidrOfIndex(subnet.index);
    const first = cidr.base + 2;
    const count = cidrLast(cidr) - first;
    for (let i = 0; i < count; i++) {
      const candidate = first + ((subnet.cursor - first + i + count) % count);
      if (!subnet.used.has(candidate)) {
        subnet.used.add(candidate);
        subnet.cursor = candidate + 1;
        return this.describe(workspaceId, cidr, candidate);
      }
    }
    throw new IpamError('SUBNET_EXHAUSTED', `workspace ${workspaceId} has no free address in ${formatCidr(cidr)}`);
  }

  /** claim marks a known address (of a cell that survived an agent restart) as used by its workspace. */
  claim(workspaceId: string, address: string): CellAddress {
    const subnet = this.subnetOf(workspaceId);
    const cidr = this.cidrOfIndex(subnet.index);
    const parsed = parseCidr(address);
    const value = parsed?.cidr.base ?? -1;
    if (!parsed || parsed.cidr.prefix !== 32 || value < cidr.base + 2 || value >= cidrLast(cidr)) {
      throw new IpamError('ADDRESS_NOT_IN_SUBNET', `${address} is not a cell address of ${formatCidr(cidr)}`);
    }
    if (subnet.used.has(value)) throw new IpamError('ADDRESS_IN_USE', `${address} is already allocated`);
    subnet.used.add(value);
    return this.describe(workspaceId, cidr, value);
  }

  /** release frees an address; a workspace's subnet is returned to the pool when its last address is released. */
  release(workspaceId: string, address: string): void {
    const subnet = this.subnets.get(workspaceId);
    const value = parseCidr(address)?.cidr.base;
    if (!subnet || value === undefined) return;
    subnet.used.delete(value);
    if (subnet.used.size === 0) {
      this.subnets.delete(workspaceId);
      this.cursors.set(subnet.index, subnet.cursor);
    }
  }

  private subnetOf(workspaceId: string): Subnet {
    const existing = this.subnets.get(workspaceId);
    if (existing) return existing;
    const taken = new Set([...this.subnets.values()].map((s) => s.index));
    const capacity = 2 ** (this.subnetPrefix - this.pool.prefix);
    for (let index = 0; index < capacity; index++) {
      if (taken.has(index)) continue;
      const subnet: Subnet = { index, used: new Set(), cursor: this.cursors.get(index) ?? this.cidrOfIndex(index).base + 2 };
      this.cursors.delete(index);
      this.subnets.set(workspaceId, subnet);
      return subnet;
    }
    throw new IpamError('POOL_EXHAUSTED', `no free /${this.subnetPrefix} left in ${formatCidr(this.pool)}`);
  }

  private cidrOfIndex(index: number): Cidr {
    return { base: this.pool.base + index * 2 ** (32 - this.subnetPrefix), prefix: this.subnetPrefix };
  }

  private describe(workspaceId: string, cidr: Cidr, value: number): CellAddress {
    return { workspaceId, address: formatIpv4(value), gateway: formatIpv4(cidr.base + 1), subnet: formatCidr(cidr) };
  }
}
