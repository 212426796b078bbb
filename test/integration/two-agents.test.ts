// Two real agents on this one host for one control plane: each with its own data directory, network pool and id, and
// every host-global object named after its own id; jobs land on both; placement prefers the agent with a warm cell of
// the job's class; drain moves new work to the other; the agents' cells cannot reach each other even when the
// workspace's egress policy allows the other's pool; a SIGKILLed agent's job ends as error and new work goes to the
// other; one agent's reconcile leaves the other's objects alone; a removed agent is refused until re-admitted; each gets
// only work of the runtimes it offers, and work no agent offers is refused at once.
// Root only (real cells). Agent A is the cluster's own (runc only, runc/small warm), agent B an extra process (runc and
// crun, runc/large warm).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanroomClient, CleanroomError, type AgentInfo, type Job } from '../../src/sdk/client.js';
import { listCgroups } from '../../src/agent/cells/cgroup.js';
import { addressIn, cidrOf, parseIpv4 } from '../../src/shared/net/ipv4.js';
import { freePort, TestCluster, type ExtraAgent } from '../support/cluster.js';
import { cellWorkDir, waitFor } from '../support/host.js';
import { PROBE_PY, PROBE_TIMEOUT_S, verdictFailures, wireTargets, type Target } from '../support/net-lab.js';

const sh = promisify(execFile);

let cluster: TestCluster;
let b: ExtraAgent;
let A = '';
let B = '';
let deadUrl = '';

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { runtimes: ['runc'], pool: [{ runtime: 'runc', class: 'small', warm: 1 }], maxRunningJobs: 4 } } });
  A = cluster.agentId;
  // B dials a URL nothing listens on first: it must fail over to the real one.
  deadUrl = `wss://127.0.0.1:${await freePort()}/v1/agent`;
  b = await cluster.startAgent({
    config: {
      agent: {
        runtimes: ['runc', 'crun'],
        pool: [{ runtime: 'runc', class: 'large', warm: 1 }],
        maxRunningJobs: 4,
        controlUrls: [deadUrl, `wss://127.0.0.1:${cluster.config.control.agentPort}/v1/agent`],
      },
    },
  });
  B = b.agentId;
});

after(async () => {
  try {
    await b?.stop();
  } finally {
    await cluster?.stop();
  }
});

const agents = async (): Promise<Record<string, AgentInfo>> => Object.fromEntries((await cluster.client.listAgents()).map((a) => [a.id, a]));

/** warmOn waits until the agent reports a warm cell of the class. */
async function warmOn(id: string, sizeClass: string): Promise<void> {
  let last: AgentInfo | undefined;
  await waitFor(
    async () => {
      last = (await agents())[id];
      return last?.state === 'connected' && last.warm.some((w) => w.sizeClass === sizeClass && w.cells > 0);
    },
    60_000,
    () => JSON.stringify(last),
  );
}

/** agentOf names the agent a job's cell was assigned on (the audit log's cell.assigned event). */
async function agentOf(jobId: string): Promise<string> {
  const events = await cluster.client.listAuditEvents({ type: 'cell.assigned', limit: 500 });
  const e = events.find((x) => x.subject === jobId);
  assert.ok(e, `no cell.assigned event for ${jobId}`);
  return e.actor.replace(/^agent:/, '');
}

async function sh0(cmd: string, args: string[]): Promise<string> {
  return (await sh(cmd, args)).stdout;
}

/** hostObjects lists the host-global objects named after an agent. */
async function hostObjects(id: string, dataDir: string) {
  const prefix = `cr${id}`;
  const tables = (await sh0('nft', ['list', 'tables'])).split('\n').map((l) => l.trim());
  const gateway = existsSync(`/sys/class/net/${prefix}gw`);
  const addrs = gateway ? (JSON.parse(await sh0('ip', ['-j', '-4', 'addr', 'show', 'dev', `${prefix}gw`])) as Array<{ addr_info: Array<{ local: string }> }>) : [];
  const loops: string[] = [];
  for (const dev of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      loops.push(readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim());
    } catch {
      // not bound
    }
  }
  return {
    table: tables.includes(`table inet ${prefix}`),
    gateway,
    gatewayAddresses: addrs.flatMap((a) => a.addr_info.map((i) => i.local)),
    hub: existsSync(`/run/netns/${prefix}hub`),
    netns: readdirSync('/run/netns').filter((n) => n.startsWith(`${prefix}-`)).sort(),
    links: readdirSync('/sys/class/net').filter((n) => n.startsWith(prefix)).sort(),
    cgroups: listCgroups(`cr-${id}-`).sort(),
    containers: readdirSync(join(dataDir, 'agent', 'runc')).filter((n) => n.startsWith('cr-')).sort(),
    volumes: loops.filter((f) => f.startsWith(`${dataDir}/`)),
  };
}

