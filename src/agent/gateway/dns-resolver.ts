// DNS resolver on the workspace gateway addresses: cells resolve through it and are answered only what their egress policy allows.
// UDP only. Malformed packets, responses, and queries beyond a per-source rate are dropped without a reply. Otherwise:
//   source unknown to clientOf, or asking another workspace's gateway     REFUSED
//   opcode other than QUERY                                               NOTIMP
//   not one question, class not IN, type not A/AAAA (MX, TXT, ANY...)     REFUSED: "not served here"; an empty answer or
//                                                                         NXDOMAIN would be a false statement about the name
//   AAAA, any name                                                        NOERROR without answers (cells have no IPv6)
//   A, platform name (exact, case-insensitive, trailing dot ignored)      the platform address, TTL 60
//   A, any other name in cleanroom.internal                               NXDOMAIN
//   A, anything else, no upstream                                         REFUSED
//   A, anything else                                                      forwarded upstream with a fresh random id and port:
//     no reply in time, or an upstream error                              SERVFAIL
//     upstream NXDOMAIN                                                   NXDOMAIN
//     otherwise the name's CNAME chain and the A records at its end, reduced by allowedAnswers to the addresses the policy
//     allows (all in dry-run), TTL capped at 300. With no address left the answer is NXDOMAIN: the name exists, but the
//     workload may not reach it, and we do not reveal addresses it may not reach.
// Forwarded names still reach the upstream resolver, so this alone does not close DNS as a channel out of a cell.
// A later change adds name-based allow rules (extending allowedAnswers) and `add element ... timeout <ttl>` of every answered
// address to per-policy nft sets, so such rules open exactly the addresses the cell was told, for as long as it may use them.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import dnsPacket, { type Answer, type DecodedPacket, type StringAnswer } from 'dns-packet';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { addressIn, cidrOf, parseIpv4 } from '../../shared/net/ipv4.js';

/** ResolverClient is what the resolver knows about the cell behind a source address. */
export interface ResolverClient {
  readonly gateway: string;
  readonly policy: EgressPolicy;
  readonly platformNames: Readonly<Record<string, string>>;
}

/** GatewayResolverOptions configures a GatewayResolver; `upstream` is an IPv4 address and port, or null to resolve platform names only. */
export interface GatewayResolverOptions {
  clientOf(source: string): ResolverClient | undefined;
  upstream: { host: string; port: number } | null;
  timeoutMs?: number;
  log?: (msg: string, extra?: object) => void;
  /** The clock of the per-source rate limit, in milliseconds (default `performance.now`); tests pass one they move by hand. */
  now?: () => number;
}

/** QUERIES_PER_SECOND is each source address's sustained query rate (and burst); queries beyond it are dropped. */
export const QUERIES_PER_SECOND = 200;

const PLATFORM_ZONE = 'cleanroom.internal';
const PLATFORM_TTL = 60;
const MAX_TTL = 300;
const MAX_CNAME_HOPS = 8;
const DEFAULT_TIMEOUT_MS = 2000;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

interface Reply {
  readonly rcode: number;
  readonly answers?: readonly Answer[];
}

/** GatewayResolver answers cells' DNS queries on their gateway addresses, filtered by each cell's egress policy. */
export class GatewayResolver {
  private readonly sockets = new Map<string, { socket: Socket; bound: Promise<void> }>();
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly inflight = new Set<() => void>();
  private lastSweep = 0;
  private readonly now: () => number;

  constructor(private readonly options: GatewayResolverOptions) {
    this.now = options.now ?? (() => performance.now());
  }

