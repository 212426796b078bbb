// The agent's nftables tables and the per-cell element commands. Two tables, in two network namespaces:
//   the agent's hub (`inet <prefix>` in netns <prefix>hub, holding every cell's host-side veth) is STATELESS: no ct
//   expression, no NAT, so conntrack never registers there and its connection count stays 0 — a veth going down there
//   costs no walk of the conntrack table (nf_nat_masquerade walks the whole table of the device's netns on every
//   NETDEV_DOWN while that netns tracks anything). It only binds each cell's veth to its MAC and address and lets cells
//   talk to nothing but the uplink:
//     src_ok      ifname . mac . addr      anti-spoofing binding, checked at prerouting -300; anything else from a cell veth is dropped
//   the host's table (`inet <prefix>` in the agent's netns) is stateful and keys a cell by its ADDRESS, which the hub has
//   made unforgeable: only bound sources go up the uplink, and pool sources of bound cells arriving on any other
//   interface are dropped before conntrack sees them (`pre`). Bound ones only, not the whole pool: a pool address that
//   lives elsewhere (a LAN host inside a misconfigured pool; the test lab's pool neighbour) must still be able to answer
//   the host, and a source no cell holds can reach nothing of a cell's (input drops the pool as destination, cell_in
//   takes only flows a cell opened, marked with that cell's mark).
//     gw_allow    addr . gateway . proto . port  the only host sockets a cell may reach
//     cell_egress addr : jump eg_<hash>        the cell's egress policy chain (content-addressed, shared by equal policies)
//     cell_mark   addr : mark / cell_flow mark . addr   tag each cell's conntrack entries, forwarded ones and those to the
//                 host's own sockets (gateway services) alike, so a later cell reusing the address never inherits them
//                 (no leftover "established" flow crosses tenants: an idle connection to the data gateway included).
//                 A host-bound TCP flow of another mark is denied before gw_allow, which would let the next cell on
//                 the address use it (cost: a new connection that happens to reuse such a flow's ports is refused until
//                 conntrack lets the entry go; the data gateway closes a removed cell's connections, so minutes). UDP
//                 ones go on to gw_allow: a datagram to the resolver carries nothing of the old cell (it is answered
//                 for the address's current cell), and denying it would fail the next cell's query whenever its random
//                 port is one the old cell used in the last ~30 s (the UDP entry's lifetime).
//                 A connection the host opens to a cell is marked too (output): the cell's replies pass.
// Traffic from veths without elements (prepared, unattached cells) matches nothing in the hub and is dropped.
// Only cells' forwarded egress is masqueraded: the host's own packets from a gateway address (to a gateway, over lo) keep
// their source, or replies from a socket bound to 0.0.0.0 miss the NAT mapping and never arrive.
// Denials are logged to the kernel log (from the host's table: a netns other than the host's logs nothing by default),
// rate limited per source, with prefix "<prefix> D " (denied) or "<prefix> W " (dry run). The record names its cell by
// the cell's mark, which the kernel prints (MARK=, the packet's mark) and which is unique per cell, not by its address:
// an address is handed to another workspace's cell as soon as it is free, before a late record of the old cell is
// read. The packet's mark is set from cell_mark (the address's binding when the packet passed, which the hub makes the
// sender's) just before logging. A denied packet is dropped, so its mark goes nowhere; a dry-run one is accepted, so its
// mark is cleared again, and one that arrived with a mark of its own (another ruleset's) keeps it and is logged as
// "<prefix> w " (a record that names no cell).
import { createHash } from 'node:crypto';
import type { EgressPolicy, EgressRule } from '../../shared/net/egress-policy.js';
import { formatCidr, FORBIDDEN_DESTINATIONS, type Cidr } from '../../shared/net/ipv4.js';
import type { SetElement } from './netlink/nftables.js';
import { HUB_UPLINK_IF, uplinkIfName } from './names.js';

/** GatewayPort is a host service on the workspace gateway a cell may reach. */
export interface GatewayPort {
  readonly protocol: 'tcp' | 'udp';
  readonly port: number;
}

/** CellElements is what attach adds for one cell and destroy removes again. */
export interface CellElements {
  readonly hostIf: string;
  readonly cellMac: string;
  readonly address: string;
  readonly gateway: string;
  readonly ctMark: number;
  readonly gatewayPorts: readonly GatewayPort[];
  readonly policyChain: string;
}

