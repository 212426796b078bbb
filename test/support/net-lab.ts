/**
 * NetLab gives reachability tests real things to aim at, so that "blocked" can only mean the firewall dropped the packet:
 *   - a network namespace of the test's own (the "lab") behind a veth, holding the "internet" (203.0.113.10 and .20: TCP 8080
 *     and 8081, UDP echo 5353), a metadata look-alike (169.254.169.254, TCP 80) and a neighbour inside the cell pool (the pool's
 *     last address but one: TCP 8080, UDP echo 5353). Policy routing sends packets from the pool into the lab or along the
 *     host's routes more specific than its default (cells, the neighbour, local subnets); the default route is replaced by
 *     an `unreachable` rule, so a probe that slipped past the firewall still could not reach the internet or a metadata service;
 *   - host listeners (TCP, and UDP echo) on any address the test names, e.g. a workspace gateway, the lab veth's host side or
 *     0.0.0.0, which record every peer that reached them;
 *   - PROBE_PY, one probe harness (Python, runs in runc and in gVisor cells alike): TCP connect, UDP echo, a DNS query, an ICMP
 *     echo, all in parallel, each reported as `open[:detail]`, `timeout`, `refused` or `error:<errno>`.
 * Only `timeout` counts as blocked: a refusal means a packet got through to the host stack. `controls()` runs the same harness
 * from the host and from inside the lab against every target that has a live listener there, so each must answer `open` first.
 * Safety: every address probed is the lab's, a cell's, a gateway's or one of this host's own (delivered locally).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { promisify } from 'node:util';
import { cidrLast, cidrOf, formatIpv4, parseIpv4, addressIn } from '../../src/shared/net/ipv4.js';

const sh = promisify(execFile);

/** PROBE_TIMEOUT_S is how long one probe waits before it counts as blocked (a TCP connect gets one SYN retransmission in it). */
export const PROBE_TIMEOUT_S = 2;

/** LAB is what lives in the lab namespace. */
export const LAB = {
  allowed: '203.0.113.10',
  other: '203.0.113.20',
  tcpPort: 8080,
  otherTcpPort: 8081,
  udpPort: 5353,
  metadata: '169.254.169.254',
  metadataPort: 80,
} as const;

/** ProbeKind is what one probe does; `dns` asks for data.cleanroom.internal and reports the address answered. */
export type ProbeKind = 'tcp' | 'udp' | 'dns' | 'icmp';

/** Target is one probe with its expected verdict; `live` names where a control probe must find a listener answering. */
export interface Target {
  kind: ProbeKind;
  host: string;
  port?: number;
  expect: 'open' | 'blocked';
  what: string;
  live?: 'host' | 'lab';
}

/** Aim is a target before a test says what it expects of it. */
export type Aim = Pick<Target, 'kind' | 'host' | 'port' | 'live'>;

/** expect turns an aim into a target. */
export function expect(aim: Aim, verdict: Target['expect'], what: string): Target {
  return { ...aim, expect: verdict, what };
}

/** PROBE_PY defines `probe_all(targets, timeout)`: every target probed in its own thread; a list of results in target order.
 *  A host written `@gw` is the default gateway of the namespace it runs in. Targets expected open get up to two more tries. */
