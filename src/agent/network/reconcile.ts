// Start-up reconciliation: remove every network object carrying the agent prefix that does not belong to a live cell —
// netns, host veths and nft elements (then unreferenced policy chains). With no live cell at all, the agent's table and
// gateway dummy go too. Off the hot path, so it spawns `ip`/`nft` freely; it reads state from /run/netns, /sys and `nft -j`.
import { readdirSync } from 'node:fs';
import { assertAgentPrefix, cellIdFromNetns, gatewayIfName, hostIfName, isCellHostIf } from './names.js';
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
  const links = listDir('/sys/class/net').filter((n) => isCellHostIf(prefix, n) && !liveIfs.has(n));
  const everything = live.size === 0;
  if (everything && listDir('/sys/class/net').includes(gatewayIfName(prefix))) links.push(gatewayIfName(prefix));
  const ipLines = [...links.map((l) => `link del ${l}`), ...netns.map((n) => `netns del ${n}`)];
  if (ipLines.length > 0) await run(['ip', '-force', '-batch', '-'], ipLines.join('\n') + '\n', { allowFailure: true });

  const listing = await run(['nft', '-j', 'list', 'table', 'inet', prefix], '', { allowFailure: true });
  if (!listing.trim().startsWith('{')) return { netns, links, nftElements: 0, tableRemoved: false };
  if (everything) {
    await run(['nft', 'delete', 'table', 'inet', prefix]);
    return { netns, links, nftElements: 0, tableRemoved: true };
  }
  const sets = new Map<string, NftValue[]>();
  const chains: string[] = [];
  for (const item of (JSON.parse(listing) as { nftables: Array<Record<string, unknown>> }).nftables) {
    const s = (item.set ?? item.map) as NftSet | undefined;
    if (s) sets.set(s.name, s.elem ?? []);
    const chain = item.chain as { name: string } | undefined;
    if (chain?.name.startsWith('eg_')) chains.push(chain.name);
  }
  const text = (v: NftValue): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v));
  const fields = (e: NftValue): NftValue[] => (Array.isArray(e) ? e : typeof e === 'object' && 'concat' in e ? (e.concat as NftValue[]) : [e]);
  const liveAddrs = new Set<string>();
  const commands: string[] = [];
  const del = (set: string, key: string): number => commands.push(`delete element inet ${prefix} ${set} { ${key} }`);
  for (const e of sets.get('src_ok') ?? []) {
    const [ifname, mac, addr] = fields(e).map(text);
    if (ifname && liveIfs.has(ifname)) liveAddrs.add(addr ?? '');
    else del('src_ok', `"${ifname}" . ${mac} . ${addr}`);
  }
  for (const e of sets.get('cell_mark') ?? []) {
    const [ifname] = fields(e).map(text);
    if (!ifname || !liveIfs.has(ifname)) del('cell_mark', `"${ifname}"`);
  }
  for (const e of sets.get('cell_flow') ?? []) {
    const [mark, ifname] = fields(e).map(text);
    if (!ifname || !liveIfs.has(ifname)) del('cell_flow', `${mark} . "${ifname}"`);
  }
  const usedChains = new Set<string>();
  for (const e of sets.get('cell_egress') ?? []) {
    const [addr, verdict] = fields(e);
    const target = (verdict as { jump?: { target?: string } } | undefined)?.jump?.target;
    if (addr !== undefined && liveAddrs.has(text(addr))) usedChains.add(target ?? '');
    else if (addr !== undefined) del('cell_egress', text(addr));
  }
  for (const e of sets.get('gw_allow') ?? []) {
    const parts = fields(e).map(text);
    if (!liveAddrs.has(parts[0] ?? '')) del('gw_allow', parts.join(' . '));
  }
  if (commands.length > 0) await run(['nft', '-f', '-'], commands.join('\n') + '\n');
  const unused = chains.filter((c) => !usedChains.has(c));
  if (unused.length > 0) await run(['nft', '-f', '-'], unused.map((c) => `delete chain inet ${prefix} ${c}`).join('\n') + '\n');
  return { netns, links, nftElements: commands.length, tableRemoved: false };
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