  /** listen binds a UDP socket to address:port (a gateway address); listening again on the same pair is a no-op. */
  async listen(address: string, port: number): Promise<void> {
    const key = `${address}:${port}`;
    const existing = this.sockets.get(key);
    if (existing) return existing.bound;
    const socket = createSocket('udp4');
    socket.on('message', (msg, rinfo) => void this.onMessage(socket, address, msg, rinfo));
    const bound = new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, address, () => {
        socket.off('error', reject);
        socket.on('error', (err) => this.log('dns socket error', { address, port, error: err.message }));
        resolve();
      });
    });
    this.sockets.set(key, { socket, bound });
    try {
      await bound;
    } catch (err) {
      this.sockets.delete(key);
      socket.close();
      throw err;
    }
  }

  /** forget drops a source address's rate-limit state when the cell behind it goes, so the next cell starts afresh. */
  forget(source: string): void {
    this.buckets.delete(source);
  }

  /** close stops every listening socket and abandons the queries in flight upstream. */
  async close(): Promise<void> {
    for (const abort of this.inflight) abort();
    const sockets = [...this.sockets.values()];
    this.sockets.clear();
    await Promise.all(sockets.map(({ socket, bound }) => bound.then(() => new Promise<void>((resolve) => socket.close(() => resolve())), () => {})));
  }

  private async onMessage(socket: Socket, local: string, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    if (!this.admit(rinfo.address)) return;
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    if (query.flag_qr) return;
    const client = this.options.clientOf(rinfo.address);
    try {
      const reply = await this.resolve(query, local, rinfo.address, client);
      // The answer was made for the cell that asked (its policy): if another cell took the address meanwhile, drop it.
      if (this.options.clientOf(rinfo.address) !== client) return;
      const flags = dnsPacket.RECURSION_AVAILABLE | ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | reply.rcode;
      const packet = dnsPacket.encode({ type: 'response', id: query.id ?? 0, flags, questions: query.questions ?? [], answers: [...(reply.answers ?? [])] });
      socket.send(packet, rinfo.port, rinfo.address);
    } catch (err) {
      this.log('dns query failed', { source: rinfo.address, error: (err as Error).message });
    }
  }

  private async resolve(query: DecodedPacket, local: string, source: string, client: ResolverClient | undefined): Promise<Reply> {
    if (!client || client.gateway !== local) return { rcode: RCODE.REFUSED };
    if (((query.flags ?? 0) >> 11) & 0xf) return { rcode: RCODE.NOTIMP };
    const [question, ...more] = query.questions ?? [];
    if (!question || more.length > 0 || question.class !== 'IN') return { rcode: RCODE.REFUSED };
    if (question.type === 'AAAA') return { rcode: RCODE.NOERROR };
    if (question.type !== 'A') return { rcode: RCODE.REFUSED };
    const name = normalise(question.name);
    const platform = Object.entries(client.platformNames).find(([known]) => normalise(known) === name);
    if (platform) return { rcode: RCODE.NOERROR, answers: [{ type: 'A', name: question.name, ttl: PLATFORM_TTL, data: platform[1] }] };
    if (name === PLATFORM_ZONE || name.endsWith(`.${PLATFORM_ZONE}`)) return { rcode: RCODE.NXDOMAIN };
    const { upstream } = this.options;
    if (!upstream) return { rcode: RCODE.REFUSED };
    const reply = await this.forward(upstream, question.name);
    const upstreamRcode = reply ? (reply.flags ?? 0) & 0xf : RCODE.SERVFAIL;
    if (upstreamRcode === RCODE.NXDOMAIN) return { rcode: RCODE.NXDOMAIN };
    if (!reply || upstreamRcode !== RCODE.NOERROR) return { rcode: RCODE.SERVFAIL };
    const chain = chainOf(name, reply.answers ?? []);
    const kept = allowedAnswers(client.policy, chain);
    const answered = new Set(kept.map((r) => r.data));
    const denied = chain.filter((r) => r.type === 'A' && !answered.has(r.data)).map((r) => r.data);
    if (denied.length > 0) this.log('dns answer filtered by egress policy', { source, name, denied });
    if (kept.length === 0) return { rcode: RCODE.NXDOMAIN };
    return { rcode: RCODE.NOERROR, answers: kept.map((r) => ({ ...r, ttl: Math.min(r.ttl ?? 0, MAX_TTL) })) };
  }

  private forward(upstream: { host: string; port: number }, name: string): Promise<DecodedPacket | undefined> {
    const id = randomInt(0x10000);
    const query = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', class: 'IN', name }] });
    const socket = createSocket('udp4');
    return new Promise((resolve) => {
      const finish = (reply?: DecodedPacket): void => {
        if (!this.inflight.delete(finish)) return;
        clearTimeout(timer);
        socket.close();
        resolve(reply);
      };
      this.inflight.add(finish);
      const timer = setTimeout(() => {
        this.log('dns upstream timed out', { upstream, name });
        finish();
      }, this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      socket.on('error', (err) => {
        this.log('dns upstream failed', { upstream, name, error: err.message });
        finish();
      });
      socket.on('message', (msg, rinfo) => {
        if (rinfo.address !== upstream.host || rinfo.port !== upstream.port) return;
        let reply: DecodedPacket;
        try {
          reply = dnsPacket.decode(msg);
        } catch {
          return;
        }
        const [question] = reply.questions ?? [];
        if (reply.id === id && reply.flag_qr && question?.type === 'A' && normalise(question.name) === normalise(name)) finish(reply);
      });
      socket.send(query, upstream.port, upstream.host);
    });
  }

  // Token bucket per source address; buckets idle for a second are full again, so the periodic sweep forgets nothing.
  private admit(source: string): boolean {
    const now = this.now();
    if (now - this.lastSweep >= 1000) {
      for (const [key, bucket] of this.buckets) if (now - bucket.at >= 1000) this.buckets.delete(key);
      this.lastSweep = now;
    }
    const bucket = this.buckets.get(source) ?? { tokens: QUERIES_PER_SECOND, at: now };
    bucket.tokens = Math.min(QUERIES_PER_SECOND, bucket.tokens + ((now - bucket.at) * QUERIES_PER_SECOND) / 1000);
    bucket.at = now;
    this.buckets.set(source, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private log(msg: string, extra?: object): void {
    this.options.log?.(msg, extra);
  }
}

/** allowedAnswers keeps the CNAME chain and the A records whose address some policy rule's CIDR contains (all in dry-run); none if no address remains. */
export function allowedAnswers(policy: EgressPolicy, records: readonly StringAnswer[]): StringAnswer[] {
  if (policy.dryRun) return [...records];
  const networks = policy.allow.map((rule) => cidrOf(rule.cidr));
  const allowed = (address: number | undefined): boolean => address !== undefined && networks.some((net) => addressIn(net, address));
  const kept = records.filter((r) => r.type !== 'A' || allowed(parseIpv4(r.data)));
  return kept.some((r) => r.type === 'A') ? kept : [];
}

// The CNAME records leading from `name` through the reply, then the A records of the name the chain ends at.
function chainOf(name: string, answers: readonly Answer[]): StringAnswer[] {
  const chain: StringAnswer[] = [];
  let target = name;
  for (let hop = 0; hop < MAX_CNAME_HOPS; hop++) {
    const cname = answers.find((a): a is StringAnswer => a.type === 'CNAME' && normalise(a.name) === target);
    if (!cname) break;
    chain.push(cname);
    target = normalise(cname.data);
  }
  return [...chain, ...answers.filter((a): a is StringAnswer => a.type === 'A' && normalise(a.name) === target)];
}

function normalise(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