export const PROBE_PY = String.raw`
import socket, struct, threading, time, errno as _errno
def _gateway():
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000': return socket.inet_ntoa(struct.pack('<L', int(f[2], 16)))
def _dns_query():
    q = b''.join(bytes([len(p)]) + p.encode() for p in 'data.cleanroom.internal'.split('.')) + b'\0'
    return struct.pack('!HHHHHH', 0x5eed, 0x0100, 1, 0, 0, 0) + q + struct.pack('!HH', 1, 1)
def _once(t, timeout):
    kind, host, port = t['kind'], t['host'], t.get('port', 0)
    if kind == 'tcp':
        s = socket.socket(); s.settimeout(timeout)
        try:
            s.connect((host, port)); return 'open'
        finally: s.close()
    if kind in ('udp', 'dns'):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((host, port)); payload = _dns_query() if kind == 'dns' else b'ping'
            end = time.monotonic() + timeout
            while True:
                left = end - time.monotonic()
                if left <= 0: return 'timeout'
                s.send(payload); s.settimeout(min(left, timeout / 3))
                try: d = s.recv(512)
                except socket.timeout: continue
                if kind == 'udp': return 'open'
                an = struct.unpack('!H', d[6:8])[0]
                return 'open:' + (socket.inet_ntoa(d[-4:]) if an else 'rcode%d' % (d[3] & 15))
        finally: s.close()
    if kind == 'icmp':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(timeout)
        try:
            s.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, 1) + b'probe', (host, 0)); s.recvfrom(100); return 'open'
        finally: s.close()
    return 'error:kind'
def _probe(t, timeout):
    try: return _once(t, timeout)
    except socket.timeout: return 'timeout'
    except ConnectionRefusedError: return 'refused'
    except OSError as e: return 'error:' + _errno.errorcode.get(e.errno, str(e.errno))
def probe_all(targets, timeout):
    gw = _gateway()
    for t in targets:
        if t['host'] == '@gw': t['host'] = gw
    results = [None] * len(targets)
    def run(i, t):
        r = _probe(t, timeout)
        for _ in range(2 if t.get('retry') else 0):
            if r.startswith('open'): break
            time.sleep(0.2); r = _probe(t, timeout)
        results[i] = r
    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for th in threads: th.start()
    for th in threads: th.join()
    return results
`;

/** wireTargets is what a cell's PROBE_PY gets: no expectations, only a retry flag on targets that must answer. */
export function wireTargets(targets: readonly Target[]): Array<{ kind: ProbeKind; host: string; port?: number; retry?: boolean }> {
  return targets.map((t) => ({ kind: t.kind, host: t.host, ...(t.port !== undefined ? { port: t.port } : {}), ...(t.expect === 'open' ? { retry: true } : {}) }));
}

/** verdictFailures compares results with expectations: open means `open…`, blocked means exactly `timeout`. */
export function verdictFailures(source: string, targets: readonly Target[], results: readonly (string | null)[]): string[] {
  if (results.length !== targets.length) return [`${source}: ${results.length} results for ${targets.length} targets`];
  const failures: string[] = [];
  targets.forEach((t, i) => {
    const got = results[i] ?? 'missing';
    const ok = t.expect === 'open' ? got.startsWith('open') : got === 'timeout';
    if (!ok) failures.push(`${source} → ${t.what} (${t.kind} ${t.host}:${t.port ?? ''}): expected ${t.expect === 'open' ? 'open' : 'timeout'}, got ${got}`);
  });
  return failures;
}

// The lab's listeners: TCP servers that say "lab", UDP sockets that echo; prints READY when every one is bound.
const LAB_SERVER = String.raw`
const net = require('net'), dgram = require('dgram');
const { tcp, udp } = JSON.parse(process.argv[1]);
let left = tcp.length + udp.length;
const ready = () => { if (--left === 0) process.stdout.write('READY\n'); };
const fail = (e) => { process.stderr.write(e.message + '\n'); process.exit(1); };
for (const [h, p] of tcp) net.createServer((c) => { c.on('error', () => undefined); c.end('lab'); }).on('error', fail).listen(p, h, ready);
for (const [h, p] of udp) { const u = dgram.createSocket('udp4'); u.on('error', fail); u.on('message', (m, r) => u.send(m, r.port, r.address)); u.bind(p, h, ready); }
`;

