// gVisor cells get a private network too, probed from inside runsc cells and, for comparison, runc cells: only a private
// address, the gateway's resolver and data service (with the job's token) and nothing else of the host, no other cell, no
// address of the pool, no metadata; egress by the workspace allow-list, and in dry-run everything but those, each would-be
// denial recorded. Every destination that must be unreachable has a real listener, shown to answer from the host or the lab
// first, and a probe counts as blocked only if it times out. Safety: see test/support/net-lab.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CleanroomClient, type EgressPolicy, type Job } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';
import { until } from '../support/host.js';
import { expect, hostAddresses, LAB, NetLab, PROBE_PY, PROBE_TIMEOUT_S, verdictFailures, wireTargets, type Target } from '../support/net-lab.js';

let cluster: TestCluster;
let lab: NetLab;
let pool = '';

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }, { runtime: 'runsc', class: 'small', warm: 3 }] } } });
  pool = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { network: { pool: string } }).network.pool;
  lab = await NetLab.open(pool);
  await cluster.waitWarm();
});

after(async () => {
  try {
    await lab?.close();
  } finally {
    await cluster?.stop();
  }
});

/** LISTENER reports the cell's addresses and gateway, serves TCP 8080 and UDP echo 8081, and exits on a UDP "stop" (or after 60 s). */
const LISTENER = String.raw`
import socket, threading, json, os, struct, fcntl
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])
gw = [socket.inet_ntoa(struct.pack('<L', int(f[2], 16))) for f in (l.split() for l in open('/proc/net/route').read().splitlines()[1:]) if f[1] == '00000000'][0]
def addr_of(name):
    try: return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', name.encode()))[20:24])
    except OSError: return None
trie = open('/proc/net/fib_trie').read().splitlines() if os.path.exists('/proc/net/fib_trie') else []
local = {trie[i - 1].split()[-1] for i, l in enumerate(trie) if '/32 host LOCAL' in l} | {addr_of(n) for _, n in socket.if_nameindex()}
local = sorted(a for a in local if a and a != '127.0.0.1')
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('0.0.0.0', 8080)); srv.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 8081))
def tcp_server():
    while True:
        c, _ = srv.accept(); c.close()
threading.Thread(target=tcp_server, daemon=True).start()
print('INFO ' + json.dumps({'ip': ip, 'gw': gw, 'local': local}), flush=True)
u.settimeout(60)
while True:
    d, a = u.recvfrom(100)
    if d == b'stop': break
    u.sendto(d, a)
`;

/** PROBE runs PROBE_PY over $TARGETS and, with $PUT, stores an object through the data service with the job's token. */
const PROBE = `${PROBE_PY}
import json, os, ssl, urllib.request, urllib.error
def put():
    ctx = ssl.create_default_context(cafile=os.environ['CLEANROOM_CA_FILE'])
    token = open(os.environ['CLEANROOM_TOKEN_FILE']).read().strip()
    job = os.environ['CLEANROOM_JOB_ID']
    req = urllib.request.Request(os.environ['CLEANROOM_DATA_URL'] + '/v1/data/objects/out/' + job, data=('from ' + job).encode(), method='PUT', headers={'authorization': 'Bearer ' + token})
    try: return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e: return e.code
    except Exception as e: return type(e).__name__ + ': ' + str(e)
gw = _gateway()
me = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); me.connect((gw, 9))
out = {'ip': me.getsockname()[0], 'gw': gw, 'results': probe_all(json.loads(os.environ['TARGETS']), ${PROBE_TIMEOUT_S})}
if os.environ.get('PUT'): out['put'] = put()
print('RESULT ' + json.dumps(out), flush=True)
`;

interface Listener {
  runtime: string;
  info: { ip: string; gw: string; local: string[] };
  ended: Promise<Job>;
}

interface ProbeResult {
  job: Job;
  stderr: string;
  out: { ip: string; gw: string; results: string[]; put?: number | string };
}

async function workspace(name: string, policy: EgressPolicy): Promise<CleanroomClient> {
  await cluster.client.createWorkspace({ name });
  const key = await cluster.client.createApiKey({ workspace: name, name: 'net' });
  const client = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  await client.setNetworkPolicy(policy);
  return client;
}

async function listener(client: CleanroomClient, runtime: 'runc' | 'runsc'): Promise<Listener> {
  const job = await client.createJob({ command: ['python3', '-c', LISTENER], runtime, memoryMiB: 256, timeoutSeconds: 90 });
  let out = '';
  const ended = client.followLogs(job.id, (c) => (out += c.data.toString()));
  const info = await until(() => /INFO (.*)/.exec(out)?.[1], (m) => m !== undefined, 30_000);
  if (!info) throw new Error(`${runtime} listener never reported: ${out}`);
  return { runtime, info: JSON.parse(info) as Listener['info'], ended };
}