/** agentTableScript returns the `nft -f` script that (re)creates the agent's stateful table of the host's netns from scratch. */
export function agentTableScript(prefix: string, pool: Cidr, masquerade: boolean): string {
  const t = `inet ${prefix}`;
  const up = `"${uplinkIfName(prefix)}"`;
  const forbidden = [formatCidr(pool), ...FORBIDDEN_DESTINATIONS.map(formatCidr)].join(', ');
  const limit = (set: string): string => `update @${set} { ip saddr limit rate 20/second burst 50 packets }`;
  const log = (tag: string): string => `log prefix "${prefix} ${tag} " level debug`;
  return `table ${t}
delete table ${t}
table ${t} {
  set gw_allow { type ipv4_addr . ipv4_addr . inet_proto . inet_service; }
  map cell_egress { type ipv4_addr : verdict; }
  map cell_mark { type ipv4_addr : mark; }
  set cell_flow { type mark . ipv4_addr; }
  set forbidden { type ipv4_addr; flags interval; elements = { ${forbidden} }; }
  set deny_rl { type ipv4_addr; size 65536; flags dynamic,timeout; timeout 1m; }
  set dry_rl { type ipv4_addr; size 65536; flags dynamic,timeout; timeout 1m; }
  chain deny {
    meta mark set 0
    meta mark set ip saddr map @cell_mark
    ${limit('deny_rl')} ${log('D')}
    drop
  }
  chain would_deny {
    ${limit('dry_rl')} jump log_would_deny
    accept
  }
  chain log_would_deny {
    meta mark != 0 ${log('w')} accept
    meta mark set ip saddr map @cell_mark ${log('W')} meta mark set 0 accept
    ${log('w')}
  }
  chain pre { type filter hook prerouting priority -300; policy accept; iifname != { ${up}, "lo" } ip saddr @cell_mark drop; }
  chain cell_to_host {
    ct state established,related ct mark . ip saddr @cell_flow accept
    ct state established,related meta l4proto tcp jump deny
    ct state new ct mark set ip saddr map @cell_mark
    ip saddr . ip daddr . meta l4proto . th dport @gw_allow accept
    jump deny
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname ${up} jump cell_to_host
    ip daddr ${formatCidr(pool)} iifname != "lo" drop
  }
  chain output {
    type filter hook output priority 0; policy accept;
    oifname ${up} ct state new ct mark set ip daddr map @cell_mark
  }
  chain cell_out {
    oifname ${up} jump deny
    ip daddr @forbidden jump deny
    ct state established,related ct mark . ip saddr @cell_flow accept
    ct state new ct mark set ip saddr map @cell_mark
    ip saddr vmap @cell_egress
    jump deny
  }
  chain cell_in {
    ct state established,related ct mark . ip daddr @cell_flow accept
    counter drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname ${up} jump cell_out
    oifname ${up} jump cell_in
  }
  chain post {
    type nat hook postrouting priority 100; policy accept;
    ${masquerade ? `iifname ${up} ip saddr ${formatCidr(pool)} oifname != ${up} masquerade` : ''}
  }
}
`;
}

/**
 * hubTableScript returns the `nft -f` script that (re)creates the hub's stateless table. Nothing in it may use
 * conntrack (ct, nat, masquerade, ...): that would register conntrack in the hub and bring the walk back on every wipe.
 */
export function hubTableScript(prefix: string): string {
  const t = `inet ${prefix}`;
  const cells = `"${prefix}*"`;
  const up = `"${HUB_UPLINK_IF}"`;
  return `table ${t}
delete table ${t}
table ${t} {
  set src_ok { type ifname . ether_addr . ipv4_addr; }
  chain from_cell {
    meta nfproto ipv4 iifname . ether saddr . ip saddr @src_ok return
    counter drop
  }
  chain pre { type filter hook prerouting priority -300; policy accept; iifname ${cells} jump from_cell; }
  chain input { type filter hook input priority 0; policy drop; }
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname ${cells} oifname ${up} accept
    iifname ${up} oifname ${cells} accept
  }
}
`;
}

/** policyChainName returns the content-addressed chain name of an egress policy. */
export function policyChainName(policy: EgressPolicy): string {
  return `eg_${createHash('sha256').update(JSON.stringify(policy)).digest('hex').slice(0, 16)}`;
}

/** policyChainCommands returns the commands that (re)create a policy chain idempotently: add, flush, fill. */
export function policyChainCommands(prefix: string, policy: EgressPolicy): string[] {
  const name = policyChainName(policy);
  const t = `inet ${prefix} ${name}`;
  return [
    `add chain ${t}`,
    `flush chain ${t}`,
    ...policy.allow.map((rule) => `add rule ${t} ${ruleMatch(rule)} accept`),
    `add rule ${t} jump ${policy.dryRun ? 'would_deny' : 'deny'}`,
  ];
}

function ruleMatch(rule: EgressRule): string {
  const dst = rule.cidr === '0.0.0.0/0' ? '' : `ip daddr ${rule.cidr} `;
  if (rule.protocol === 'any') return dst || 'meta nfproto ipv4';
  if (!rule.ports) return `${dst}meta l4proto ${rule.protocol}`;
  const ports = rule.ports.from === rule.ports.to ? `${rule.ports.from}` : `${rule.ports.from}-${rule.ports.to}`;
  return `${dst}${rule.protocol} dport ${ports}`;
}

/** cellSetElements returns the host table's elements of one cell, which attach adds and destroy deletes as one transaction. */
export function cellSetElements(e: CellElements): SetElement[] {
  return [
    { set: 'cell_mark', key: [{ ipv4: e.address }], value: [{ mark: e.ctMark }] },
    { set: 'cell_flow', key: [{ mark: e.ctMark }, { ipv4: e.address }] },
    { set: 'cell_egress', key: [{ ipv4: e.address }], jump: e.policyChain },
    ...e.gatewayPorts.map((p): SetElement => ({ set: 'gw_allow', key: [{ ipv4: e.address }, { ipv4: e.gateway }, { proto: p.protocol }, { port: p.port }] })),
  ];
}

/** hubSetElements returns the hub table's element of one cell: the binding of its veth, MAC and address. */
export function hubSetElements(e: Pick<CellElements, 'hostIf' | 'cellMac' | 'address'>): SetElement[] {
  return [{ set: 'src_ok', key: [{ ifname: e.hostIf }, { ether: e.cellMac }, { ipv4: e.address }] }];
}
