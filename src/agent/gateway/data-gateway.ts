/** DataGateway forwards TCP connections from cells, on their gateway address, to the data service; TLS passes through untouched. */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** DataGatewayOptions: where the data service listens, and bounds on what cells may hold open. */
export interface DataGatewayOptions {
  target: { host: string; port: number };
  maxConnections?: number;
  /** Connections one cell (source address) may hold open, so that no tenant can starve the others on a shared gateway. */
  maxPerSource?: number;
  idleTimeoutMs?: number;
}

/** DataGateway owns one listener per gateway address; it never sees plaintext (the workload's TLS session ends at the data service). */
export class DataGateway {
  private readonly servers = new Map<string, Promise<Server>>();
  private readonly sockets = new Set<Socket>();
  /** The cell connections open per source address: what maxPerSource counts and what forget cuts. */
  private readonly perSource = new Map<string, Set<Socket>>();

  constructor(private readonly options: DataGatewayOptions) {}

  /** listen opens the gateway on `address:port` (once per address). */
  listen(address: string, port: number): Promise<Server> {
    const key = `${address}:${port}`;
    let s = this.servers.get(key);
    if (!s) {
      s = this.open(address, port);
      s.catch(() => this.servers.delete(key));
      this.servers.set(key, s);
    }
    return s;
  }

  /**
   * forget cuts every connection from `source` and frees its count. Called when the cell behind the address goes: the
   * address is then handed to another cell, which must neither inherit its connections nor find its quota used up.
   */
  forget(source: string): void {
    const clients = this.perSource.get(source);
    this.perSource.delete(source);
    for (const c of clients ?? []) c.destroy();
  }

  /** close stops every listener and cuts every forwarded connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const servers = await Promise.allSettled(this.servers.values());
    this.servers.clear();
    await Promise.all(servers.map((r) => (r.status === 'fulfilled' ? new Promise((done) => r.value.close(done)) : undefined)));
  }

  private open(address: string, port: number): Promise<Server> {
    const server = createServer({ pauseOnConnect: true }, (client) => this.forward(client));
    server.maxConnections = this.options.maxConnections ?? 4096;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address, port, exclusive: true }, () => {
        server.off('error', reject);
        resolve(server);
      });
    });
  }

  private forward(client: Socket): void {
    const source = client.remoteAddress ?? '';
    let clients = this.perSource.get(source);
    if (!clients) this.perSource.set(source, (clients = new Set()));
    if (clients.size >= (this.options.maxPerSource ?? 256)) return void client.destroy();
    const mine = clients.add(client);
    // The set, not the address: after forget, a closing connection of the old cell must not touch the next cell's count.
    client.once('close', () => {
      mine.delete(client);
      if (mine.size === 0 && this.perSource.get(source) === mine) this.perSource.delete(source);
    });
    const upstream = connect(this.options.target);
    const pair = [client, upstream];
    for (const s of pair) {
      this.sockets.add(s);
      s.setTimeout(this.options.idleTimeoutMs ?? 600_000, () => s.destroy());
      s.on('error', () => pair.forEach((x) => x.destroy()));
      s.on('close', () => {
        this.sockets.delete(s);
        pair.forEach((x) => x.destroy());
      });
    }
    upstream.once('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }
}
