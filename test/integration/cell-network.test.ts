// Real cells on private networks: a 3 workspaces × 3 cells reachability matrix probed from inside, host and metadata
// unreachable, egress by workspace policy (enforced and dry-run) with denied records, nothing left after the cells end.
// Safety: the only destinations outside cells are addresses of an "internet" netns this test creates; a policy-routing
// rule sends everything from the cluster's cell pool there or nowhere (unreachable), so no probe can leave the host.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanroomClient, type Job } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';
import { leftovers, waitFor } from '../support/host.js';

const sh = promisify(execFile);
const INET_NS = `crtestinet${process.pid % 10000}`;
const INET_IF = `crti${process.pid % 10000}`;
const RULE_PREF = 31000 + (process.pid % 1000);

let cluster: TestCluster;
let pool = '';
const children: ChildProcess[] = [];

/** The in-cell probe: prints its address, listens, waits for a targets file, probes each target, prints results. */
const PROBE = String.raw`
import socket, struct, fcntl, os, time, threading, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])
gw = None
for line in open('/proc/net/route').read().splitlines()[1:]:
    f = line.split()
    if f[1] == '00000000': gw = socket.inet_ntoa(struct.pack('<L', int(f[2], 16)))
trie = open('/proc/net/fib_trie').read().splitlines()
addrs = [trie[i - 1].split()[-1] for i, l in enumerate(trie) if '/32 host LOCAL' in l]
v6 = open('/proc/net/if_inet6').read().strip() if os.path.exists('/proc/net/if_inet6') else ''
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); raw = 'allowed'
except OSError as e:
    raw = 'refused'
def tcp_server():
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((ip, 8080)); srv.listen(64)
    while True:
        c, _ = srv.accept(); c.close()
def udp_server():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 8081))
    while True:
        d, a = u.recvfrom(100); u.sendto(b'pong', a)
threading.Thread(target=tcp_server, daemon=True).start()
threading.Thread(target=udp_server, daemon=True).start()
print('INFO ' + json.dumps({'ip': ip, 'gw': gw, 'local': addrs, 'v6': v6, 'raw': raw, 'arp': open('/proc/net/arp').read().splitlines()[1:]}), flush=True)
while not os.path.exists('/work/targets'): time.sleep(0.05)
targets = json.load(open('/work/targets'))
results = {}
def probe(t):
    key = '%s %s %s' % (t['kind'], t['host'], t.get('port', ''))
    try:
        if t['kind'] == 'tcp':
            c = socket.socket(); c.settimeout(2.5); c.connect((t['host'], t['port'])); c.close()
        elif t['kind'] == 'udp':
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(1.5); c.sendto(b'ping', (t['host'], t['port'])); c.recvfrom(100)
        else:
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); c.settimeout(1.5)
            c.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, 1) + b'probe', (t['host'], 0)); c.recvfrom(100)
        results[key] = 'open'
    except Exception as e:
        results[key] = 'blocked' if isinstance(e, socket.timeout) else 'blocked:' + type(e).__name__ + ':' + str(getattr(e, 'errno', ''))
threads = [threading.Thread(target=probe, args=(t,)) for t in targets]
for t in threads: t.start()
for t in threads: t.join()
# One lost packet must not read as "blocked": targets expected open get two more tries (a blocked one stays blocked).
for t in [t for t in targets if t.get('retry')]:
    for attempt in range(2):
        if results['%s %s %s' % (t['kind'], t['host'], t.get('port', ''))] == 'open': break
        time.sleep(0.3); probe(t)
print('RESULT ' + json.dumps(results), flush=True)
`;

/** The "internet": TCP 8080 on two addresses, inside a netns of the test's own. */
const INTERNET = String.raw`
const net = require('net');
for (const h of ['203.0.113.10', '203.0.113.20']) net.createServer((c) => { c.on('error', () => {}); c.end('hi'); }).listen(8080, h);
`;

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 9 }] } } });
  pool = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { network: { pool: string } }).network.pool;
  await ip(
    `netns add ${INET_NS}`,
    `link add ${INET_IF} type veth peer name eth0 netns ${INET_NS}`,
    `address add 198.51.100.1/30 dev ${INET_IF}`,
    `link set ${INET_IF} up`,
    `route add 203.0.113.0/24 via 198.51.100.2 dev ${INET_IF} table ${RULE_PREF}`,
    `rule add from ${pool} lookup ${RULE_PREF} pref ${RULE_PREF}`,
    `rule add from ${pool} lookup main suppress_prefixlength 0 pref ${RULE_PREF + 1}`,
    `rule add from ${pool} unreachable pref ${RULE_PREF + 2}`,
  );
  await sh('sysctl', ['-q', '-w', `net.ipv4.conf.${INET_IF}.forwarding=1`]);
  await ip(...['link set lo up', 'link set eth0 up', 'address add 198.51.100.2/30 dev eth0', 'address add 203.0.113.10/32 dev lo', 'address add 203.0.113.20/32 dev lo', 'route add default via 198.51.100.1'].map((l) => `netns exec ${INET_NS} ip ${l}`));
  // nsenter --net, not `ip netns exec`: that also unshares a mount namespace, which would pin the cells' volume mounts.
  const server = spawn('nsenter', [`--net=/run/netns/${INET_NS}`, process.execPath, '-e', INTERNET], { stdio: 'ignore' });
  children.push(server);
  await new Promise((r) => setTimeout(r, 300));
  await cluster.waitWarm();
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await ip(`link del ${INET_IF}`, `netns del ${INET_NS}`, `rule del pref ${RULE_PREF}`, `rule del pref ${RULE_PREF + 1}`, `rule del pref ${RULE_PREF + 2}`, `route flush table ${RULE_PREF}`).catch(() => {});
  await cluster?.stop();
});