// Ends a listener cell: the host (which may reach cells) sends it "stop"; it must then end on its own, successfully.
async function stop(l: Listener): Promise<void> {
  const s = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => s.send('stop', 8081, l.info.ip, (err) => (err ? reject(err) : resolve())));
  } finally {
    s.close();
  }
  const job = await l.ended;
  assert.equal(job.status, 'succeeded', `${l.runtime} listener: ${job.status} ${job.message ?? ''}`);
}

async function probe(client: CleanroomClient, runtime: 'runc' | 'runsc', targets: Target[], put = false): Promise<ProbeResult> {
  const env: Record<string, string> = { TARGETS: JSON.stringify(wireTargets(targets)), ...(put ? { PUT: '1' } : {}) };
  const r = await cluster.runJob({ command: ['timeout', '60', 'python3', '-c', PROBE], env, runtime, memoryMiB: 256, timeoutSeconds: 90, ...(put ? { data: [{ prefix: 'out/', access: 'read-write' as const }] } : {}) }, client);
  assert.equal(r.job.status, 'succeeded', `${runtime} probe: ${r.job.message ?? ''} ${r.stderr}`);
  const m = /RESULT (.*)/.exec(r.stdout);
  assert.ok(m, `${runtime} probe printed no result: ${r.stdout} ${r.stderr}`);
  return { job: r.job, stderr: r.stderr, out: JSON.parse(m[1]!) as ProbeResult['out'] };
}

function ports(): { apiPort: number; agentPort: number; dataGatewayPort: number } {
  const config = JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { apiPort: number; agentPort: number }; network: { dataGatewayPort?: number } };
  return { apiPort: config.control.apiPort, agentPort: config.control.agentPort, dataGatewayPort: config.network.dataGatewayPort ?? 443 };
}

