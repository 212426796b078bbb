// The agent-side network layer: one CellNetworkHost per agent owns its nft tables, the gateway dummy, the hub
// (hub.ts), netlink sockets (rtnetlink, nfnetlink) and three persistent co-processes (two `ip -batch -` on the host,
// `nft -i`), so no cell operation spawns a process. Topology, per cell:
//   routed point-to-point, no bridge: a veth pair whose host side lives in the agent's hub netns (never in the host's:
//   see hub.ts for the conntrack walk that avoids) and whose `eth0` lives in the cell netns with a /32, default route via
//   the workspace gateway (onlink, static neighbour, no ARP). The hub has a /32 route and a static neighbour to the cell
//   and sends everything from a cell up the uplink to the host's netns, which routes the pool back down the uplink.
//   Gateways live on the agent's gateway interface in the host's netns (dummy, or ifb where the kernel has no dummy),
//   one /32 per workspace. No L2 is shared, so every cell-to-cell packet meets nft in the host's netns.
// Attaching a cell is netlink only: nft set elements in one nfnetlink batch per table (the host's, then the hub's, whose
// anti-spoofing binding lets the cell's packets through), the hub's route and neighbour, and the cell's address and
// routes through an rtnetlink socket opened inside the cell's netns when it was prepared. (Feeding `nft -i` and a parked
// `ip` cost 5–8 ms here: waking an idle helper and nft's parser and cache.) The attach's exchanges run on the agent's
// thread (short, and on the start path, where a thread-pool round trip costs more); a prepare's and a wipe's run on the
// libuv thread pool (netlink/socket.ts): rtnetlink requests wait for the RTNL lock that other cells' netns and veth work
// holds (netlink/rtnl-lane.ts: one prepare's call at a time; a wipe's veth deletion waits beside it). Attaches and wipes use separate nftables
// sockets, since a socket takes no synchronous exchange while an asynchronous one is in flight.
// The co-processes do what is rare or off the hot path: creating (one `ip`) and deleting (another) netns and veths,
// gateway addresses, and policy chains (written in nft's own language, once per distinct policy; a chain no cell uses
// is kept for the next cell of that policy, up to MAX_IDLE_CHAINS of them, since creating one costs as much as the rest
// of an attach). A wipe deletes the cell's veth pair (over netlink, in the hub) and its netns: no device goes down in a
// netns that tracks connections.
import { existsSync } from 'node:fs';
import { Coprocess, IP_DIALECT, NFT_DIALECT } from './coprocess.js';
import { NftSocket } from './netlink/nftables.js';
import { RouteSocket, type RouteChange } from './netlink/rtnetlink.js';
import { NetlinkError, writeNetSysctlsAsync } from './netlink/socket.js';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { addressIn, cidrOf, parseIpv4, type Cidr } from '../../shared/net/ipv4.js';
import { cellNames, gatewayIfName, hubNetnsName, uplinkIfName, type CellNames } from './names.js';
import { agentTableScript, cellSetElements, hubSetElements, policyChainCommands, policyChainName, type CellElements, type GatewayPort } from './nft-ruleset.js';
import { DeniedLog, type DeniedRecord } from './denied-log.js';
import { checkPoolRoutes, hubNetnsPath, openHub } from './hub.js';
import { run } from '../exec.js';

/** CellNetworkHostOptions: the agent prefix `cr<agent6>`, the cell address pool and whether egress is masqueraded. */
export interface CellNetworkHostOptions {
  readonly prefix: string;
  readonly pool?: string;
  readonly masquerade?: boolean;
  /** Called once a new gateway address is on the host (before the attach that added it completes), to start services on it. */
  readonly onGateway?: (address: string) => Promise<void>;
  /** How often the denial reader polls the kernel log (default 100 ms); tests that deliver records by hand (flushDenied) set it long. */
  readonly deniedPollMs?: number;
}

