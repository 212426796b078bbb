// The agent-side network layer: one CellNetworkHost per agent owns the nft table, the gateway dummy and two persistent
// co-processes (`ip -batch -` on the host, `nft -i`), so attaching a cell spawns no process. Topology, per cell:
//   routed point-to-point, no bridge: veth pair, `eth0` inside the cell netns with a /32, default route via the workspace
//   gateway (onlink, static neighbour, no ARP); host side has a /32 route and a static neighbour to the cell. Gateways live
//   on the agent's gateway interface (dummy, or ifb where the kernel has no dummy), one /32 per workspace. No L2 is shared, so every cell-to-cell packet meets nft.
// A prepared cell holds one parked `ip -n <netns> -batch -` (started off the hot path), which attach feeds and closes.
import { existsSync, writeFileSync } from 'node:fs';
import { Coprocess, IP_DIALECT, NFT_DIALECT } from './coprocess.js';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { addressIn, cidrOf, parseIpv4, type Cidr } from '../../shared/net/ipv4.js';
import { cellNames, gatewayIfName, type CellNames } from './names.js';
import { agentTableScript, cellElementCommands, policyChainCommands, policyChainName, type CellElements, type GatewayPort } from './nft-ruleset.js';
import { DeniedLog, type DeniedRecord } from './denied-log.js';
import { run } from '../exec.js';

/** CellNetworkHostOptions: the agent prefix `cr<agent6>`, the cell address pool and whether egress is masqueraded. */
export interface CellNetworkHostOptions {
  readonly prefix: string;
  readonly pool?: string;
  readonly masquerade?: boolean;
  /** Called once a new gateway address is on the host (before the attach that added it completes), to start services on it. */
  readonly onGateway?: (address: string) => Promise<void>;
}

/** CellNetwork is one cell's network; `netnsPath` goes into the OCI spec as the `network` namespace path. */
export interface CellNetwork {
  readonly cellId: string;
  readonly names: CellNames;
  readonly netnsPath: string;
  state: 'prepared' | 'attached' | 'destroyed';
  attached?: CellElements & { readonly workspaceId: string };
  parked?: Coprocess;
  /** How long each part of the attach took (nft elements, host routes, cell address), for the stage breakdown. */
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

const CELL_SYSCTLS = [
  'net.ipv6.conf.all.disable_ipv6=1',
  'net.ipv6.conf.default.disable_ipv6=1',
  'net.ipv4.ping_group_range=0 2147483647',
];
const HOST_IF_SYSCTLS: ReadonlyArray<[string, string]> = [
  ['ipv6/conf/%/disable_ipv6', '1'],
  ['ipv4/conf/%/forwarding', '1'],
  ['ipv4/conf/%/rp_filter', '1'],
  ['ipv4/conf/%/arp_ignore', '8'],
];

// The cell side of its address: a /32 on eth0, the gateway as a static neighbour, and the default route through it.
function cellAddressLines(names: CellNames, address: string, gateway: string): string[] {
  return [`address add ${address}/32 dev eth0`, `neigh replace ${gateway} lladdr ${names.hostMac} dev eth0 nud permanent`, `route replace default via ${gateway} dev eth0 onlink`];
}

/** CellNetworkHost creates, attaches and destroys cell networks for one agent prefix. */
export class CellNetworkHost {
  private readonly hostIp = new Coprocess(['ip', '-force', '-batch', '-'], IP_DIALECT);
  private readonly nft = new Coprocess(['nft', '-i'], NFT_DIALECT);
  private readonly chains = new Map<string, number>();
  private readonly gateways = new Set<string>();
  private readonly cellsByIf = new Map<string, string>();
  private readonly parked = new Set<Coprocess>();
  private deniedLog: DeniedLog | undefined;

  private constructor(
    readonly prefix: string,
    readonly pool: Cidr,
    private readonly onGateway: (address: string) => Promise<void>,
  ) {}