test('gVisor and runc cells reach their gateway data port and resolver and the egress their policy allows; every other host socket, cell, pool address and metadata times out', async () => {
  const client = await workspace('gv-enforce', { allow: [{ cidr: `${LAB.allowed}/32`, protocol: 'tcp', port: LAB.tcpPort }, { cidr: `${LAB.allowed}/32`, protocol: 'udp', port: LAB.udpPort }] });
  try {
    const [runcCell, gvisorCell] = await Promise.all([listener(client, 'runc'), listener(client, 'runsc')]);
    const poolPrefix = pool.split('.').slice(0, 2).join('.') + '.';
    for (const l of [runcCell, gvisorCell]) {
      assert.deepEqual(l.info.local, [l.info.ip], `${l.runtime}: addresses other than its one private address`);
      assert.ok(l.info.ip.startsWith(poolPrefix), `${l.runtime}: ${l.info.ip} is outside the pool ${pool}`);
    }
    // runc cells sit behind their workspace's gateway; gVisor cells behind the one their agent shares among them.
    const gateways = [...new Set([runcCell.info.gw, gvisorCell.info.gw])];
    assert.equal(gateways.length, 2, 'a runc and a gVisor cell of one workspace share a gateway');
    const { onGw, anyTcp, anyUdp, sideTcp, sideUdp } = await lab.hostListeners(gateways);
    const hosts = await hostAddresses(lab);
    const { apiPort, agentPort, dataGatewayPort } = ports();
    const l = lab.labTargets();
    const targetsFrom = (gw: string): Target[] => {
      const own = onGw.get(gw)!;
      const t: Target[] = [
        // Egress first: denials are logged at a limited rate per source, and these are the ones checked below.
        expect(l.allowedTcp, 'open', 'egress allowed by the policy'),
        expect(l.allowedUdp, 'open', 'egress udp allowed by the policy'),
        expect(l.otherTcp, 'blocked', 'egress to an address the policy does not allow'),
        expect(l.allowedOtherPort, 'blocked', 'egress to an allowed address, another port'),
        expect(l.otherUdp, 'blocked', 'egress udp to an address the policy does not allow'),
        { kind: 'tcp', host: gw, port: dataGatewayPort, expect: 'open', what: 'own gateway data port' },
        { kind: 'dns', host: gw, port: 53, expect: 'open', what: 'own gateway resolver' },
        { kind: 'tcp', host: gw, port: own.tcp, expect: 'blocked', what: 'own gateway, listener on another TCP port', live: 'host' },
        { kind: 'udp', host: gw, port: own.udp, expect: 'blocked', what: 'own gateway, UDP echo on another port', live: 'host' },
        { kind: 'tcp', host: gw, port: anyTcp, expect: 'blocked', what: 'own gateway, 0.0.0.0 TCP listener', live: 'host' },
        { kind: 'udp', host: gw, port: anyUdp, expect: 'blocked', what: 'own gateway, 0.0.0.0 UDP echo', live: 'host' },
        { kind: 'icmp', host: gw, expect: 'blocked', what: 'own gateway, ICMP echo' },
        { kind: 'tcp', host: gw, port: apiPort, expect: 'blocked', what: 'own gateway, API port' },
        { kind: 'tcp', host: gw, port: agentPort, expect: 'blocked', what: 'own gateway, agent channel port' },
        { kind: 'tcp', host: lab.hostSide, port: sideTcp, expect: 'blocked', what: 'host side of the lab veth, TCP listener', live: 'host' },
        { kind: 'udp', host: lab.hostSide, port: sideUdp, expect: 'blocked', what: 'host side of the lab veth, UDP echo', live: 'host' },
        expect(l.neighbourTcp, 'blocked', 'pool address that is not a cell, TCP listener'),
        expect(l.neighbourUdp, 'blocked', 'pool address that is not a cell, UDP echo'),
        expect(l.metadata, 'blocked', 'metadata address, TCP listener'),
      ];
      for (const other of gateways.filter((g) => g !== gw)) {
        t.push({ kind: 'tcp', host: other, port: dataGatewayPort, expect: 'blocked', what: 'other gateway, data port', live: 'host' });
        t.push({ kind: 'dns', host: other, port: 53, expect: 'blocked', what: 'other gateway, resolver', live: 'host' });
        t.push({ kind: 'tcp', host: other, port: onGw.get(other)!.tcp, expect: 'blocked', what: 'other gateway, TCP listener', live: 'host' });
        t.push({ kind: 'udp', host: other, port: onGw.get(other)!.udp, expect: 'blocked', what: 'other gateway, UDP echo', live: 'host' });
      }
      for (const h of hosts) {
        t.push({ kind: 'tcp', host: h, port: anyTcp, expect: 'blocked', what: 'host address, 0.0.0.0 TCP listener', live: 'host' });
        t.push({ kind: 'udp', host: h, port: anyUdp, expect: 'blocked', what: 'host address, 0.0.0.0 UDP echo', live: 'host' });
      }
      for (const cell of [runcCell, gvisorCell]) {
        t.push({ kind: 'tcp', host: cell.info.ip, port: 8080, expect: 'blocked', what: `${cell.runtime} cell, TCP listener`, live: 'host' });
        t.push({ kind: 'udp', host: cell.info.ip, port: 8081, expect: 'blocked', what: `${cell.runtime} cell, UDP echo`, live: 'host' });
      }
      return t;
    };
    const fromGvisor = targetsFrom(gvisorCell.info.gw);
    const fromRunc = targetsFrom(runcCell.info.gw);
    const controls = await lab.controls([...fromGvisor, ...fromRunc]);
    assert.deepEqual(controls.failures, [], 'a listener the cells are probed against does not answer its control');

    const [gvisor, runc] = await Promise.all([probe(client, 'runsc', fromGvisor, true), probe(client, 'runc', fromRunc)]);
    const failures = [...verdictFailures(`gVisor ${gvisor.out.ip}`, fromGvisor, gvisor.out.results), ...verdictFailures(`runc ${runc.out.ip}`, fromRunc, runc.out.results)];
    failures.push(...lab.arrivalsFrom([gvisor.out.ip, runc.out.ip, runcCell.info.ip, gvisorCell.info.ip]));
    console.log(`reachability: ${fromGvisor.length} probes from a gVisor cell, ${fromRunc.length} from a runc cell (${controls.count} listeners checked live first); failures ${failures.length}`);
    assert.deepEqual(failures, [], 'reachability differs from the policy');
    assert.equal(gvisor.out.gw, gvisorCell.info.gw, 'gVisor cells do not share their gateway');
    assert.equal(gvisor.out.results[fromGvisor.findIndex((t) => t.what === 'own gateway resolver')], `open:${gvisor.out.gw}`, 'data.cleanroom.internal is not the gateway');

    // Its data service is its gateway's, reached with its token.
    assert.equal(gvisor.out.put, 201, `PUT through the gateway: ${gvisor.out.put} ${gvisor.stderr}`);
    let text = '';
    for await (const c of await client.getObject(`out/${gvisor.job.id}`)) text += c;
    assert.equal(text, `from ${gvisor.job.id}`);

    // The gVisor cell's denial is on record for its job; the allowed connection is not.
    const records = await until(
      () => client.listDeniedConnections({ jobId: gvisor.job.id, limit: 1000 }),
      (rs) => rs.some((r) => r.destination === LAB.other && r.port === LAB.tcpPort),
      15_000,
    );
    const egress = (dest: string, port: number, protocol = 'tcp') => records.filter((r) => r.destination === dest && r.port === port && r.protocol === protocol);
    assert.deepEqual(egress(LAB.other, LAB.tcpPort).map((r) => r.action).slice(0, 1), ['denied'], `no denial of ${LAB.other}:${LAB.tcpPort} recorded: ${JSON.stringify(records)}`);
    assert.ok(records.every((r) => r.action === 'denied' && r.jobId === gvisor.job.id), 'enforced policy: every record is a denial of this job');
    assert.deepEqual([...egress(LAB.allowed, LAB.tcpPort), ...egress(LAB.allowed, LAB.udpPort, 'udp')], [], 'an allowed connection was recorded as denied');
    await Promise.all([stop(runcCell), stop(gvisorCell)]);
  } finally {
    client.close();
  }
});