/** CellNetwork is one cell's network; `netnsPath` goes into the OCI spec as the `network` namespace path. */
export interface CellNetwork {
  readonly cellId: string;
  readonly names: CellNames;
  readonly netnsPath: string;
  state: 'prepared' | 'attached' | 'destroyed';
  attached?: CellElements & { readonly workspaceId: string };
  /** An rtnetlink socket inside the cell's netns and the index of its eth0, held from prepare until attach. */
  inside?: { readonly socket: RouteSocket; readonly eth0: number };
  /** The index of the host-side veth, in the hub. */
  readonly hostIndex: number;
  /** How long each part of the attach took (nft elements, hub routes, cell address), for the stage breakdown. */
  readonly attachTimings: Record<string, number>;
  /** Set when the cell got its address at prepare (gVisor reads its network once, at start); attach then only binds policy. */
  preAddressed?: { readonly address: string; readonly gateway: string };
}

/** AttachOptions is what the assignment decides: workspace, address and gateway (from Ipam), gateway services, egress policy. */
export interface AttachOptions {
  readonly workspaceId: string;
  readonly address: string;
  readonly gateway: string;
  readonly gatewayPorts: readonly GatewayPort[];
  readonly egress: EgressPolicy;
}

const CELL_SYSCTLS: ReadonlyArray<readonly [string, string]> = [
  ['ipv6/conf/all/disable_ipv6', '1'],
  ['ipv6/conf/default/disable_ipv6', '1'],
  ['ipv4/ping_group_range', '0 2147483647'],
];
/** How many policy chains that no cell uses stay in the table for the next cell of their policy. */
const MAX_IDLE_CHAINS = 32;
/** How many (mark, address) → cell mappings the denial reader keeps for records that arrive after their cell is gone. */
const REMEMBERED_CELLS = 4096;

// The cell side of its address: a /32 on eth0, the gateway as a static neighbour, and the default route through it.
function cellAddress(names: CellNames, eth0: number, address: string, gateway: string): RouteChange[] {
  return [
    { kind: 'address', index: eth0, address, prefix: 32 },
    { kind: 'neighbour', index: eth0, address: gateway, mac: names.hostMac },
    { kind: 'route', dst: '0.0.0.0', prefix: 0, oif: eth0, gateway, onlink: true },
  ];
}

/** CellNetworkHost creates, attaches and destroys cell networks for one agent prefix. */
export class CellNetworkHost {
  private readonly hostIp = new Coprocess(['ip', '-force', '-batch', '-'], IP_DIALECT);
  /**
   * A second `ip -batch` for deletions: one co-process runs its commands one after another, and a wipe's netns
   * deletion (holding RTNL across RCU grace periods) made the next prepare's creation wait in the same pipe.
   */
  private readonly hostIpDelete = new Coprocess(['ip', '-force', '-batch', '-'], IP_DIALECT);
  private readonly nft = new Coprocess(['nft', '-i'], NFT_DIALECT);
  /** rtnetlink sockets in the hub: one for the hub's routes and neighbours (agent's thread), one to delete veths (thread pool). */
  private readonly hubRoutes: RouteSocket;
  private readonly hubWipes: RouteSocket;
  /** nftables sockets: the host's table and the hub's, each one for attaches and one for wipes. */
  private readonly sets: NftSocket;
  private readonly wipeSets: NftSocket;
  private readonly hubSets: NftSocket;
  private readonly hubWipeSets: NftSocket;
  /** Policy chains: how many attached cells jump to each and its creation (awaited by every attach); idle ones in use order. */
  private readonly chains = new Map<string, { users: number; ready?: Promise<void> }>();
  private readonly gateways = new Set<string>();
  private readonly cellsByMark = new Map<string, string>();
  private readonly insideSockets = new Set<RouteSocket>();
  private deniedLog: DeniedLog | undefined;

  private constructor(
    readonly prefix: string,
    readonly pool: Cidr,
    private readonly onGateway: (address: string) => Promise<void>,
    private readonly deniedPollMs: number | undefined,
  ) {
    const hub = hubNetnsPath(prefix);
    this.hubRoutes = new RouteSocket(hub);
    // A wipe's veth deletion waits for RTNL beside the prepares' lane, as the deleting co-process does for the netns:
    // in the lane, every prepare queued behind it.
    this.hubWipes = new RouteSocket(hub, { lane: false });
    this.sets = new NftSocket(prefix);
    this.wipeSets = new NftSocket(prefix);
    this.hubSets = new NftSocket(prefix, hub);
    this.hubWipeSets = new NftSocket(prefix, hub);
  }