test('both agents connect (B after failing over from an unreachable URL), each with its own id, pool and host objects', async () => {
  assert.notEqual(A, B);
  await warmOn(A, 'small');
  await warmOn(B, 'large');
  const list = await agents();
  assert.deepEqual(Object.keys(list).sort(), [A, B].sort());
  for (const a of Object.values(list)) assert.equal(a.capacity, 4);
  // B's log: the dead URL first, then the real one.
  const lines = b.log().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; url?: string });
  const unreachable = lines.findIndex((l) => l.msg === 'control plane unreachable' && l.url === deadUrl);
  const connected = lines.findIndex((l) => l.msg === 'connected to control plane' && l.url === `wss://127.0.0.1:${cluster.config.control.agentPort}/v1/agent`);
  assert.ok(unreachable >= 0 && connected > unreachable, JSON.stringify(lines.slice(0, 6)));

  await checkHostObjects(false);
  assert.notEqual(cluster.config.network.pool, b.pool);
});

/**
 * checkHostObjects: every host-global object of each agent (nft table, gateway and its addresses, netns, interfaces,
 * cgroups, containers, loop-backed volumes) carries that agent's id or lives in its data directory and pool, and none of
 * the other's. Gateway addresses exist once a cell of the agent has been assigned (withGateways).
 */
async function checkHostObjects(withGateways: boolean): Promise<void> {
  const pools = { [A]: cidrOf(cluster.config.network.pool), [B]: cidrOf(b.pool) };
  const dirs = { [A]: cluster.dataDir, [B]: b.dataDir };
  for (const id of [A, B]) {
    const other = id === A ? B : A;
    const o = await hostObjects(id, dirs[id]!);
    assert.ok(o.table, `nft table inet cr${id}`);
    assert.ok(o.hub && o.links.includes(`cr${id}up`), `hub cr${id}hub and its uplink cr${id}up`);
    if (withGateways) assert.ok(o.gatewayAddresses.length > 0, `gateway cr${id}gw has addresses`);
    for (const addr of o.gatewayAddresses) assert.ok(addressIn(pools[id]!, parseIpv4(addr)!), `${addr} on cr${id}gw is in ${id}'s pool`);
    assert.ok(o.netns.length > 0 && o.cgroups.length > 0 && o.containers.length > 0 && o.volumes.length > 0, JSON.stringify(o));
    // Each warm cell's container, cgroup and netns carry this agent's id; its volume lives in this agent's data dir.
    for (const c of o.containers) assert.match(c, new RegExp(`^cr-${id}-`));
    for (const c of o.containers) {
      const cellId = c.slice(`cr-${id}-`.length);
      assert.ok(o.netns.includes(`cr${id}-${cellId}`), `netns of ${c}`);
    }
    // Nothing of one agent is named after, or kept in the directories of, the other.
    const theirs = await hostObjects(other, dirs[other]!);
    assert.equal(o.containers.filter((c) => theirs.containers.includes(c)).length, 0);
    assert.equal(o.volumes.filter((v) => v.startsWith(`${dirs[other]}/`)).length, 0);
    for (const addr of o.gatewayAddresses) assert.ok(!addressIn(pools[other]!, parseIpv4(addr)!), `${addr} of ${id} is not in ${other}'s pool`);
  }
}

