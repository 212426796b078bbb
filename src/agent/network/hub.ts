// The agent's network hub (not the control plane's agent hub): a network namespace of its own that holds the host side of every cell's veth, joined to the host's
// netns by one long-lived veth pair (the uplink). Why: this kernel has nftables masquerade built in, so its netdevice
// notifier walks the whole conntrack table of a netns each time a device goes down there while that netns tracks
// anything. Every wipe takes a cell's veth down; in the host's netns (which always tracks something) that was one walk
// of the whole table per job. The hub's netfilter use is stateless (nft-ruleset.ts, hubTableScript): conntrack never
// registers there, the hub's count stays 0 and the walk returns at once. The uplink never goes down while cells exist.
//   hub       forwarding on; rp_filter 1, arp_ignore 8 and IPv6 off for `all` and `default`, so every cell veth created
//             in it inherits them (no per-cell sysctl); a static neighbour and a /32 route per cell (cell-network.ts).
//             Policy routing: whatever arrives from a cell (any interface but the uplink) goes up the uplink, also when
//             aimed at another cell, so every decision about a cell's traffic is made (and logged) in the host's netns;
//             the reverse-path check (iif lo) and traffic from the uplink use the main table, with the cells' routes.
//   host      the pool is routed via the uplink; the stateful table keys cells by address (agentTableScript).
// Each side routes via a link-local next hop with a static neighbour. Only the host side has an address (link-local, the
// pool route's source; the hub has none but 127.0.0.1).
import { existsSync } from 'node:fs';
import { formatCidr, type Cidr } from '../../shared/net/ipv4.js';
import { run } from '../exec.js';
import { HUB_UPLINK_IF, hubNetnsName, uplinkIfName, uplinkNames } from './names.js';
import { writeNetSysctlsAsync } from './netlink/socket.js';
import { hubTableScript } from './nft-ruleset.js';
import { poolRouteClash, type PoolRoute } from './pool-clash.js';

/** HUB_UPLINK_TABLE is the hub's routing table for traffic from cells: only a default route, up the uplink. */
const HUB_UPLINK_TABLE = 100;
/** Rule preferences in the hub: the reverse-path check and the hub's own packets first, then everything not from the uplink. */
const RULE_PREF = { local: 100, fromCells: 101 } as const;

const HUB_SYSCTLS: ReadonlyArray<readonly [string, string]> = [
  ['ipv6/conf/all/disable_ipv6', '1'],
  ['ipv6/conf/default/disable_ipv6', '1'],
  ['ipv4/conf/all/forwarding', '1'],
  ['ipv4/conf/all/rp_filter', '1'],
  ['ipv4/conf/default/rp_filter', '1'],
  ['ipv4/conf/all/arp_ignore', '8'],
  ['ipv4/conf/default/arp_ignore', '8'],
];

const UPLINK_SYSCTLS: ReadonlyArray<readonly [string, string]> = [
  ['ipv6/conf/%/disable_ipv6', '1'],
  ['ipv4/conf/%/forwarding', '1'],
  ['ipv4/conf/%/rp_filter', '1'],
  ['ipv4/conf/%/arp_ignore', '8'],
];

/** hubNetnsPath returns the path of the agent's hub netns (for sockets opened inside it). */
export function hubNetnsPath(prefix: string): string {
  return `/run/netns/${hubNetnsName(prefix)}`;
}

/**
 * checkPoolRoutes refuses (before the agent makes anything on the host) a pool that is routed on a device not this
 * agent's: the hub's pool route must never take over another agent's network hub or a route of the host's own.
 */
export async function checkPoolRoutes(prefix: string, pool: Cidr): Promise<void> {
  const routes = JSON.parse((await run(['ip', '-j', '-4', 'route', 'show', 'table', 'all', 'root', formatCidr(pool)])) || '[]') as PoolRoute[];
  const clash = poolRouteClash(prefix, routes);
  if (clash) {
    throw new Error(
      `pool_routed_elsewhere: network.pool ${formatCidr(pool)} is already routed on this host (${clash.dst}${clash.dev ? ` dev ${clash.dev}` : ` ${clash.type ?? ''}`}${clash.table ? ` table ${clash.table}` : ''}: another agent's network hub or a route of the host's own): give each agent on a host its own network.pool, outside the host's routes`,
    );
  }
}

