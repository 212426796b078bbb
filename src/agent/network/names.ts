// Naming scheme: every kernel object an agent creates carries its prefix `cr<agentId>` (8 chars), so an agent owns exactly its own objects.
//   netns      cr<agent6>-<cellId>          (no length limit; reconcile reads the cell id back from it)
//   host veth  cr<agent6><h7>               (15 chars = IFNAMSIZ-1; h7 = first 7 hex of sha256(cellId))
//   cell veth  eth0                         (created directly inside the netns, never visible on the host)
//   gateway    cr<agent6>gw                 (a dummy/ifb interface holding every workspace gateway address)
//   hub netns  cr<agent6>hub                (holds every host-side veth; no dash, so it never reads as a cell's netns)
//   uplink     cr<agent6>up  <->  uplink    (the veth pair between the host's netns and the hub)
// The hash is what fits 15 chars; reconcile maps live cell ids through the same hash. 28 bits make a clash between two
// live cells of one agent negligible, and a clash is detected (the veth creation fails), never silently shared.
// MACs are derived from the same hash (locally administered, unicast) so anti-spoofing and static neighbours are known in advance.
import { createHash } from 'node:crypto';

/** CellNames are the deterministic kernel names and MACs of one cell. */
export interface CellNames {
  readonly netns: string;
  readonly hostIf: string;
  readonly hostMac: string;
  readonly cellMac: string;
  /** ctMark tags the conntrack entries of this cell's flows, so a later cell reusing its address never inherits them. */
  readonly ctMark: number;
}

const PREFIX = /^cr[0-9a-f]{6}$/;
const CELL_ID = /^[0-9a-z]{1,32}$/;

/** assertAgentPrefix throws unless the prefix is `cr` followed by 6 lowercase hex characters. */
export function assertAgentPrefix(prefix: string): void {
  if (!PREFIX.test(prefix)) throw new Error(`invalid agent network prefix ${JSON.stringify(prefix)}: want cr + 6 hex`);
}

/** assertCellId throws unless the cell id is 1–32 lowercase letters or digits (safe in names and command lines). */
export function assertCellId(cellId: string): void {
  if (!CELL_ID.test(cellId)) throw new Error(`invalid cell id ${JSON.stringify(cellId)}: want 1-32 of [0-9a-z]`);
}

/** hostIfName returns the host-side veth name of a cell. */
export function hostIfName(prefix: string, cellId: string): string {
  return prefix + sha256Hex(cellId).slice(0, 7);
}

/** cellNames returns every name and MAC of a cell under an agent prefix. */
export function cellNames(prefix: string, cellId: string): CellNames {
  assertAgentPrefix(prefix);
  assertCellId(cellId);
  const h = sha256Hex(cellId);
  const tail = (h.slice(8, 18).match(/../g) ?? []).join(':');
  return {
    netns: `${prefix}-${cellId}`,
    hostIf: prefix + h.slice(0, 7),
    hostMac: `02:${tail}`,
    cellMac: `06:${tail}`,
    ctMark: (parseInt(h.slice(18, 26), 16) | 1) >>> 0,
  };
}

/** gatewayIfName returns the name of the agent's gateway dummy interface. */
export function gatewayIfName(prefix: string): string {
  return `${prefix}gw`;
}

/** hubNetnsName returns the name of the agent's hub network namespace (host sides of the cells' veths). */
export function hubNetnsName(prefix: string): string {
  return `${prefix}hub`;
}

/** uplinkIfName returns the host-side name of the veth pair between the host's netns and the hub. */
export function uplinkIfName(prefix: string): string {
  return `${prefix}up`;
}

/** HUB_UPLINK_IF is the hub-side name of the uplink (the hub is the agent's own netns: no prefix needed). */
export const HUB_UPLINK_IF = 'uplink';

/**
 * UplinkNames are the uplink's MACs and the next-hop addresses each side routes through. Neither next hop is configured
 * on any interface: each side has a static neighbour for the other's, so nothing on the uplink ever ARPs. Link-local,
 * so they never meet a cell, a gateway or a host network.
 */
export interface UplinkNames {
  readonly hostMac: string;
  readonly hubMac: string;
  /** The hub's next hop towards the host (the host side's MAC). */
  readonly hostHop: string;
  /** The host's next hop towards the hub (the hub side's MAC), for the whole cell pool. */
  readonly hubHop: string;
}

/** uplinkNames returns the uplink's MACs and next hops of an agent prefix. */
export function uplinkNames(prefix: string): UplinkNames {
  assertAgentPrefix(prefix);
  const tail = (sha256Hex(`uplink:${prefix}`).slice(0, 10).match(/../g) ?? []).join(':');
  return { hostMac: `02:${tail}`, hubMac: `06:${tail}`, hostHop: '169.254.0.1', hubHop: '169.254.0.2' };
}

/** cellIdFromNetns returns the cell id encoded in a netns name of this agent, or undefined for foreign names. */
export function cellIdFromNetns(prefix: string, netns: string): string | undefined {
  if (!netns.startsWith(`${prefix}-`)) return undefined;
  const id = netns.slice(prefix.length + 1);
  return CELL_ID.test(id) ? id : undefined;
}

/** isCellHostIf tells whether an interface name is a cell veth of this agent (not its gateway dummy). */
export function isCellHostIf(prefix: string, name: string): boolean {
  return name.length === prefix.length + 7 && name.startsWith(prefix) && /^[0-9a-f]{7}$/.test(name.slice(prefix.length));
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