test('jobs land on both agents, each where a warm cell of its class waits; `agents ls` shows both', async () => {
  await warmOn(A, 'small');
  await warmOn(B, 'large');
  // Small (cpu 1, 256 MiB) maps to class small: warm on A only. Large (cpu 2, 1 GiB) maps to large: warm on B only.
  const small = await cluster.runJob({ command: ['sh', '-c', 'echo small'], cpu: 1, memoryMiB: 256 });
  assert.equal(small.job.status, 'succeeded', small.job.message ?? '');
  assert.equal(await agentOf(small.job.id), A);
  assert.equal(small.job.timings.agent_cold, 0, 'started on a warm cell');
  await warmOn(B, 'large');
  const large = await cluster.runJob({ command: ['sh', '-c', 'echo large'], cpu: 2, memoryMiB: 1024 });
  assert.equal(large.job.status, 'succeeded', large.job.message ?? '');
  assert.equal(await agentOf(large.job.id), B);
  assert.equal(large.job.timings.agent_cold, 0, 'started on a warm cell');
  // Once more each way, the other order: warmth, not the order of ids or of arrival, decides.
  await warmOn(A, 'small');
  await warmOn(B, 'large');
  const [l2, s2] = await Promise.all([
    cluster.runJob({ command: ['true'], cpu: 2, memoryMiB: 1024 }),
    cluster.runJob({ command: ['true'], cpu: 1, memoryMiB: 256 }),
  ]);
  assert.deepEqual([await agentOf(l2.job.id), await agentOf(s2.job.id)], [B, A]);
  // Both have assigned cells now: their gateways carry addresses, each in its own pool. (Refills done first: a cell
  // mid-prepare has its netns before its container.)
  await warmOn(A, 'small');
  await warmOn(B, 'large');
  await checkHostObjects(true);

  const ls = await cluster.cli(['agents', 'ls']);
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /ID\s+STATE\s+RUNNING\s+RUNTIMES\s+CLASSES\s+WARM/);
  assert.match(ls.stdout, new RegExp(`${A}\\s+connected\\s+\\d+/4\\s+runc\\s+small\\(1cpu/512M/256M\\),large`));
  assert.match(ls.stdout, new RegExp(`${B}\\s+connected\\s+\\d+/4\\s+runc,crun\\s`));
});

test('each agent gets only work of the runtimes it offers; work no agent offers is refused at once; a draining offerer queues it', async () => {
  const list = await agents();
  assert.deepEqual(list[A]!.offers?.runtimes, ['runc']);
  assert.deepEqual(list[B]!.offers?.runtimes, ['runc', 'crun']);
  assert.deepEqual(list[B]!.offers?.classes.map((c) => [c.name, c.cpu, c.memoryMiB, c.diskMiB]), [['small', 1, 512, 256], ['large', 2, 2048, 1024]]);
  // crun work goes to B only, whatever the load or warmth (A is idle with a warm cell of class small).
  await warmOn(A, 'small');
  const crun = await Promise.all([1, 2, 3].map((i) => cluster.runJob({ command: ['sh', '-c', `echo crun-${i}`], runtime: 'crun', cpu: 1, memoryMiB: 256 })));
  for (const [i, r] of crun.entries()) {
    assert.equal(r.job.status, 'succeeded', r.job.message ?? '');
    assert.equal(r.stdout, `crun-${i + 1}\n`);
    assert.equal(await agentOf(r.job.id), B);
  }
  // runsc: neither offers it. The create is refused (no job recorded), as is a sandbox's.
  const before = (await cluster.client.listJobs(500)).length;
  await assert.rejects(cluster.client.createJob({ command: ['true'], runtime: 'runsc' }), (e: CleanroomError) => {
    assert.equal(e.code, 'runtime_not_offered');
    assert.equal(e.status, 422);
    assert.match(e.message, /no agent offers runtime runsc \(the fleet offers: crun, runc\)/);
    assert.deepEqual(e.details, { runtime: 'runsc', offered: ['crun', 'runc'] });
    return true;
  });
  const sbx = await cluster.client.raw('POST', '/v1/sandboxes', JSON.stringify({ runtime: 'runsc' }), { 'content-type': 'application/json' });
  assert.equal(sbx.status, 422, JSON.stringify(sbx.body));
  assert.equal((sbx.body as { error: { code: string } }).error.code, 'runtime_not_offered');
  assert.equal((await cluster.client.listJobs(500)).length, before, 'nothing recorded');
  // B draining: crun work waits for it (it is not refused), and runs there once B is undrained.
  assert.equal((await cluster.cli(['agents', 'drain', B])).code, 0);
  let queued: Job;
  try {
    queued = await cluster.client.createJob({ command: ['echo', 'waited'], runtime: 'crun' });
    assert.equal(queued.status, 'queued');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await cluster.client.getJob(queued.id)).status, 'queued', 'A (runc only, idle) does not take it');
    // Work behind it that an agent has room for is not held up by it (same workspace, queued after it).
    const behind = await cluster.runJob({ command: ['echo', 'behind'], runtime: 'runc' });
    assert.equal(behind.stdout, 'behind\n');
    assert.equal(await agentOf(behind.job.id), A);
    assert.equal((await cluster.client.getJob(queued.id)).status, 'queued', 'the crun job still waits for B');
  } finally {
    assert.equal((await cluster.cli(['agents', 'undrain', B])).code, 0);
  }
  const done = await cluster.client.followLogs(queued.id, () => {});
  assert.equal(done.status, 'succeeded', done.message ?? '');
  assert.equal(await agentOf(queued.id), B);
});

