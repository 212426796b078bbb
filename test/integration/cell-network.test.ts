// Real cells on private networks: a 3 workspaces × 3 cells reachability matrix probed from inside, with egress by workspace
// policy (enforced and dry-run), denied records, and nothing left after the cells end. Every destination a cell must not
// reach has a real listener (a host listener on a gateway, on the lab veth's host side or on 0.0.0.0, another cell's, one
// inside the cell pool, a metadata look-alike), shown to answer from the host or the lab first; a probe counts as blocked
// only if it times out. Safety: destinations are cells, gateways, this host's own addresses or addresses of the lab
// namespace this test creates (test/support/net-lab.ts); policy routing sends the pool nowhere else.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chownSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanroomClient, type Job } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';
import { agentHubLinks, cellWorkDir, leftovers, waitFor } from '../support/host.js';
import { cellNames, hubNetnsName } from '../../src/agent/network/names.js';
import { expect, hostAddresses, LAB, NetLab, PROBE_PY, PROBE_TIMEOUT_S, verdictFailures, wireTargets, type Target } from '../support/net-lab.js';

const sh = promisify(execFile);

let cluster: TestCluster;
let lab: NetLab;
let pool = '';
const clients: CleanroomClient[] = [];

/** The in-cell script: prints its address, listens (TCP 8080, UDP echo 8081), waits for a targets file, probes, prints results,
 *  then stays (its listeners are other cells' targets) until a done file says every cell has probed. */
const CELL = `${PROBE_PY}
import fcntl, os, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])
gw = _gateway()
trie = open('/proc/net/fib_trie').read().splitlines()
addrs = [trie[i - 1].split()[-1] for i, l in enumerate(trie) if '/32 host LOCAL' in l]
v6 = open('/proc/net/if_inet6').read().strip() if os.path.exists('/proc/net/if_inet6') else ''
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); raw = 'allowed'
except OSError as e:
    raw = 'refused'
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((ip, 8080)); srv.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 8081))
def tcp_server():
    while True:
        c, _ = srv.accept(); c.close()
def udp_server():
    while True:
        d, a = u.recvfrom(100); u.sendto(d, a)
threading.Thread(target=tcp_server, daemon=True).start()
threading.Thread(target=udp_server, daemon=True).start()
print('INFO ' + json.dumps({'ip': ip, 'gw': gw, 'local': addrs, 'v6': v6, 'raw': raw}), flush=True)
while not os.path.exists('/work/targets'): time.sleep(0.05)
print('RESULT ' + json.dumps(probe_all(json.load(open('/work/targets')), ${PROBE_TIMEOUT_S})), flush=True)
while not os.path.exists('/work/done'): time.sleep(0.05)
`;

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 9 }] } } });
  pool = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { network: { pool: string } }).network.pool;
  lab = await NetLab.open(pool);
  await cluster.waitWarm();
});

after(async () => {
  for (const c of clients) c.close();
  try {
    await lab?.close();
  } finally {
    await cluster?.stop();
  }
});

interface Cell {
  ws: string;
  client: CleanroomClient;
  job: Job;
  info: { ip: string; gw: string; local: string[]; v6: string; raw: string };
  targets: Target[];
  output: string;
  ended: Promise<Job>;
}