/** NetLab is one lab namespace with its routes, its listeners and the host listeners the test opened; close() removes all. */
export class NetLab {
  /** The lab veth's address on the host side (a host address cells must not reach). */
  readonly hostSide: string;
  /** An address inside the cell pool that is not a cell: it lives in the lab namespace. */
  readonly poolNeighbour: string;
  private readonly labSide: string;
  private readonly ns: string;
  private readonly hostIf: string;
  private readonly table: number;
  private readonly rulePref: number;
  private server: ChildProcess | undefined;
  private readonly servers: Server[] = [];
  private readonly sockets: Socket[] = [];
  private readonly arrivals: Array<{ listener: string; from: string }> = [];

  private constructor(readonly pool: string) {
    const tag = randomBytes(3).toString('hex');
    this.ns = `crlab${tag}`;
    this.hostIf = `crlab${tag}`;
    // A /30 of 198.51.100.0/24 other than the first (other tests use 198.51.100.0/30), a routing table and rule
    // preferences of our own: tests in other worktrees may run at the same time.
    const quad = 1 + (randomBytes(1)[0]! % 63);
    this.hostSide = `198.51.100.${quad * 4 + 1}`;
    this.labSide = `198.51.100.${quad * 4 + 2}`;
    this.table = 100_000 + randomBytes(2).readUInt16BE(0);
    this.rulePref = 20_000 + (randomBytes(2).readUInt16BE(0) % 3000) * 3;
    this.poolNeighbour = formatIpv4(cidrLast(cidrOf(pool)) - 1);
  }

  /** open builds the lab for a cluster's cell pool; a failure part-way removes what was made. */
  static async open(pool: string): Promise<NetLab> {
    if (process.getuid?.() !== 0) throw new Error('the network lab needs root (netns, veth, policy routing): run the tests as root');
    const lab = new NetLab(pool);
    try {
      await lab.build();
      return lab;
    } catch (e) {
      await lab.close().catch((err: Error) => console.error(`lab cleanup after a failed open: ${err.message}`));
      throw e;
    }
  }