test("a third agent on the cluster agent's pool refuses to start, naming the interface that holds it", async () => {
  // A's gateway holds addresses of its pool since A's cells were assigned (previous test).
  await assert.rejects(cluster.startAgent({ config: { network: { pool: cluster.config.network.pool } } }), (e: Error) => {
    assert.match(e.message, new RegExp(`network\\.pool ${cluster.config.network.pool.replace(/\./g, '\\.')} is in use on this host \\(cr${A}gw has`));
    return true;
  });
});

test('drain moves new work to the other agent; a connected agent that is not drained cannot be removed', async () => {
  const drained = await cluster.cli(['agents', 'drain', A]);
  assert.equal(drained.code, 0, drained.stderr);
  assert.equal((await agents())[A]!.state, 'draining');
  try {
    // A still has its warm small cell, yet small jobs now go to B.
    const jobs = await Promise.all([0, 1, 2].map(() => cluster.runJob({ command: ['true'], cpu: 1, memoryMiB: 256 })));
    for (const j of jobs) {
      assert.equal(j.job.status, 'succeeded', j.job.message ?? '');
      assert.equal(await agentOf(j.job.id), B);
    }
    const busy = await cluster.client.raw('DELETE', `/v1/agents/${B}`);
    assert.equal(busy.status, 409);
    const err = (busy.body as { error: { code: string; message: string } }).error;
    assert.equal(err.code, 'conflict');
    assert.match(err.message, /drain it first/);
    const cli = await cluster.cli(['agents', 'remove', B]);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /drain it first/);
    const unknown = await cluster.client.raw('POST', '/v1/agents/abcdef/drain');
    assert.equal(unknown.status, 404);
  } finally {
    assert.equal((await cluster.cli(['agents', 'undrain', A])).code, 0);
  }
  assert.equal((await agents())[A]!.state, 'connected');
  // Members may not see or steer the fleet.
  await cluster.client.createWorkspace({ name: 'fleet-member' });
  const key = await cluster.client.createApiKey({ workspace: 'fleet-member', name: 'm' });
  const member = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  try {
    assert.equal((await member.raw('GET', '/v1/agents')).status, 403);
    assert.equal((await member.raw('POST', `/v1/agents/${A}/drain`)).status, 403);
  } finally {
    member.close();
  }
});

/** The in-cell script: prints its address and gateway, listens (TCP 8080, UDP echo 8081), waits for targets, probes. */
const CELL = `${PROBE_PY}
import fcntl, os, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])
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
print('INFO ' + json.dumps({'ip': ip, 'gw': _gateway()}), flush=True)
while not os.path.exists('/work/targets'): time.sleep(0.05)
print('RESULT ' + json.dumps(probe_all(json.load(open('/work/targets')), ${PROBE_TIMEOUT_S})), flush=True)
`;