async function ip(...lines: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`ip -batch: ${err}`))));
    p.stdin.end(lines.join('\n') + '\n');
  });
}

interface Cell {
  ws: string;
  client: CleanroomClient;
  job: Job;
  info: { ip: string; gw: string; local: string[]; v6: string; raw: string; arp: string[] };
  output: string;
  ended: Promise<Job>;
}

/** workDirOf finds the host path of a running cell's /work (its encrypted volume, unlocked while the cell lives). */
function workDirOf(cellId: string): string {
  const dir = join(cluster.dataDir, 'agent', 'volumes');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.cell'))) {
    const m = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { volumeId: string; cellId: string };
    if (m.cellId === cellId) return join(dir, `${m.volumeId}.mnt`, 'data', 'work');
  }
  throw new Error(`no volume for cell ${cellId}`);
}

test('3 workspaces × 3 cells: no cell reaches another, the host or metadata; egress follows each workspace policy', async () => {
  const policies: Record<string, unknown> = {
    'net-a': { allow: [{ cidr: '203.0.113.10/32', protocol: 'tcp', port: 8080 }] },
    'net-b': { allow: [] },
    'net-c': { allow: [], dryRun: true },
  };
  const clients: Record<string, CleanroomClient> = {};
  const keys: Record<string, string> = {};
  for (const [name, policy] of Object.entries(policies)) {
    await cluster.client.createWorkspace({ name });
    const key = await cluster.client.createApiKey({ workspace: name, name: 'net' });
    keys[name] = key.key;
    clients[name] = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
    const set = await clients[name]!.raw('PUT', '/v1/network/policy', JSON.stringify(policy), { 'content-type': 'application/json' });
    assert.equal(set.status, 200, JSON.stringify(set.body));
  }
  const cells: Cell[] = await Promise.all(
    Object.keys(policies).flatMap((ws) =>
      [0, 1, 2].map(async () => {
        const client = clients[ws]!;
        const job = await client.createJob({ command: ['python3', '-c', PROBE], timeoutSeconds: 60 });
        const cell = { ws, client, job, output: '' } as Cell;
        cell.ended = client.followLogs(job.id, (c) => (cell.output += c.data.toString()));
        return cell;
      }),
    ),
  );
  await waitFor(() => cells.every((c) => c.output.includes('INFO ')), 30_000);
  for (const c of cells) {
    c.info = JSON.parse(/INFO (.*)/.exec(c.output)![1]!) as Cell['info'];
    c.job = await c.client.getJob(c.job.id);
  }

  // Inside each cell: only its own private /32 (plus loopback), default route to its gateway, no IPv6, no raw sockets.
  const poolPrefix = pool.split('.').slice(0, 2).join('.') + '.';
  for (const c of cells) {
    assert.ok(c.info.ip.startsWith(poolPrefix), `cell address ${c.info.ip} outside the pool ${pool}`);
    assert.ok(c.info.gw.startsWith(poolPrefix), `gateway ${c.info.gw} outside the pool`);
    assert.deepEqual([...new Set(c.info.local)].filter((a) => a !== '127.0.0.1').sort(), [c.info.ip]);
    assert.equal(c.info.v6, '', 'IPv6 is configured inside the cell');
    assert.equal(c.info.raw, 'refused', 'a workload could open a raw socket (it could spoof)');
  }
  assert.equal(new Set(cells.map((c) => c.info.ip)).size, 9, 'cell addresses are not distinct');

  const hostAddrs = Object.values(networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith(poolPrefix)).map((a) => a!.address);
  const apiPort = Number(new URL(cluster.url).port);
  const agentPort = configAgentPort();
  const expected = new Map<string, Map<string, 'open' | 'blocked'>>();
  for (const c of cells) {
    const targets: Array<{ kind: string; host: string; port?: number; retry?: boolean }> = [];
    const want = new Map<string, 'open' | 'blocked'>();
    const add = (kind: string, host: string, port: number | undefined, verdict: 'open' | 'blocked') => {
      targets.push({ kind, host, ...(port ? { port } : {}), ...(verdict === 'open' ? { retry: true } : {}) });
      want.set(`${kind} ${host} ${port ?? ''}`, verdict);
    };
    for (const other of cells) {
      if (other === c) continue;
      add('tcp', other.info.ip, 8080, 'blocked');
      add('udp', other.info.ip, 8081, 'blocked');
      add('icmp', other.info.ip, undefined, 'blocked');
    }
    for (const port of [apiPort, agentPort, 22]) add('tcp', c.info.gw, port, 'blocked');
    // The one platform service on the gateway (the data service forwarder) is reachable; another workspace's gateway is not.
    add('tcp', c.info.gw, 443, 'open');
    for (const gw of new Set(cells.filter((o) => o.ws !== c.ws).map((o) => o.info.gw))) add('tcp', gw, 443, 'blocked');
    add('icmp', c.info.gw, undefined, 'blocked');
    for (const h of hostAddrs) for (const port of [apiPort, agentPort]) add('tcp', h, port, 'blocked');
    add('tcp', '169.254.169.254', 80, 'blocked');
    add('tcp', '203.0.113.10', 8080, c.ws === 'net-b' ? 'blocked' : 'open');
    add('tcp', '203.0.113.20', 8080, c.ws === 'net-c' ? 'open' : 'blocked');
    expected.set(c.job.id, want);
    const work = workDirOf(c.job.cellId!);
    writeFileSync(join(work, 'targets.tmp'), JSON.stringify(targets));
    const hostUid = statSync(work).uid;
    chownSync(join(work, 'targets.tmp'), hostUid, hostUid);
    await sh('mv', [join(work, 'targets.tmp'), join(work, 'targets')]);
  }
  const ended = await Promise.all(cells.map((c) => c.ended));
  for (const j of ended) assert.equal(j.status, 'succeeded', j.message ?? '');

  const falseAllows: string[] = [];
  const falseBlocks: string[] = [];
  let probes = 0;
  for (const c of cells) {
    const results = JSON.parse(/RESULT (.*)/.exec(c.output)![1]!) as Record<string, string>;
    for (const [key, want] of expected.get(c.job.id)!) {
      probes++;
      const got = results[key];
      if (want === 'blocked' && got !== 'blocked' && !got?.startsWith('blocked:')) falseAllows.push(`${c.ws}/${c.info.ip} → ${key}: ${got}`);
      if (want === 'open' && got !== 'open') falseBlocks.push(`${c.ws}/${c.info.ip} → ${key}: ${got} (arp ${JSON.stringify(c.info.arp)})`);
    }
  }
  console.log(`reachability: ${probes} probes from 9 cells in 3 workspaces; false allows ${falseAllows.length}, false blocks ${falseBlocks.length}`);
  assert.deepEqual(falseAllows, [], 'traffic that must be blocked got through');
  assert.deepEqual(falseBlocks, [], 'traffic the policy allows was blocked');

  // Denied egress is recorded per workspace: enforced denials in net-a/net-b, would-be denials in net-c (dry run).
  await waitFor(async () => {
    const r = await clients['net-b']!.raw('GET', '/v1/network/denied?limit=1000');
    return JSON.stringify(r.body).includes('203.0.113.20');
  }, 15_000);
  type Denied = { action: string; destination: string; protocol: string; port: number | null; jobId: string };
  const denied = async (ws: string) => ((await clients[ws]!.raw('GET', '/v1/network/denied?limit=1000')).body as { denied: Denied[] }).denied;
  const egress = (rs: Denied[], action: string, dest: string) => rs.filter((r) => r.action === action && r.destination === dest && r.protocol === 'tcp' && r.port === 8080);
  const a = await denied('net-a');
  assert.ok(egress(a, 'denied', '203.0.113.20').length > 0, 'net-a: denial of 203.0.113.20:8080 not recorded');
  assert.equal(egress(a, 'denied', '203.0.113.10').length, 0, 'net-a: an allowed connection was recorded as denied');
  const b = await denied('net-b');
  for (const dest of ['203.0.113.10', '203.0.113.20']) assert.ok(egress(b, 'denied', dest).length > 0, `net-b: denial of ${dest}:8080 not recorded`);
  await waitFor(async () => egress(await denied('net-c'), 'dry-run', '203.0.113.20').length > 0, 15_000);
  const c = await denied('net-c');
  assert.equal(c.filter((r) => r.action === 'denied' && r.destination.startsWith('203.0.113.')).length, 0, 'net-c is in dry-run: egress must not be denied');
  assert.ok(c.every((r) => cells.some((x) => x.job.id === r.jobId && x.ws === 'net-c')), 'records of another workspace are visible');
  const cli = await cluster.cli(['network', 'denied', '--json', '--limit', '1000'], { CLEANROOM_API_KEY: keys['net-b']! });
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /203\.0\.113/);

  // When the cells are gone, so is every netns, veth and address of theirs.
  const cellIds = cells.map((c) => c.job.cellId!);
  await waitFor(() => leftovers(cluster, cellIds).length === 0, 15_000, () => `left on the host: ${leftovers(cluster, cellIds).join(', ')}`);
  for (const c of Object.values(clients)) c.close();
});

function configAgentPort(): number {
  return (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number } }).control.agentPort;
}