  /**
   * open installs the agent table (unless present: live cells keep their elements across restarts), the gateway dummy
   * and the hub with its uplink (hub.ts; likewise kept).
   */
  static async open(options: CellNetworkHostOptions): Promise<CellNetworkHost> {
    cellNames(options.prefix, 'probe');
    const pool = cidrOf(options.pool ?? '10.88.0.0/16');
    await checkPoolRoutes(options.prefix, pool);
    const listed = await run(['nft', 'list', 'table', 'inet', options.prefix], '', { allowFailure: true });
    if (!listed.includes('log_would_deny') || !listed.includes(uplinkIfName(options.prefix))) await run(['nft', '-f', '-'], agentTableScript(options.prefix, pool, options.masquerade ?? true));
    const gw = gatewayIfName(options.prefix);
    if (!existsSync(`/sys/class/net/${gw}`)) {
      // A dummy if the kernel has it, else an ifb (this host's kernel lacks dummy); the second add fails when the first worked.
      const lines = `link add ${gw} type dummy\nlink add ${gw} type ifb\nlink set ${gw} addrgenmode none\nlink set ${gw} up\n`;
      await run(['ip', '-force', '-batch', '-'], lines, { allowFailure: true });
      if (!existsSync(`/sys/class/net/${gw}`)) throw new Error(`cannot create the gateway interface ${gw}`);
    }
    await openHub(options.prefix, pool);
    return new CellNetworkHost(options.prefix, pool, options.onGateway ?? (async () => {}), options.deniedPollMs);
  }

  /**
   * prepareCellNetwork creates the netns and the veth pair (host side in the hub); nothing tenant-specific.
   * With `preAddress` (gVisor cells) the address, routes and gateway are configured now instead of at attach: the
   * cell still reaches nothing until attach adds its nft elements (a veth without them is dropped at the hub's prerouting).
   */
  async prepareCellNetwork(cellId: string, preAddress?: { address: string; gateway: string }): Promise<CellNetwork> {
    const names = cellNames(this.prefix, cellId);
    const netnsPath = `/run/netns/${names.netns}`;
    let net: CellNetwork | undefined;
    let socket: RouteSocket | undefined;
    let vethMade = false;
    try {
      // The hub's defaults (IPv6 off, forwarding, rp_filter, arp_ignore) apply to the new host side: no sysctl of its own.
      // The host side is made in the hub and up at once (`up` in the creation request).
      await this.hostIp.run([
        `netns add ${names.netns}`,
        `link add ${names.hostIf} netns ${hubNetnsName(this.prefix)} address ${names.hostMac} up type veth peer name eth0 address ${names.cellMac} netns ${names.netns}`,
      ]);
      vethMade = true;
      socket = new RouteSocket(netnsPath);
      this.insideSockets.add(socket);
      // Two thread-pool calls (RtnlLane runs them one at a time): the links inside up, with eth0's index and its
      // peer's (the host side's index in the hub), in one request; the cell netns' sysctls in one call.
      const sysctls = CELL_SYSCTLS.map(([path, value]) => [netnsPath, path, value] as const);
      const [[, link]] = await Promise.all([socket.bringUp(['lo', 'eth0']), writeNetSysctlsAsync(sysctls)]);
      const eth0 = link?.index;
      const hostIndex = link?.peer;
      if (hostIndex === undefined || !Number.isInteger(hostIndex) || hostIndex <= 0 || eth0 === undefined) throw new Error(`cell ${cellId}: no interface index for ${names.hostIf} or eth0`);
      net = { cellId, names, netnsPath, state: 'prepared', attachTimings: {}, hostIndex, inside: { socket, eth0 } };
      if (preAddress) {
        this.checkInPool(preAddress.address, preAddress.gateway);
        await this.addressHub(net, preAddress.address, preAddress.gateway);
        socket.apply(`address cell ${cellId}`, cellAddress(names, eth0, preAddress.address, preAddress.gateway));
        this.closeInside(net);
        net.preAddressed = preAddress;
      }
      return net;
    } catch (e) {
      if (socket && !net) {
        socket.close();
        this.insideSockets.delete(socket);
      }
      // A veth of that name this prepare did not make is another cell's (a clash of names: names.ts): only the netns goes.
      if (!vethMade) await this.hostIpDelete.run([`netns del ${names.netns}`]).catch(() => undefined);
      else await this.destroyCellNetwork(net ?? { cellId, names, netnsPath, state: 'prepared', attachTimings: {}, hostIndex: 0 }).catch(() => undefined);
      throw e;
    }
  }