  private async build(): Promise<void> {
    const { pool, ns, hostIf, table, rulePref: pref } = this;
    await ipBatch([
      `netns add ${ns}`,
      `link add ${hostIf} type veth peer name eth0 netns ${ns}`,
      `address add ${this.hostSide}/30 dev ${hostIf}`,
      `link set ${hostIf} up`,
      `route add ${this.poolNeighbour}/32 via ${this.labSide} dev ${hostIf}`,
      `route add 203.0.113.0/24 via ${this.labSide} dev ${hostIf} table ${table}`,
      `route add ${LAB.metadata}/32 via ${this.labSide} dev ${hostIf} table ${table}`,
      `rule add from ${pool} lookup ${table} pref ${pref}`,
      `rule add from ${pool} lookup main suppress_prefixlength 0 pref ${pref + 1}`,
      `rule add from ${pool} unreachable pref ${pref + 2}`,
    ]);
    writeFileSync(`/proc/sys/net/ipv4/conf/${hostIf}/forwarding`, '1');
    const inLab = ['link set lo up', 'link set eth0 up', `address add ${this.labSide}/30 dev eth0`, `route add default via ${this.hostSide}`];
    for (const a of [LAB.allowed, LAB.other, LAB.metadata, this.poolNeighbour]) inLab.push(`address add ${a}/32 dev lo`);
    await ipBatch(inLab.map((l) => `netns exec ${ns} ip ${l}`));
    const tcp: Array<[string, number]> = [
      [LAB.allowed, LAB.tcpPort],
      [LAB.allowed, LAB.otherTcpPort],
      [LAB.other, LAB.tcpPort],
      [LAB.metadata, LAB.metadataPort],
      [this.poolNeighbour, LAB.tcpPort],
    ];
    const udp: Array<[string, number]> = [
      [LAB.allowed, LAB.udpPort],
      [LAB.other, LAB.udpPort],
      [this.poolNeighbour, LAB.udpPort],
    ];
    // nsenter --net, not `ip netns exec`: that also unshares a mount namespace, which would pin the cells' volume mounts.
    const server = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, '-e', LAB_SERVER, JSON.stringify({ tcp, udp })], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      let out = '';
      let err = '';
      server.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('READY')) resolve();
      });
      server.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      server.once('exit', (code) => reject(new Error(`lab server exited (${code}): ${err}`)));
    });
  }

  /** labTargets are the lab's listeners as probe targets, each expected as the caller says, with its control in the lab. */
  labTargets(): Record<'allowedTcp' | 'allowedOtherPort' | 'otherTcp' | 'allowedUdp' | 'otherUdp' | 'metadata' | 'neighbourTcp' | 'neighbourUdp', Aim> {
    return {
      allowedTcp: { kind: 'tcp', host: LAB.allowed, port: LAB.tcpPort, live: 'lab' },
      allowedOtherPort: { kind: 'tcp', host: LAB.allowed, port: LAB.otherTcpPort, live: 'lab' },
      otherTcp: { kind: 'tcp', host: LAB.other, port: LAB.tcpPort, live: 'lab' },
      allowedUdp: { kind: 'udp', host: LAB.allowed, port: LAB.udpPort, live: 'lab' },
      otherUdp: { kind: 'udp', host: LAB.other, port: LAB.udpPort, live: 'lab' },
      metadata: { kind: 'tcp', host: LAB.metadata, port: LAB.metadataPort, live: 'lab' },
      // The host reaches the neighbour through its main-table route, as a cell would if nothing stopped it.
      neighbourTcp: { kind: 'tcp', host: this.poolNeighbour, port: LAB.tcpPort, live: 'host' },
      neighbourUdp: { kind: 'udp', host: this.poolNeighbour, port: LAB.udpPort, live: 'host' },
    };
  }

  /** hostListeners opens a TCP listener and a UDP echo on each gateway, on 0.0.0.0 and on the host side of the lab veth. */
  async hostListeners(gateways: readonly string[]): Promise<{ onGw: Map<string, { tcp: number; udp: number }>; anyTcp: number; anyUdp: number; sideTcp: number; sideUdp: number }> {
    const onGw = new Map<string, { tcp: number; udp: number }>();
    for (const gw of gateways) onGw.set(gw, { tcp: await this.listen('tcp', gw), udp: await this.listen('udp', gw) });
    return { onGw, anyTcp: await this.listen('tcp', '0.0.0.0'), anyUdp: await this.listen('udp', '0.0.0.0'), sideTcp: await this.listen('tcp', this.hostSide), sideUdp: await this.listen('udp', this.hostSide) };
  }

  /** listen opens a host listener (TCP that says "host", or UDP echo) on address and a free port, and returns the port. */
  async listen(kind: 'tcp' | 'udp', address: string): Promise<number> {
    if (kind === 'tcp') {
      let port = 0;
      const server = createServer((c) => {
        this.arrivals.push({ listener: `tcp ${address}:${port}`, from: c.remoteAddress ?? '?' });
        c.on('error', () => undefined); // a probe resets its connection at once
        c.end('host');
      });
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, address, resolve));
      port = (server.address() as { port: number }).port;
      return port;
    }
    const socket = createSocket('udp4');
    this.sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const port = socket.address().port;
    socket.on('message', (msg, rinfo) => {
      this.arrivals.push({ listener: `udp ${address}:${port}`, from: rinfo.address });
      socket.send(msg, rinfo.port, rinfo.address);
    });
    return port;
  }

  /** arrivalsFrom lists host listeners that a packet from one of the sources reached (each should be impossible from a cell). */
  arrivalsFrom(sources: readonly string[]): string[] {
    return this.arrivals.filter((a) => sources.includes(a.from)).map((a) => `${a.from} reached ${a.listener}`);
  }

  /** controls probes, from the host and from inside the lab, every target with a `live` listener there; returns what did not answer. */
  async controls(targets: readonly Target[]): Promise<{ failures: string[]; count: number }> {
    const unique = (where: 'host' | 'lab'): Target[] => {
      const seen = new Map<string, Target>();
      for (const t of targets) if (t.live === where) seen.set(`${t.kind} ${t.host} ${t.port ?? ''}`, { ...t, expect: 'open', what: `control from the ${where}: ${t.what}` });
      return [...seen.values()];
    };
    const host = unique('host');
    const lab = unique('lab');
    const [fromHost, fromLab] = await Promise.all([runProbes([], host), runProbes(['nsenter', `--net=/run/netns/${this.ns}`], lab)]);
    return { failures: [...verdictFailures('host', host, fromHost), ...verdictFailures('lab', lab, fromLab)], count: host.length + lab.length };
  }

  /** close stops every listener and removes the namespace, veth, routes and rules; throws if any of them is still there. */
  async close(): Promise<void> {
    this.server?.kill('SIGKILL');
    for (const s of this.servers) s.close();
    for (const s of this.sockets) s.close();
    const { pool, table, rulePref: pref } = this;
    await ipBatch(
      [
        `link del ${this.hostIf}`,
        `netns del ${this.ns}`,
        `rule del from ${pool} lookup ${table} pref ${pref}`,
        `rule del from ${pool} lookup main suppress_prefixlength 0 pref ${pref + 1}`,
        `rule del from ${pool} unreachable pref ${pref + 2}`,
        `route flush table ${table}`,
      ],
      true,
    );
    const rules = (await sh('ip', ['rule', 'list'])).stdout;
    const left = [
      ...(existsSync(`/run/netns/${this.ns}`) ? [`netns ${this.ns}`] : []),
      ...(existsSync(`/sys/class/net/${this.hostIf}`) ? [`link ${this.hostIf}`] : []),
      ...rules.split('\n').filter((l) => l.includes(`from ${pool}`) && [pref, pref + 1, pref + 2].some((p) => l.startsWith(`${p}:`))),
    ];
    if (left.length) throw new Error(`lab left behind: ${left.join('; ')}`);
  }
}

