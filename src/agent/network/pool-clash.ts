/**
 * poolClash finds an address of this host, on an interface that is not this agent's, inside the agent's cell pool:
 * another agent on the host with the same `network.pool` (its gateway), or a network of the host's own. Cells there
 * would get routes and gateway addresses that collide with it, so the agent refuses to start instead.
 */
import { networkInterfaces } from 'node:os';
import { addressIn, cidrOf, parseIpv4 } from '../../shared/net/ipv4.js';

/** PoolClash is the interface and address found inside the pool. */
export interface PoolClash {
  iface: string;
  address: string;
}

/** poolClash returns the first host address inside `pool` on an interface not named with `ownPrefix`, or null. */
export function poolClash(pool: string, ownPrefix: string, interfaces = networkInterfaces()): PoolClash | null {
  const cidr = cidrOf(pool);
  for (const [iface, addrs] of Object.entries(interfaces)) {
    if (iface.startsWith(ownPrefix)) continue;
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4') continue;
      const ip = parseIpv4(a.address);
      if (ip !== undefined && addressIn(cidr, ip)) return { iface, address: a.address };
    }
  }
  return null;
}

/** PoolRoute is one route of `ip -j route show table all root <pool>`: its destination and device (none for a blackhole). */
export interface PoolRoute {
  readonly dst: string;
  readonly dev?: string;
  readonly type?: string;
  readonly table?: string;
}

/**
 * poolRouteClash returns the first route inside `pool` (or of the pool itself) whose device is not this agent's (named
 * with `ownPrefix`): another agent's uplink on the same pool, or an operator's route (a VPN, a blackhole). The agent
 * routes the whole pool to its network hub, which would silently take such a route over, so it refuses to start instead.
 */
export function poolRouteClash(ownPrefix: string, routes: readonly PoolRoute[]): PoolRoute | null {
  return routes.find((r) => !r.dev || !r.dev.startsWith(ownPrefix)) ?? null;
}