  /** attachCellNetwork is the assignment hot path: nft elements, hub route and cell address over netlink, nothing spawned. */
  async attachCellNetwork(net: CellNetwork, options: AttachOptions): Promise<void> {
    const inside = net.inside;
    const pre = net.preAddressed;
    if (net.state !== 'prepared' || !(inside || pre)) throw new Error(`cell ${net.cellId} is ${net.state}, not prepared`);
    if (pre && (pre.address !== options.address || pre.gateway !== options.gateway)) throw new Error(`cell ${net.cellId} was prepared with ${pre.address}, not ${options.address}`);
    this.checkInPool(options.address, options.gateway);
    for (const p of options.gatewayPorts) {
      if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535 || (p.protocol !== 'tcp' && p.protocol !== 'udp')) throw new Error(`bad gateway port ${JSON.stringify(p)}`);
    }
    const { names } = net;
    const policyChain = policyChainName(options.egress);
    const elements: CellElements = { hostIf: names.hostIf, cellMac: names.cellMac, address: options.address, gateway: options.gateway, ctMark: names.ctMark, gatewayPorts: options.gatewayPorts, policyChain };
    net.state = 'attached';
    net.attached = { ...elements, workspaceId: options.workspaceId };
    const chainReady = this.usePolicyChain(policyChain, options.egress);
    this.rememberCell(names.ctMark, options.address, net.cellId);
    const t0 = performance.now();
    try {
      await chainReady;
      // The host's elements first: once the hub binds the veth, the cell's packets reach the host's table.
      this.sets.change('add', cellSetElements(elements));
      this.hubSets.change('add', hubSetElements(elements));
      net.attachTimings.attach_nft_ms = performance.now() - t0;
      if (!pre) await this.addressHub(net, options.address, options.gateway);
      net.attachTimings.attach_host_ms = performance.now() - t0;
      if (inside) inside.socket.apply(`address cell ${net.cellId}`, cellAddress(names, inside.eth0, options.address, options.gateway));
      net.attachTimings.attach_cell_ms = performance.now() - t0;
    } finally {
      this.closeInside(net);
    }
  }

  // A policy seen for the first time gets its chain, written in nft's language once; every attach is then one batch of elements.
  private usePolicyChain(name: string, policy: EgressPolicy): Promise<void> {
    let chain = this.chains.get(name);
    if (!chain) chain = { users: 0 };
    this.chains.delete(name);
    this.chains.set(name, chain); // most recently used last
    chain.users++;
    if (!chain.ready) {
      const ready = this.nft.run([policyChainCommands(this.prefix, policy).join('; ')]).then(() => undefined);
      chain.ready = ready;
      const c = chain;
      ready.catch(() => {
        if (c.ready === ready) c.ready = undefined; // the next attach tries again
      });
    }
    return chain.ready;
  }

  // Deletes the least recently used chains that no cell uses, beyond MAX_IDLE_CHAINS.
  private async pruneIdleChains(): Promise<void> {
    const idle = [...this.chains].filter(([, c]) => c.users === 0);
    for (const [name] of idle.slice(0, Math.max(0, idle.length - MAX_IDLE_CHAINS))) {
      this.chains.delete(name);
      await this.nft.run([`delete chain inet ${this.prefix} ${name}`]).catch(() => undefined); // busy: still used by a cell from before a restart
    }
  }

  private closeInside(net: CellNetwork): void {
    if (!net.inside) return;
    net.inside.socket.close();
    this.insideSockets.delete(net.inside.socket);
    net.inside = undefined;
  }

  private checkInPool(...ips: string[]): void {
    for (const ip of ips) {
      const value = parseIpv4(ip);
      if (value === undefined || !addressIn(this.pool, value)) throw new Error(`address ${ip} is not inside the cell pool`);
    }
  }

  // The hub's side of a cell's address: a /32 route and a static neighbour; and the gateway /32 on the host (first use
  // starts the gateway services on it).
  private async addressHub(net: CellNetwork, address: string, gateway: string): Promise<void> {
    const newGateway = !this.gateways.has(gateway);
    if (newGateway) await this.hostIp.run([`address replace ${gateway}/32 dev ${gatewayIfName(this.prefix)}`]);
    this.hubRoutes.apply(`address hub ${net.names.hostIf}`, [
      { kind: 'route', dst: address, prefix: 32, oif: net.hostIndex },
      { kind: 'neighbour', index: net.hostIndex, address, mac: net.names.cellMac },
    ]);
    if (newGateway) {
      await this.onGateway(gateway);
      this.gateways.add(gateway);
    }
  }

  /** destroyCellNetwork removes the nft elements, the veth pair (with the hub's route and neighbour) and the netns; idempotent. */
  async destroyCellNetwork(net: CellNetwork): Promise<void> {
    this.closeInside(net);
    const attached = net.attached;
    if (attached && net.state === 'attached') {
      // The hub's binding first: from then on nothing of the cell's reaches the host's table.
      await deleteElements(this.hubWipeSets, hubSetElements(attached));
      await deleteElements(this.wipeSets, cellSetElements(attached));
      const chain = this.chains.get(attached.policyChain);
      if (chain) chain.users--;
      await this.pruneIdleChains();
    }
    net.state = 'destroyed';
    // The veth first (its hub side, with the hub's route and neighbour to the cell, must not outlive the cell while
    // something still holds the netns); both its ends go down in namespaces that track nothing.
    // By name (an index could be another veth's by now): the cell's own once its prepare made it (a prepare whose veth
    // creation failed on a clash of names never gets here).
    let vethLeft = false;
    await this.hubWipes.deleteLink(net.names.hostIf).catch(() => (vethLeft = true));
    await this.hostIpDelete.run([`netns del ${net.names.netns}`]).catch(() => undefined);
    if (existsSync(net.netnsPath) || vethLeft) throw new Error(`cell ${net.cellId}: network still present after destroy`);
  }

  /** onDenied subscribes to denied (and dry-run would-deny) connection records of this agent's cells. */
  onDenied(listener: (record: DeniedRecord) => void): () => void {
    if (!this.deniedLog) {
      this.deniedLog = new DeniedLog({ prefix: this.prefix, cellOf: (mark, address) => this.cellsByMark.get(`${mark} ${address}`), ...(this.deniedPollMs ? { pollMs: this.deniedPollMs } : {}) });
      this.deniedLog.start();
    }
    return this.deniedLog.onDenied(listener);
  }

  /** flushDenied delivers denial records logged so far without waiting for the next poll. */
  flushDenied(): void {
    this.deniedLog?.flush();
  }

  /** close stops the denial reader and the co-processes; cells, the hub and the tables stay (reconcile owns removal). */
  async close(): Promise<void> {
    this.deniedLog?.stop();
    for (const socket of this.insideSockets) socket.close();
    this.insideSockets.clear();
    this.hubRoutes.close();
    this.hubWipes.close();
    this.sets.close();
    this.wipeSets.close();
    this.hubSets.close();
    this.hubWipeSets.close();
    await Promise.all([this.hostIp.close(), this.hostIpDelete.close(), this.nft.close()]);
  }

  // Denial records may arrive after a cell is gone (and its address is another cell's): keep the last few thousand
  // (mark, address) → cell mappings. Both must match, so a record names a later cell only if that cell has the same
  // address AND the same 31-bit mark (the same odds as it inheriting the old cell's connections, cell_flow).
  private rememberCell(mark: number, address: string, cellId: string): void {
    const key = `${mark} ${address}`;
    this.cellsByMark.delete(key);
    this.cellsByMark.set(key, cellId);
    for (const oldest of this.cellsByMark.keys()) {
      if (this.cellsByMark.size <= REMEMBERED_CELLS) break;
      this.cellsByMark.delete(oldest);
    }
  }
}

// Deletes elements in one batch; after a failed attach some may be missing (a batch is all or nothing): one by one then.
async function deleteElements(socket: NftSocket, elements: ReturnType<typeof cellSetElements>): Promise<void> {
  try {
    await socket.changeAsync('delete', elements);
  } catch {
    for (const e of elements) {
      try {
        await socket.changeAsync('delete', [e]);
      } catch (err) {
        if (!(err instanceof NetlinkError && err.code === 'ENOENT')) throw err;
      }
    }
  }
}