test('gVisor in dry-run: what the policy does not allow is reachable and recorded as dry-run; the host, the pool and metadata stay closed', async () => {
  const client = await workspace('gv-dry', { allow: [{ cidr: `${LAB.allowed}/32`, protocol: 'tcp', port: LAB.tcpPort }], dryRun: true });
  try {
    const anyTcp = await lab.listen('tcp', '0.0.0.0');
    const anyUdp = await lab.listen('udp', '0.0.0.0');
    const l = lab.labTargets();
    const targets: Target[] = [
      expect(l.otherTcp, 'open', 'egress the policy does not allow (dry-run)'),
      expect(l.allowedOtherPort, 'open', 'egress to an allowed address, another port (dry-run)'),
      expect(l.otherUdp, 'open', 'egress udp the policy does not allow (dry-run)'),
      expect(l.allowedTcp, 'open', 'egress allowed by the policy'),
      { kind: 'tcp', host: '@gw', port: ports().dataGatewayPort, expect: 'open', what: 'own gateway data port' },
      { kind: 'tcp', host: '@gw', port: anyTcp, expect: 'blocked', what: 'own gateway, 0.0.0.0 TCP listener', live: 'host' },
      { kind: 'udp', host: '@gw', port: anyUdp, expect: 'blocked', what: 'own gateway, 0.0.0.0 UDP echo', live: 'host' },
      expect(l.neighbourTcp, 'blocked', 'pool address that is not a cell (forbidden even in dry-run)'),
      expect(l.metadata, 'blocked', 'metadata address (forbidden even in dry-run)'),
    ];
    const r = await probe(client, 'runsc', targets);
    // The cell learnt its gateway itself; now show that the listeners it timed out on answer there.
    const resolved = targets.map((t) => (t.host === '@gw' ? { ...t, host: r.out.gw } : t));
    const controls = await lab.controls(resolved);
    assert.deepEqual(controls.failures, [], 'a listener the cell was probed against does not answer its control');
    const failures = [...verdictFailures(`gVisor ${r.out.ip}`, resolved, r.out.results), ...lab.arrivalsFrom([r.out.ip])];
    assert.deepEqual(failures, [], 'reachability differs from the dry-run policy');

    const records = await until(
      () => client.listDeniedConnections({ jobId: r.job.id, limit: 1000 }),
      (rs) => [LAB.tcpPort, LAB.otherTcpPort].every((port) => rs.some((x) => x.action === 'dry-run' && x.port === port && x.protocol === 'tcp')),
      15_000,
    );
    const of = (dest: string, port: number, protocol = 'tcp') => records.filter((x) => x.destination === dest && x.port === port && x.protocol === protocol);
    assert.ok(of(LAB.other, LAB.tcpPort).some((x) => x.action === 'dry-run'), `no dry-run record of ${LAB.other}:${LAB.tcpPort}: ${JSON.stringify(records)}`);
    assert.ok(of(LAB.allowed, LAB.otherTcpPort).some((x) => x.action === 'dry-run'), `no dry-run record of ${LAB.allowed}:${LAB.otherTcpPort}`);
    assert.deepEqual(of(LAB.allowed, LAB.tcpPort), [], 'an allowed connection was recorded');
    assert.ok(records.filter((x) => x.destination.startsWith('203.0.113.')).every((x) => x.action === 'dry-run'), 'dry-run egress was recorded as denied');
    assert.ok(records.filter((x) => x.destination === LAB.metadata || x.destination === lab.poolNeighbour).every((x) => x.action === 'denied'), 'a forbidden destination was recorded as dry-run');
  } finally {
    client.close();
  }
});