test('3 workspaces × 3 cells: no cell reaches another, the host, the pool or metadata; egress follows each workspace policy', async () => {
  const policies: Record<string, unknown> = {
    'net-a': { allow: [{ cidr: `${LAB.allowed}/32`, protocol: 'tcp', port: LAB.tcpPort }, { cidr: `${LAB.allowed}/32`, protocol: 'udp', port: LAB.udpPort }] },
    'net-b': { allow: [] },
    'net-c': { allow: [], dryRun: true },
  };
  const byWs: Record<string, CleanroomClient> = {};
  const keys: Record<string, string> = {};
  for (const [name, policy] of Object.entries(policies)) {
    await cluster.client.createWorkspace({ name });
    const key = await cluster.client.createApiKey({ workspace: name, name: 'net' });
    keys[name] = key.key;
    byWs[name] = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
    clients.push(byWs[name]!);
    const set = await byWs[name]!.raw('PUT', '/v1/network/policy', JSON.stringify(policy), { 'content-type': 'application/json' });
    assert.equal(set.status, 200, JSON.stringify(set.body));
  }
  const cells: Cell[] = await Promise.all(
    Object.keys(policies).flatMap((ws) =>
      [0, 1, 2].map(async () => {
        const client = byWs[ws]!;
        const job = await client.createJob({ command: ['python3', '-c', CELL], timeoutSeconds: 60 });
        const cell = { ws, client, job, output: '' } as Cell;
        cell.ended = client.followLogs(job.id, (c) => (cell.output += c.data.toString()));
        // Awaited below; if the test fails before that, teardown cuts the stream and its rejection is not the news.
        cell.ended.catch(() => {});
        return cell;
      }),
    ),
  );
  // Nine cells start python at once: slow on a loaded host, so the deadline is generous (within the jobs' own 60 s).
  const silent = () => cells.filter((c) => !c.output.includes('INFO '));
  await waitFor(() => silent().length === 0, 45_000, () => `no INFO from ${silent().map((c) => `${c.ws}/${c.job.id} (${JSON.stringify(c.output.slice(-300))})`).join(', ')}`);
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

  // Real listeners on everything of the host a cell could route to.
  const gateways = [...new Set(cells.map((c) => c.info.gw))];
  const { onGw, anyTcp, anyUdp, sideTcp, sideUdp } = await lab.hostListeners(gateways);
  const hosts = await hostAddresses(lab);
  const { apiPort, agentPort, dataGatewayPort } = ports();
  const l = lab.labTargets();
  for (const c of cells) {
    const t: Target[] = [];
    const egress = (open: string[]) => (open.includes(c.ws) ? 'open' : 'blocked');
    // Egress first: denials are logged at a limited rate per source, and these are the ones checked below.
    t.push(expect(l.allowedTcp, egress(['net-a', 'net-c']), 'egress, allowed in net-a'));
    t.push(expect(l.allowedUdp, egress(['net-a', 'net-c']), 'egress udp, allowed in net-a'));
    t.push(expect(l.otherTcp, egress(['net-c']), 'egress, allowed nowhere'));
    t.push(expect(l.otherUdp, egress(['net-c']), 'egress udp, allowed nowhere'));
    t.push(expect(l.allowedOtherPort, egress(['net-c']), 'egress, allowed address on another port'));
    // Positive controls through the same harness: the gateway's data port and resolver answer.
    t.push({ kind: 'tcp', host: c.info.gw, port: dataGatewayPort, expect: 'open', what: 'own gateway data port' });
    t.push({ kind: 'dns', host: c.info.gw, port: 53, expect: 'open', what: 'own gateway resolver' });
    const own = onGw.get(c.info.gw)!;
    t.push({ kind: 'tcp', host: c.info.gw, port: own.tcp, expect: 'blocked', what: 'own gateway, listener on another TCP port', live: 'host' });
    t.push({ kind: 'udp', host: c.info.gw, port: own.udp, expect: 'blocked', what: 'own gateway, UDP echo on another port', live: 'host' });
    t.push({ kind: 'tcp', host: c.info.gw, port: anyTcp, expect: 'blocked', what: 'own gateway, 0.0.0.0 TCP listener', live: 'host' });
    t.push({ kind: 'udp', host: c.info.gw, port: anyUdp, expect: 'blocked', what: 'own gateway, 0.0.0.0 UDP echo', live: 'host' });
    t.push({ kind: 'icmp', host: c.info.gw, expect: 'blocked', what: 'own gateway, ICMP echo' });
    for (const port of [apiPort, agentPort]) t.push({ kind: 'tcp', host: c.info.gw, port, expect: 'blocked', what: 'own gateway, platform port' });
    for (const gw of gateways.filter((g) => g !== c.info.gw)) {
      const other = onGw.get(gw)!;
      t.push({ kind: 'tcp', host: gw, port: dataGatewayPort, expect: 'blocked', what: 'other workspace gateway, data port', live: 'host' });
      t.push({ kind: 'dns', host: gw, port: 53, expect: 'blocked', what: 'other workspace gateway, resolver', live: 'host' });
      t.push({ kind: 'tcp', host: gw, port: other.tcp, expect: 'blocked', what: 'other workspace gateway, TCP listener', live: 'host' });
      t.push({ kind: 'udp', host: gw, port: other.udp, expect: 'blocked', what: 'other workspace gateway, UDP echo', live: 'host' });
    }
    for (const h of hosts) {
      t.push({ kind: 'tcp', host: h, port: anyTcp, expect: 'blocked', what: 'host address, 0.0.0.0 TCP listener', live: 'host' });
      t.push({ kind: 'udp', host: h, port: anyUdp, expect: 'blocked', what: 'host address, 0.0.0.0 UDP echo', live: 'host' });
    }
    t.push({ kind: 'tcp', host: lab.hostSide, port: sideTcp, expect: 'blocked', what: 'host side of the lab veth, TCP listener', live: 'host' });
    t.push({ kind: 'udp', host: lab.hostSide, port: sideUdp, expect: 'blocked', what: 'host side of the lab veth, UDP echo', live: 'host' });
    for (const other of cells.filter((o) => o !== c)) {
      const rel = other.ws === c.ws ? 'same workspace' : 'other workspace';
      t.push({ kind: 'tcp', host: other.info.ip, port: 8080, expect: 'blocked', what: `cell, ${rel}, TCP listener`, live: 'host' });
      t.push({ kind: 'udp', host: other.info.ip, port: 8081, expect: 'blocked', what: `cell, ${rel}, UDP echo`, live: 'host' });
      t.push({ kind: 'icmp', host: other.info.ip, expect: 'blocked', what: `cell, ${rel}, ICMP echo` });
    }
    t.push(expect(l.neighbourTcp, 'blocked', 'pool address that is not a cell, TCP listener'));
    t.push(expect(l.neighbourUdp, 'blocked', 'pool address that is not a cell, UDP echo'));
    t.push(expect(l.metadata, 'blocked', 'metadata address, TCP listener'));
    c.targets = t;
  }
  // Every blocked target with a listener answers when probed from the host or the lab: a timeout below is the firewall.
  const controls = await lab.controls(cells.flatMap((c) => c.targets));
  assert.deepEqual(controls.failures, [], 'a listener the cells are probed against does not answer its control');
  for (const c of cells) {
    const work = cellWorkDir(cluster.dataDir, c.job.cellId!);
    writeFileSync(join(work, 'targets.tmp'), JSON.stringify(wireTargets(c.targets)));
    const hostUid = statSync(work).uid;
    chownSync(join(work, 'targets.tmp'), hostUid, hostUid);
    await sh('mv', [join(work, 'targets.tmp'), join(work, 'targets')]);
  }
  // A cell that ended would leave the others' probes of it to find no route (ENETUNREACH), not the firewall: all stay
  // until every cell has its results.
  const probing = () => cells.filter((c) => !c.output.includes('RESULT '));
  await waitFor(() => probing().length === 0, 55_000, () => `no RESULT from ${probing().map((c) => `${c.ws}/${c.job.id}`).join(', ')}`);
  const hubFailures: string[] = [];
  // The cells' host-side veths are in the agent's hub, not the host's netns, and the hub tracked none of the traffic
  // above: a wipe takes a veth down there without scheduling a walk of a conntrack table.
  const hub = hubNetnsName(`cr${cluster.agentId}`);
  const inHub = agentHubLinks(`cr${cluster.agentId}`);
  for (const c of cells) {
    const { hostIf } = cellNames(`cr${cluster.agentId}`, c.job.cellId!);
    if (!inHub.includes(hostIf) || existsSync(`/sys/class/net/${hostIf}`)) hubFailures.push(`${c.ws}/${c.info.ip}: host side ${hostIf} is not (only) in the hub`);
  }
  const tracked = (await sh('nsenter', [`--net=/run/netns/${hub}`, 'cat', '/proc/sys/net/netfilter/nf_conntrack_count'])).stdout.trim();
  if (tracked !== '0') hubFailures.push(`the hub tracks ${tracked} connections`);
  for (const c of cells) {
    const work = cellWorkDir(cluster.dataDir, c.job.cellId!);
    writeFileSync(join(work, 'done'), '');
  }
  const ended = await Promise.all(cells.map((c) => c.ended));
  for (const j of ended) assert.equal(j.status, 'succeeded', j.message ?? '');

  const failures: string[] = [];
  let probes = 0;
  for (const c of cells) {
    const results = JSON.parse(/RESULT (.*)/.exec(c.output)![1]!) as string[];
    probes += c.targets.length;
    failures.push(...verdictFailures(`${c.ws}/${c.info.ip}`, c.targets, results));
    const dns = results[c.targets.findIndex((t) => t.what === 'own gateway resolver')];
    if (dns !== `open:${c.info.gw}`) failures.push(`${c.ws}/${c.info.ip}: data.cleanroom.internal resolved to ${dns}, not its gateway`);
  }
  failures.push(...lab.arrivalsFrom(cells.map((c) => c.info.ip)), ...hubFailures);
  console.log(`reachability: ${probes} probes from 9 cells in 3 workspaces (${controls.count} listeners checked live first); failures ${failures.length}`);
  assert.deepEqual(failures, [], 'reachability differs from the policy');

  // Denied egress is recorded per workspace: enforced denials in net-a/net-b, would-be denials in net-c (dry run).
  type Denied = { action: string; destination: string; protocol: string; port: number | null; jobId: string };
  const denied = async (ws: string) => ((await byWs[ws]!.raw('GET', '/v1/network/denied?limit=1000')).body as { denied: Denied[] }).denied;
  const egress = (rs: Denied[], action: string, dest: string, protocol = 'tcp', port: number = LAB.tcpPort) =>
    rs.filter((r) => r.action === action && r.destination === dest && r.protocol === protocol && r.port === port);
  await waitFor(async () => egress(await denied('net-b'), 'denied', LAB.other).length > 0, 15_000);
  const a = await denied('net-a');
  assert.ok(egress(a, 'denied', LAB.other).length > 0, `net-a: denial of ${LAB.other}:${LAB.tcpPort} not recorded`);
  assert.equal(egress(a, 'denied', LAB.allowed).length + egress(a, 'denied', LAB.allowed, 'udp', LAB.udpPort).length, 0, 'net-a: an allowed connection was recorded as denied');
  const b = await denied('net-b');
  for (const dest of [LAB.allowed, LAB.other]) assert.ok(egress(b, 'denied', dest).length > 0, `net-b: TCP denial of ${dest} not recorded`);
  assert.ok(egress(b, 'denied', LAB.allowed, 'udp', LAB.udpPort).length > 0, 'net-b: UDP denial not recorded');
  await waitFor(async () => egress(await denied('net-c'), 'dry-run', LAB.other).length > 0, 15_000);
  const c = await denied('net-c');
  assert.equal(c.filter((r) => r.action === 'denied' && r.destination.startsWith('203.0.113.')).length, 0, 'net-c is in dry-run: egress must not be denied');
  assert.ok(c.every((r) => cells.some((x) => x.job.id === r.jobId && x.ws === 'net-c')), 'records of another workspace are visible');
  const cli = await cluster.cli(['network', 'denied', '--json', '--limit', '1000'], { CLEANROOM_API_KEY: keys['net-b']! });
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /203\.0\.113/);

  // When the cells are gone, so is every netns, veth and address of theirs.
  const cellIds = cells.map((c) => c.job.cellId!);
  await waitFor(() => leftovers(cluster, cellIds).length === 0, 15_000, () => `left on the host: ${leftovers(cluster, cellIds).join(', ')}`);
});

/** ports are the cluster's platform ports (which listen on loopback only) and the data port cells reach on their gateway. */
function ports(): { apiPort: number; agentPort: number; dataGatewayPort: number } {
  const config = JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { apiPort: number; agentPort: number }; network: { dataGatewayPort?: number } };
  return { apiPort: config.control.apiPort, agentPort: config.control.agentPort, dataGatewayPort: config.network.dataGatewayPort ?? 443 };
}