/** tcpOpen connects from the host (a control: the listener answers when the firewall is not in the way). */
function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 3000 }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
    s.on('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

test("a cell on A cannot reach a cell of the same workspace on B (nor B's gateway), even with B's pool allowed by policy", async () => {
  await cluster.client.createWorkspace({ name: 'fleet-net' });
  const key = await cluster.client.createApiKey({ workspace: 'fleet-net', name: 'n' });
  const ws = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  try {
    // The workspace may send anywhere in B's pool: only the receiving agent's table stands in the way.
    await ws.setNetworkPolicy({ allow: [{ cidr: b.pool, protocol: 'any' }] });
    interface Cell {
      agent: string;
      dataDir: string;
      job: Job;
      output: string;
      ended: Promise<Job>;
      info?: { ip: string; gw: string };
    }
    const start = async (on: string): Promise<Cell> => {
      const other = on === A ? B : A;
      await cluster.client.drainAgent(other);
      try {
        const job = await ws.createJob({ command: ['/usr/bin/python3', '-c', CELL], timeoutSeconds: 90 });
        const cell: Cell = { agent: on, dataDir: on === A ? cluster.dataDir : b.dataDir, job, output: '', ended: Promise.resolve(job) };
        cell.ended = ws.followLogs(job.id, (c) => (cell.output += c.data.toString()));
        cell.ended.catch(() => {}); // awaited below; if the test fails first, stopping the agents cuts the stream
        await waitFor(() => cell.output.includes('INFO '), 60_000, () => cell.output);
        cell.info = JSON.parse(/INFO (.*)/.exec(cell.output)![1]!) as { ip: string; gw: string };
        cell.job = await ws.getJob(job.id);
        return cell;
      } finally {
        await cluster.client.undrainAgent(other);
      }
    };
    const onA = await start(A);
    const onB = await start(B);
    assert.equal(await agentOf(onA.job.id), A);
    assert.equal(await agentOf(onB.job.id), B);
    assert.ok(addressIn(cidrOf(cluster.config.network.pool), parseIpv4(onA.info!.ip)!), 'A\'s cell is in A\'s pool');
    assert.ok(addressIn(cidrOf(b.pool), parseIpv4(onB.info!.ip)!), 'B\'s cell is in B\'s pool');
    // Controls: each cell's listener answers from the host.
    for (const c of [onA, onB]) assert.ok(await tcpOpen(c.info!.ip, 8080), `the listener of the cell on ${c.agent} answers from the host`);
    const targetsOf = (self: Cell, peer: Cell): Target[] => [
      { kind: 'dns', host: self.info!.gw, port: 53, expect: 'open', what: 'own gateway resolver (positive control)' },
      { kind: 'tcp', host: peer.info!.ip, port: 8080, expect: 'blocked', what: `same-workspace cell on ${peer.agent}, TCP listener` },
      { kind: 'udp', host: peer.info!.ip, port: 8081, expect: 'blocked', what: `same-workspace cell on ${peer.agent}, UDP echo` },
      { kind: 'icmp', host: peer.info!.ip, expect: 'blocked', what: `same-workspace cell on ${peer.agent}, ICMP echo` },
      { kind: 'dns', host: peer.info!.gw, port: 53, expect: 'blocked', what: `${peer.agent}'s gateway, resolver` },
      { kind: 'tcp', host: peer.info!.gw, port: 443, expect: 'blocked', what: `${peer.agent}'s gateway, data port` },
    ];
    const pairs: Array<[Cell, Target[]]> = [
      [onA, targetsOf(onA, onB)],
      [onB, targetsOf(onB, onA)],
    ];
    for (const [c, targets] of pairs) {
      const work = cellWorkDir(c.dataDir, c.job.cellId!);
      writeFileSync(join(work, 'targets.tmp'), JSON.stringify(wireTargets(targets)));
      const uid = statSync(work).uid;
      chownSync(join(work, 'targets.tmp'), uid, uid);
      await sh('mv', [join(work, 'targets.tmp'), join(work, 'targets')]);
    }
    const ended = await Promise.all([onA.ended, onB.ended]);
    for (const j of ended) assert.equal(j.status, 'succeeded', j.message ?? '');
    const failures = pairs.flatMap(([c, targets]) => verdictFailures(`cell on ${c.agent}`, targets, JSON.parse(/RESULT (.*)/.exec(c.output)![1]!) as string[]));
    assert.deepEqual(failures, []);
  } finally {
    ws.close();
  }
});

let killedJob = '';

test("SIGKILL of B: its job ends as error, new work goes to A, and B's reconcile leaves A's objects alone", async () => {
  await cluster.client.drainAgent(A);
  let job: Job;
  try {
    job = await cluster.client.createJob({ command: ['sleep', '120'], cpu: 1, memoryMiB: 256 });
    await waitFor(async () => (await cluster.client.getJob(job.id)).status === 'running', 60_000);
  } finally {
    await cluster.client.undrainAgent(A);
  }
  killedJob = job.id;
  assert.equal(await agentOf(job.id), B);
  await warmOn(A, 'small');
  const beforeA = await hostObjects(A, cluster.dataDir);
  await b.kill();
  // The control plane waits agentGraceMs (3 s in tests) for B to come back, then ends its jobs.
  await waitFor(async () => (await cluster.client.getJob(job.id)).status === 'error', 30_000);
  assert.match((await cluster.client.getJob(job.id)).message ?? '', /agent/);
  assert.equal((await agents())[B]!.state, 'disconnected');
  // Work that would have gone to B goes to A, large jobs included.
  const next = await Promise.all([cluster.runJob({ command: ['true'], cpu: 2, memoryMiB: 1024 }), cluster.runJob({ command: ['true'] })]);
  for (const j of next) {
    assert.equal(j.job.status, 'succeeded', j.job.message ?? '');
    assert.equal(await agentOf(j.job.id), A);
  }
  // B's cells are still on the host (a crash); its reconcile removes them, and nothing of A's.
  const leftB = await hostObjects(B, b.dataDir);
  assert.ok(leftB.containers.length > 0, 'B left cells behind');
  // A settles first: the cells of the jobs above are wiped (their receipts are in) and its pool is refilled.
  await waitFor(async () => (await Promise.all(next.map((j) => cluster.client.getJob(j.job.id)))).every((j) => j.wipe !== null), 30_000);
  await waitFor(async () => (await agents())[A]?.preparing === 0, 30_000);
  await warmOn(A, 'small');
  const stableA = await hostObjects(A, cluster.dataDir);
  const report = await b.reconcile();
  assert.deepEqual(report.leftovers, []);
  // What B's reconcile removed is all B's.
  assert.ok(report.containers.length > 0);
  for (const name of [...report.containers, ...report.cgroups]) assert.match(name, new RegExp(`^(\\w+:)?cr-${B}-`), `B's reconcile removed ${name}`);
  const afterA = await hostObjects(A, cluster.dataDir);
  // Nothing of A's is gone (A may have added cells meanwhile: its refills go on).
  assert.equal(afterA.table && afterA.gateway && afterA.hub, true);
  for (const k of ['gatewayAddresses', 'netns', 'links', 'cgroups', 'containers', 'volumes'] as const) {
    const gone = stableA[k].filter((x) => !afterA[k].includes(x));
    assert.deepEqual(gone, [], `B's reconcile removed A's ${k}`);
  }
  assert.equal(beforeA.table && afterA.table, true);
  const goneB = await hostObjects(B, b.dataDir);
  assert.deepEqual(goneB, { table: false, gateway: false, gatewayAddresses: [], hub: false, netns: [], links: [], cgroups: [], containers: [], volumes: [] }, JSON.stringify(goneB));
  // A still runs work.
  const still = await cluster.runJob({ command: ['sh', '-c', 'echo alive'] });
  assert.equal(still.stdout, 'alive\n');
});

test('a removed agent is refused when it dials again, until undrained; then its receipts arrive', async () => {
  const removed = await cluster.cli(['agents', 'remove', B]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal((await agents())[B]!.state, 'removed');
  await b.start('started');
  await waitFor(() => /an operator removed it/.test(b.log()), 60_000, () => b.log().slice(-2000));
  assert.equal((await agents())[B]!.connected, false);
  assert.equal((await cluster.cli(['agents', 'undrain', B])).code, 0);
  // The refusal's backoff is 30 s (× jitter): B comes back within it.
  await waitFor(async () => (await agents())[B]?.state === 'connected', 45_000);
  // The job killed with B got its wipe receipt from B's reconcile once B was re-admitted.
  await waitFor(async () => (await cluster.client.getJob(killedJob)).wipe !== null, 30_000);
  const j = await cluster.client.getJob(killedJob);
  assert.equal(j.status, 'error');
  assert.ok(existsSync(b.dataDir));
});