  /** open installs the agent table (unless present: live cells keep their elements across restarts) and the gateway dummy. */
  static async open(options: CellNetworkHostOptions): Promise<CellNetworkHost> {
    cellNames(options.prefix, 'probe');
    const pool = cidrOf(options.pool ?? '10.88.0.0/16');
    const listed = await run(['nft', 'list', 'table', 'inet', options.prefix], '', { allowFailure: true });
    if (!listed.includes('chain forward')) await run(['nft', '-f', '-'], agentTableScript(options.prefix, pool, options.masquerade ?? true));
    const gw = gatewayIfName(options.prefix);
    if (!existsSync(`/sys/class/net/${gw}`)) {
      // A dummy if the kernel has it, else an ifb (this host's kernel lacks dummy); the second add fails when the first worked.
      const lines = `link add ${gw} type dummy\nlink add ${gw} type ifb\nlink set ${gw} addrgenmode none\nlink set ${gw} up\n`;
      await run(['ip', '-force', '-batch', '-'], lines, { allowFailure: true });
      if (!existsSync(`/sys/class/net/${gw}`)) throw new Error(`cannot create the gateway interface ${gw}`);
    }
    return new CellNetworkHost(options.prefix, pool, options.onGateway ?? (async () => {}));
  }

  /**
   * prepareCellNetwork creates the netns, the veth pair and the parked in-netns `ip`; nothing tenant-specific.
   * With `preAddress` (gVisor cells) the address, routes and gateway are configured now instead of at attach: the
   * cell still reaches nothing until attach adds its nft elements (an interface without them is dropped at prerouting).
   */
  async prepareCellNetwork(cellId: string, preAddress?: { address: string; gateway: string }): Promise<CellNetwork> {
    const names = cellNames(this.prefix, cellId);
    await run(['ip', '-batch', '-'], [
      `netns add ${names.netns}`,
      `link add ${names.hostIf} address ${names.hostMac} type veth peer name eth0 address ${names.cellMac} netns ${names.netns}`,
      `link set ${names.hostIf} addrgenmode none`,
    ].join('\n') + '\n');
    // nsenter joins only the netns. `ip -n` / `ip netns exec` also unshare a mount namespace, and a long-lived
    // process there pins a copy of every mount of that moment — other cells' volumes — so their loop devices
    // could not be detached at wipe.
    const netnsPath = `/run/netns/${names.netns}`;
    await run(['nsenter', `--net=${netnsPath}`, '/usr/sbin/sysctl', '-q', '-w', ...CELL_SYSCTLS]);
    for (const [path, value] of HOST_IF_SYSCTLS) writeFileSync(`/proc/sys/net/${path.replace('%', names.hostIf)}`, value);
    const net: CellNetwork = { cellId, names, netnsPath, state: 'prepared', attachTimings: {} };
    net.parked = new Coprocess(['nsenter', `--net=${netnsPath}`, 'ip', '-force', '-batch', '-'], IP_DIALECT);
    this.parked.add(net.parked);
    await Promise.all([this.hostIp.run([`link set ${names.hostIf} up`]), net.parked.run(['link set lo up', 'link set eth0 up'])]);
    if (preAddress) {
      try {
        this.checkInPool(preAddress.address, preAddress.gateway);
        await Promise.all([this.addressHost(names, preAddress.address, preAddress.gateway), net.parked.run(cellAddressLines(names, preAddress.address, preAddress.gateway))]);
      } catch (e) {
        await this.destroyCellNetwork(net).catch(() => undefined);
        throw e;
      }
      const parked = net.parked;
      net.parked = undefined;
      this.parked.delete(parked);
      await parked.close();
      net.preAddressed = preAddress;
    }
    return net;
  }

  /** attachCellNetwork is the assignment hot path: address, routes and nft elements, with no process spawned. */
  async attachCellNetwork(net: CellNetwork, options: AttachOptions): Promise<void> {
    const parked = net.parked;
    const pre = net.preAddressed;
    if (net.state !== 'prepared' || !(parked || pre)) throw new Error(`cell ${net.cellId} is ${net.state}, not prepared`);
    if (pre && (pre.address !== options.address || pre.gateway !== options.gateway)) throw new Error(`cell ${net.cellId} was prepared with ${pre.address}, not ${options.address}`);
    this.checkInPool(options.address, options.gateway);
    for (const p of options.gatewayPorts) {
      if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535 || (p.protocol !== 'tcp' && p.protocol !== 'udp')) throw new Error(`bad gateway port ${JSON.stringify(p)}`);
    }
    const { names } = net;
    const policyChain = policyChainName(options.egress);
    const elements: CellElements = { hostIf: names.hostIf, cellMac: names.cellMac, address: options.address, gateway: options.gateway, ctMark: names.ctMark, gatewayPorts: options.gatewayPorts, policyChain };
    const nftCommands = [...(this.chains.has(policyChain) ? [] : policyChainCommands(this.prefix, options.egress)), ...cellElementCommands(this.prefix, 'add', elements)];
    net.parked = undefined;
    if (parked) this.parked.delete(parked);
    net.state = 'attached';
    net.attached = { ...elements, workspaceId: options.workspaceId };
    this.chains.set(policyChain, (this.chains.get(policyChain) ?? 0) + 1);
    this.rememberCell(names.hostIf, net.cellId);
    const t0 = performance.now();
    const timed = async (part: string, p: Promise<unknown> | undefined) => {
      await p;
      net.attachTimings[part] = performance.now() - t0;
    };
    try {
      await Promise.all([
        timed('attach_nft_ms', this.nft.run([nftCommands.join('; ')])),
        timed('attach_host_ms', pre ? undefined : this.addressHost(names, options.address, options.gateway)),
        timed('attach_cell_ms', parked?.run(cellAddressLines(names, options.address, options.gateway))),
      ]);
    } finally {
      void parked?.close();
    }
  }

