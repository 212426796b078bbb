// Start-up reconciliation: remove every network object carrying the agent prefix that does not belong to a live cell —
// netns (a cell's veth pair goes with its netns), host veths left in the hub, nft elements of the hub's table and the
// host's (then unreferenced policy chains). With no live cell at all (the agent's stop, or a start after a crash with
// nothing left alive), the agent's table, gateway dummy, network hub and uplink go too. Off the hot path, so it spawns
// `ip`/`nft` freely; it reads state from /run/netns, /sys, `ip -j` and `nft -j`.
import { readdirSync } from 'node:fs';
import { assertAgentPrefix, cellIdFromNetns, gatewayIfName, hostIfName, hubNetnsName, isCellHostIf } from './names.js';
import { hubNetnsPath, removeHub } from './hub.js';
import { run } from '../exec.js';

/** ReconcileReport lists what reconcileNetworks removed. */
export interface ReconcileReport {
  readonly netns: string[];
  readonly links: string[];
  readonly nftElements: number;
  readonly tableRemoved: boolean;
}

type NftValue = string | number | { concat: NftValue[] } | Record<string, unknown>;
interface NftSet {
  name: string;
  elem?: NftValue[];
}

/** reconcileNetworks deletes this prefix's netns, veths and nft elements of cells not in liveCellIds. */
export async function reconcileNetworks(prefix: string, liveCellIds: readonly string[]): Promise<ReconcileReport> {
  assertAgentPrefix(prefix);
  const live = new Set(liveCellIds);
  const liveIfs = new Set(liveCellIds.map((id) => hostIfName(prefix, id)));
  const netns = listDir('/run/netns').filter((n) => {
    const id = cellIdFromNetns(prefix, n);
    return id !== undefined && !live.has(id);
  });
  const hubExists = listDir('/run/netns').includes(hubNetnsName(prefix));
  const hubLinks = hubExists ? (await hubLinkNames(prefix)).filter((n) => isCellHostIf(prefix, n) && !liveIfs.has(n)) : [];
  // Host-side veths in the host's own netns: left by an agent from before the hub.
  const links = listDir('/sys/class/net').filter((n) => isCellHostIf(prefix, n) && !liveIfs.has(n));
  const everything = live.size === 0;
  if (everything && listDir('/sys/class/net').includes(gatewayIfName(prefix))) links.push(gatewayIfName(prefix));
  const ipLines = [...links.map((l) => `link del ${l}`), ...netns.map((n) => `netns del ${n}`)];
  if (ipLines.length > 0) await run(['ip', '-force', '-batch', '-'], ipLines.join('\n') + '\n', { allowFailure: true });
  if (!everything && hubLinks.length > 0) await run(['ip', '-n', hubNetnsName(prefix), '-force', '-batch', '-'], hubLinks.map((l) => `link del ${l}`).join('\n') + '\n', { allowFailure: true });
  links.push(...hubLinks);

  let nftElements = 0;
  const liveAddrs = new Set<string>();
  if (everything) {
    const hub = await removeHub(prefix);
    netns.push(...hub.netns);
    links.push(...hub.links);
  } else if (hubExists) {
    const commands: string[] = [];
    const sets = await tableSets(['nsenter', `--net=${hubNetnsPath(prefix)}`, 'nft'], prefix);
    for (const e of sets?.sets.get('src_ok') ?? []) {
      const [ifname, mac, addr] = fields(e).map(text);
      if (ifname && liveIfs.has(ifname)) liveAddrs.add(addr ?? '');
      else commands.push(`delete element inet ${prefix} src_ok { "${ifname}" . ${mac} . ${addr} }`);
    }
    if (commands.length > 0) await run(['nsenter', `--net=${hubNetnsPath(prefix)}`, 'nft', '-f', '-'], commands.join('\n') + '\n');
    nftElements += commands.length;
  }

  const host = await tableSets(['nft'], prefix);
  if (!host) return { netns, links, nftElements, tableRemoved: false };
  if (everything) {
    await run(['nft', 'delete', 'table', 'inet', prefix]);
    return { netns, links, nftElements, tableRemoved: true };
  }
  const commands: string[] = [];
  const del = (set: string, key: string): number => commands.push(`delete element inet ${prefix} ${set} { ${key} }`);
  for (const e of host.sets.get('cell_mark') ?? []) {
    const [addr] = fields(e).map(text);
    if (!liveAddrs.has(addr ?? '')) del('cell_mark', `${addr}`);
  }
  for (const e of host.sets.get('cell_flow') ?? []) {
    const [mark, addr] = fields(e).map(text);
    if (!liveAddrs.has(addr ?? '')) del('cell_flow', `${mark} . ${addr}`);
  }
  const usedChains = new Set<string>();
  for (const e of host.sets.get('cell_egress') ?? []) {
    const [addr, verdict] = fields(e);
    const target = (verdict as { jump?: { target?: string } } | undefined)?.jump?.target;
    if (addr !== undefined && liveAddrs.has(text(addr))) usedChains.add(target ?? '');
    else if (addr !== undefined) del('cell_egress', text(addr));
  }
  for (const e of host.sets.get('gw_allow') ?? []) {
    const parts = fields(e).map(text);
    if (!liveAddrs.has(parts[0] ?? '')) del('gw_allow', parts.join(' . '));
  }
  if (commands.length > 0) await run(['nft', '-f', '-'], commands.join('\n') + '\n');
  const unused = host.chains.filter((c) => !usedChains.has(c));
  if (unused.length > 0) await run(['nft', '-f', '-'], unused.map((c) => `delete chain inet ${prefix} ${c}`).join('\n') + '\n');
  return { netns, links, nftElements: nftElements + commands.length, tableRemoved: false };
}

/** hubLinkNames lists the interfaces in the agent's hub. */
async function hubLinkNames(prefix: string): Promise<string[]> {
  const out = await run(['ip', '-n', hubNetnsName(prefix), '-j', 'link', 'show'], '', { allowFailure: true });
  try {
    return (JSON.parse(out) as Array<{ ifname?: string }>).flatMap((l) => (l.ifname ? [l.ifname] : []));
  } catch {
    return [];
  }
}

// The sets and maps (with their elements) and the policy chains of the agent's table, read with `nft -j` (argv: how to run nft).
async function tableSets(nft: readonly string[], prefix: string): Promise<{ sets: Map<string, NftValue[]>; chains: string[] } | undefined> {
  const listing = await run([...nft, '-j', 'list', 'table', 'inet', prefix], '', { allowFailure: true });
  if (!listing.trim().startsWith('{')) return undefined;
  const sets = new Map<string, NftValue[]>();
  const chains: string[] = [];
  for (const item of (JSON.parse(listing) as { nftables: Array<Record<string, unknown>> }).nftables) {
    const s = (item.set ?? item.map) as NftSet | undefined;
    if (s) sets.set(s.name, s.elem ?? []);
    const chain = item.chain as { name: string } | undefined;
    if (chain?.name.startsWith('eg_')) chains.push(chain.name);
  }
  return { sets, chains };
}

const text = (v: NftValue): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v));
const fields = (e: NftValue): NftValue[] => (Array.isArray(e) ? e : typeof e === 'object' && 'concat' in e ? (e.concat as NftValue[]) : [e]);

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
