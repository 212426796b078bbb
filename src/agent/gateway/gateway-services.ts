/** GatewayServices are the platform services a cell reaches on its gateway: the data-service forwarder and the DNS resolver. */
import { DATA_SERVICE_NAME } from '../../shared/wire.js';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { GatewayPort } from '../network/nft-ruleset.js';
import { DataGateway } from './data-gateway.js';
import { GatewayResolver, type ResolverClient } from './dns-resolver.js';

/** GatewayServicesOptions: the data service's address, the ports cells use, and the resolver's upstream (or none). */
export interface GatewayServicesOptions {
  dataService: { host: string; port: number };
  dataPort: number;
  dnsUpstream: { host: string; port: number } | null;
  log: (msg: string, extra?: object) => void;
}

/** DNS_PORT is where cells' resolv.conf points; resolv.conf cannot name another port. */
const DNS_PORT = 53;

/** GatewayServices opens its listeners on each gateway address as it appears and knows which cell is behind each source. */
export class GatewayServices {
  /** ports are the gateway sockets every attached cell may reach (its nft `gw_allow` elements). */
  readonly ports: readonly GatewayPort[];
  private readonly clients = new Map<string, ResolverClient>();
  private readonly data: DataGateway;
  private readonly dns: GatewayResolver;

  constructor(private readonly options: GatewayServicesOptions) {
    this.ports = [
      { protocol: 'tcp', port: options.dataPort },
      { protocol: 'udp', port: DNS_PORT },
    ];
    this.data = new DataGateway({ target: options.dataService });
    this.dns = new GatewayResolver({ clientOf: (source) => this.clients.get(source), upstream: options.dnsUpstream, log: options.log });
  }

  /** openOn starts the services on a gateway address (idempotent); the address must already be on the host. */
  async openOn(gateway: string): Promise<void> {
    await Promise.all([this.data.listen(gateway, this.options.dataPort), this.dns.listen(gateway, DNS_PORT)]);
  }

  /** addClient tells the resolver about a newly attached cell. */
  addClient(address: string, gateway: string, policy: EgressPolicy): void {
    this.clients.set(address, { gateway, policy, platformNames: { [DATA_SERVICE_NAME]: gateway } });
  }

  /**
   * removeClient forgets a cell's address when its network goes, before the address is free for another cell: its
   * connections to the data gateway are cut (they would otherwise idle for minutes, counted against the address) and
   * the resolver's state for it dropped.
   */
  removeClient(address: string): void {
    this.clients.delete(address);
    this.data.forget(address);
    this.dns.forget(address);
  }

  /** dataUrl is the data service's URL as cells see it. */
  get dataUrl(): string {
    return `https://${DATA_SERVICE_NAME}${this.options.dataPort === 443 ? '' : `:${this.options.dataPort}`}`;
  }

  /** close stops every listener. */
  async close(): Promise<void> {
    await Promise.all([this.data.close(), this.dns.close()]);
  }
}