/** hostAddresses are this host's own IPv4 addresses cells might aim at: the lab's host side and the default route's interface
 *  (never a 10/8 address: other clusters' gateways live there, and the test did not make them). Traffic to them stays local. */
export async function hostAddresses(lab: NetLab): Promise<string[]> {
  const out = new Set([lab.hostSide]);
  const dev = /dev (\S+)/.exec((await sh('ip', ['-4', 'route', 'show', 'default'])).stdout)?.[1];
  if (dev) {
    const addrs = (await sh('ip', ['-4', '-o', 'addr', 'show', 'dev', dev])).stdout;
    const ten = cidrOf('10.0.0.0/8');
    for (const m of addrs.matchAll(/inet (\d+\.\d+\.\d+\.\d+)\//g)) {
      const v = parseIpv4(m[1]!);
      if (v !== undefined && !addressIn(ten, v) && !addressIn(cidrOf(lab.pool), v)) out.add(m[1]!);
    }
  }
  return [...out];
}

// Runs PROBE_PY with the targets, on the host or under a prefix command (nsenter), and returns its results.
async function runProbes(prefix: string[], targets: Target[]): Promise<string[]> {
  if (targets.length === 0) return [];
  const script = `${PROBE_PY}\nimport json, sys\nprint(json.dumps(probe_all(json.loads(sys.argv[1]), ${PROBE_TIMEOUT_S})))\n`;
  // /usr/bin/python3, not a pyenv shim on PATH (HOST-NOTES: ~350 ms per start).
  const argv = [...prefix, '/usr/bin/python3', '-c', script, JSON.stringify(wireTargets(targets))];
  const { stdout } = await sh(argv[0]!, argv.slice(1), { timeout: 30_000 });
  return JSON.parse(stdout) as string[];
}

async function ipBatch(lines: string[], allowFailure = false): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => (code === 0 || allowFailure ? resolve() : reject(new Error(`ip -batch: ${err}`))));
    p.stdin.end(lines.join('\n') + '\n');
  });
}