  private checkInPool(...ips: string[]): void {
    for (const ip of ips) {
      const value = parseIpv4(ip);
      if (value === undefined || !addressIn(this.pool, value)) throw new Error(`address ${ip} is not inside the cell pool`);
    }
  }

  // The host side of a cell's address: the gateway /32 (first use starts the gateway services on it), a /32 route, a static neighbour.
  private async addressHost(names: CellNames, address: string, gateway: string): Promise<void> {
    const newGateway = !this.gateways.has(gateway);
    await this.hostIp.run([
      ...(newGateway ? [`address replace ${gateway}/32 dev ${gatewayIfName(this.prefix)}`] : []),
      `route replace ${address}/32 dev ${names.hostIf} src ${gateway}`,
      `neigh replace ${address} lladdr ${names.cellMac} dev ${names.hostIf} nud permanent`,
    ]);
    if (newGateway) {
      await this.onGateway(gateway);
      this.gateways.add(gateway);
    }
  }

  /** destroyCellNetwork removes the nft elements, the veth pair (with its routes and neighbours) and the netns; idempotent. */
  async destroyCellNetwork(net: CellNetwork): Promise<void> {
    if (net.parked) {
      this.parked.delete(net.parked);
      await net.parked.close();
      net.parked = undefined;
    }
    const attached = net.attached;
    if (attached && net.state === 'attached') {
      const commands = cellElementCommands(this.prefix, 'delete', attached);
      // One transaction normally; after a failed attach some elements may be missing, so fall back to one by one.
      await this.nft.run([commands.join('; ')]).catch(() => Promise.all(commands.map((c) => this.nft.run([c]).catch(() => undefined))));
      const left = (this.chains.get(attached.policyChain) ?? 1) - 1;
      if (left > 0) this.chains.set(attached.policyChain, left);
      else {
        this.chains.delete(attached.policyChain);
        await this.nft.run([`delete chain inet ${this.prefix} ${attached.policyChain}`]).catch(() => undefined); // busy: still used by a cell from before a restart
      }
    }
    net.state = 'destroyed';
    await run(['ip', '-force', '-batch', '-'], `link del ${net.names.hostIf}\nnetns del ${net.names.netns}\n`, { allowFailure: true });
    if (existsSync(net.netnsPath) || existsSync(`/sys/class/net/${net.names.hostIf}`)) throw new Error(`cell ${net.cellId}: network still present after destroy`);
  }

  /** onDenied subscribes to denied (and dry-run would-deny) connection records of this agent's cells. */
  onDenied(listener: (record: DeniedRecord) => void): () => void {
    if (!this.deniedLog) {
      this.deniedLog = new DeniedLog({ prefix: this.prefix, cellOf: (hostIf) => this.cellsByIf.get(hostIf) });
      this.deniedLog.start();
    }
    return this.deniedLog.onDenied(listener);
  }

  /** flushDenied delivers denial records logged so far without waiting for the next poll. */
  flushDenied(): void {
    this.deniedLog?.flush();
  }

  /** close stops the denial reader and the co-processes; cells and the table stay (reconcile owns removal). */
  async close(): Promise<void> {
    this.deniedLog?.stop();
    await Promise.all([this.hostIp.close(), this.nft.close(), ...[...this.parked].map((p) => p.close())]);
  }

  // Denial records may arrive after a cell is gone; keep the last few thousand interface → cell mappings.
  private rememberCell(hostIf: string, cellId: string): void {
    this.cellsByIf.delete(hostIf);
    this.cellsByIf.set(hostIf, cellId);
    for (const oldest of this.cellsByIf.keys()) {
      if (this.cellsByIf.size <= 4096) break;
      this.cellsByIf.delete(oldest);
    }
  }
}