/**
 * openHub creates the hub, its uplink, routes and stateless table where missing and (re)sets what is idempotent; live
 * cells and their hub elements are kept (an agent restarting with live cells finds its hub as it left it).
 */
export async function openHub(prefix: string, pool: Cidr): Promise<void> {
  const hub = hubNetnsName(prefix);
  const path = hubNetnsPath(prefix);
  const up = uplinkIfName(prefix);
  const u = uplinkNames(prefix);
  if (!existsSync(path)) await run(['ip', 'netns', 'add', hub]);
  // Before the uplink exists, so it (like every cell veth after it) is created with the hub's defaults.
  await writeNetSysctlsAsync(HUB_SYSCTLS.map(([p, v]) => [path, p, v] as const));
  const fresh = !existsSync(`/sys/class/net/${up}`);
  if (fresh) {
    await run(['ip', '-batch', '-'], `link add ${up} address ${u.hostMac} type veth peer name ${HUB_UPLINK_IF} address ${u.hubMac} netns ${hub}\nlink set ${up} addrgenmode none\n`);
  }
  await writeNetSysctlsAsync(UPLINK_SYSCTLS.map(([p, v]) => [null, p.replace('%', up), v] as const));
  // The host side's link-local address is the pool route's source: what the host itself sends a cell (ICMP errors about
  // its forwarded packets: TTL exceeded, fragmentation needed, unreachable) comes from it, never from the host's LAN
  // address or another workspace's gateway. Scope link: the host never picks it as a source for anything else.
  // A fresh uplink's route is added (which fails rather than replace a route that appeared since the check).
  await run(
    ['ip', '-batch', '-'],
    [
      `address replace ${u.hostHop}/32 dev ${up} scope link`,
      `link set ${up} up`,
      `neigh replace ${u.hubHop} lladdr ${u.hubMac} dev ${up} nud permanent`,
      `route ${fresh ? 'add' : 'replace'} ${formatCidr(pool)} via ${u.hubHop} dev ${up} onlink src ${u.hostHop}`,
    ].join('\n') + '\n',
  );
  const inHub = ['ip', '-n', hub];
  await run([...inHub, '-force', '-batch', '-'], `rule del pref ${RULE_PREF.local}\nrule del pref ${RULE_PREF.fromCells}\n`, { allowFailure: true });
  await run(
    [...inHub, '-batch', '-'],
    [
      // lo up gives the hub its local routing table, without which the kernel refuses the onlink next hop below.
      'link set lo up',
      `link set ${HUB_UPLINK_IF} up`,
      `neigh replace ${u.hostHop} lladdr ${u.hostMac} dev ${HUB_UPLINK_IF} nud permanent`,
      `route replace default via ${u.hostHop} dev ${HUB_UPLINK_IF} onlink table ${HUB_UPLINK_TABLE}`,
      `rule add pref ${RULE_PREF.local} iif lo lookup main`,
      `rule add pref ${RULE_PREF.fromCells} not iif ${HUB_UPLINK_IF} lookup ${HUB_UPLINK_TABLE}`,
    ].join('\n') + '\n',
  );
  const nftInHub = ['nsenter', `--net=${path}`, 'nft'];
  const listed = await run([...nftInHub, 'list', 'table', 'inet', prefix], '', { allowFailure: true });
  if (!listed.includes('src_ok')) await run([...nftInHub, '-f', '-'], hubTableScript(prefix));
}

/** removeHub deletes the hub (with every veth still in it) and the uplink: at the agent's stop or its next start's reconcile, never while it runs. */
export async function removeHub(prefix: string): Promise<{ netns: string[]; links: string[] }> {
  const hub = hubNetnsName(prefix);
  const up = uplinkIfName(prefix);
  const links = existsSync(`/sys/class/net/${up}`) ? [up] : [];
  const netns = existsSync(hubNetnsPath(prefix)) ? [hub] : [];
  // The uplink first: deleted with the hub, its host side would go down only once the netns is cleaned up, later.
  const lines = [...links.map((l) => `link del ${l}`), ...netns.map((n) => `netns del ${n}`)];
  if (lines.length > 0) await run(['ip', '-force', '-batch', '-'], lines.join('\n') + '\n', { allowFailure: true });
  // What `ip` failed to delete is not reported as removed (the sweep's leftover check lists it).
  return { netns: netns.filter(() => !existsSync(hubNetnsPath(prefix))), links: links.filter((l) => !existsSync(`/sys/class/net/${l}`)) };
}
