// Audits from inside cells and from the host what the README claims and no other test checks: rlimits and cgroup limits
// of cells (both runtimes), the control plane's unprivileged account, the modes of secret files, signing keys wrapped
// at rest, an audit table that refuses to be rewritten, and a data listener that serves nothing but data. Root only.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, type JsonWebKey } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { unwrapKey } from '../../src/control/data/envelope.js';
import { loadKek } from '../../src/control/data/keyring.js';
import { CleanroomClient, type Job, type JobRequest } from '../../src/sdk/client.js';
import { loadConfig } from '../../src/shared/config.js';
import { TestCluster } from '../support/cluster.js';

const MIB = 1024 * 1024;
/** NOFILE is the cluster's agent.nofile; not the default (1024), so that the cells' limit is seen to come from the config. */
const NOFILE = 1536;
/** CLASS_PIDS is the size class's pids limit: low, so that a runc workload reaches it at once. */
const CLASS_PIDS = 48;
/** RUNSC_MIN_PIDS is the floor gVisor cells get whatever their class says, since gVisor's own threads count (config.ts). */
const RUNSC_MIN_PIDS = 1024;
const CPU_PERIOD_US = 100_000;

let cluster: TestCluster;
let dataPort = 0;
let apiPort = 0;
/** controlUser is the account the cluster's config gives the control plane (`control.user`). */
let controlUser = '';

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { nofile: NOFILE, classes: [{ name: 'small', cpu: 1, memoryMiB: 512, pids: CLASS_PIDS, diskMiB: 256 }] } } });
  await cluster.waitWarm();
  const config = loadConfig(join(cluster.dataDir, 'config.json'));
  ({ dataPort, apiPort, user: controlUser } = config.control);
});

after(async () => {
  await cluster?.stop();
});

/** runScript runs a python script in a cell and returns the JSON it printed after `RESULT `. */
async function runScript<T>(runtime: Runtime, script: string, args: string[] = []): Promise<T> {
  const r = await cluster.runJob({ runtime, command: ['/usr/bin/python3', '-c', script, ...args], timeoutSeconds: 120 });
  assert.equal(r.job.status, 'succeeded', `${runtime} job ended ${r.job.status} (${r.job.message}): ${r.stderr}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(line, `${runtime} job printed no result: ${r.stdout} ${r.stderr}`);
  return JSON.parse(line.slice(7)) as T;
}

/**
 * whileRunning starts a job, waits until its output holds `marker`, runs `inspect` on the running job, then cancels it
 * (even if inspect threw) and returns what inspect returned, the ended job and the output.
 */
async function whileRunning<T>(req: JobRequest, marker: string, inspect: (job: Job, output: string) => T | Promise<T>): Promise<{ value: T; ended: Job; output: string }> {
  const created = await cluster.client.createJob({ timeoutSeconds: 300, ...req });
  let output = '';
  let outcome: Promise<{ ok: true; value: T } | { ok: false; error: unknown }> | null = null;
  const ended = await cluster.client.followLogs(created.id, (c) => {
    output += c.data.toString('utf8');
    if (outcome || !output.includes(marker)) return;
    const seen = output;
    outcome = (async () => {
      try {
        return await inspect(await cluster.client.getJob(created.id), seen);
      } finally {
        await cluster.client.cancelJob(created.id);
      }
    })().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  });
  assert.ok(outcome, `the job never printed ${marker}: it ended ${ended.status} (${ended.message}); output: ${output}`);
  const result = await (outcome as Promise<{ ok: true; value: T } | { ok: false; error: unknown }>);
  if (!result.ok) throw result.error;
  assert.equal(ended.status, 'cancelled', `the job ended ${ended.status} (${ended.message}) before it was cancelled; output: ${output}`);
  return { value: result.value, ended, output };
}

/** cgroupDir is the host directory of a cell's cgroup in one controller's hierarchy. */
function cgroupDir(controller: string, cellId: string): string {
  return `/sys/fs/cgroup/${controller}/cr-${cluster.agentId}-${cellId}`;
}

function readTrim(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

function readStatus(pid: number): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(text.split('\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
}

function modeOf(path: string): string {
  return (statSync(path).mode & 0o7777).toString(8).padStart(4, '0');
}

function accountIds(name: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** Reads the process's limits from the rlimit API and /proc, tries to raise them, and opens files until refused. */
const RLIMIT_SCRIPT = `
import errno, json, os, re, resource
R = {'nofile': list(resource.getrlimit(resource.RLIMIT_NOFILE)), 'core': list(resource.getrlimit(resource.RLIMIT_CORE))}
text = open('/proc/self/limits').read() if os.path.exists('/proc/self/limits') else ''
def proc(name):
    m = re.search(r'^' + name + r'\\s+(\\S+)\\s+(\\S+)', text, re.M)
    return [m.group(1), m.group(2)] if m else None
R['proc_nofile'] = proc('Max open files') if text else None
R['proc_core'] = proc('Max core file size') if text else None
def raise_to(res, v):
    try:
        resource.setrlimit(res, v)
        return 'raised'
    except (ValueError, OSError) as e:
        return type(e).__name__ + ': ' + str(e)
R['raise_nofile'] = raise_to(resource.RLIMIT_NOFILE, (R['nofile'][1] + 1, R['nofile'][1] + 1))
R['raise_core'] = raise_to(resource.RLIMIT_CORE, (1 << 20, 1 << 20))
fds = []
R['open_error'] = None
try:
    while len(fds) < 100000:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    R['open_error'] = errno.errorcode.get(e.errno, str(e.errno))
R['highest_fd'] = max(fds) if fds else None
for f in fds:
    os.close(f)
print('RESULT ' + json.dumps(R))
`;

interface RlimitView {
  nofile: [number, number];
  core: [number, number];
  proc_nofile: [string, string] | null;
  proc_core: [string, string] | null;
  raise_nofile: string;
  raise_core: string;
  open_error: string | null;
  highest_fd: number | null;
}

test('inside cells of both runtimes: RLIMIT_NOFILE is agent.nofile and holds, RLIMIT_CORE is 0, and neither can be raised', async () => {
  const views = await Promise.all(RUNTIMES.map((rt) => runScript<RlimitView>(rt, RLIMIT_SCRIPT)));
  for (const [i, rt] of RUNTIMES.entries()) {
    const v = views[i]!;
    console.log(`${rt} rlimits: ${JSON.stringify(v)}`);
    assert.deepEqual(v.nofile, [NOFILE, NOFILE], `${rt}: RLIMIT_NOFILE (soft, hard) is ${v.nofile.join(', ')}, not agent.nofile ${NOFILE}`);
    // A second source where there is one: gVisor (20221219) has no /proc/self/limits.
    if (rt !== 'runsc') assert.deepEqual(v.proc_nofile, [String(NOFILE), String(NOFILE)], `${rt}: /proc/self/limits says open files ${JSON.stringify(v.proc_nofile)}`);
    assert.deepEqual(v.core, [0, 0], `${rt}: RLIMIT_CORE (soft, hard) is ${v.core.join(', ')}: the workload could dump core`);
    if (rt !== 'runsc') assert.deepEqual(v.proc_core, ['0', '0'], `${rt}: /proc/self/limits says core file size ${JSON.stringify(v.proc_core)}`);
    assert.notEqual(v.raise_nofile, 'raised', `${rt}: the workload raised its RLIMIT_NOFILE hard limit`);
    assert.notEqual(v.raise_core, 'raised', `${rt}: the workload raised its RLIMIT_CORE hard limit`);
    assert.equal(v.open_error, 'EMFILE', `${rt}: opening files until refused ended with ${v.open_error}, not EMFILE`);
    assert.equal(v.highest_fd, NOFILE - 1, `${rt}: the highest descriptor opened was ${v.highest_fd}; RLIMIT_NOFILE ${NOFILE} allows up to ${NOFILE - 1}`);
  }
});

/** Forks children (each waits on a pipe) until refused or `cap` of them exist, releases them, reports, then waits. */
const FORK_SCRIPT = `
import errno, json, os, signal, sys
cap, marker = int(sys.argv[1]), sys.argv[2]
r, w = os.pipe()
kids, error = [], None
while len(kids) < cap:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
os.close(w)
for k in kids:
    os.waitpid(k, 0)
print('RESULT ' + json.dumps({'forked': len(kids), 'error': error}), flush=True)
print(marker, flush=True)
signal.pause()
`;
import { RUNTIMES, type Runtime } from '../../src/shared/wire.js';

test('runc: the class pids limit holds: forks beyond it fail with EAGAIN, and the host cgroup has pids.max = the class limit and counted the refusals', async () => {
  const marker = `forked-${process.pid}`;
  const { value: host, output } = await whileRunning({ runtime: 'runc', command: ['/usr/bin/python3', '-c', FORK_SCRIPT, String(CLASS_PIDS * 4), marker] }, marker, (job) => {
    assert.ok(job.cellId, 'the running job has no cellId');
    const dir = cgroupDir('pids', job.cellId);
    return { max: readTrim(join(dir, 'pids.max')), events: readTrim(join(dir, 'pids.events')) };
  });
  const line = output.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(line, `the fork job printed no result: ${output}`);
  const r = JSON.parse(line.slice(7)) as { forked: number; error: string | null };
  console.log(`runc fork probe: ${JSON.stringify(r)}; host cgroup pids.max ${host.max}, pids.events ${JSON.stringify(host.events)}`);
  assert.equal(r.error, 'EAGAIN', `forking ${CLASS_PIDS * 4} processes in a cell limited to ${CLASS_PIDS} ended with ${r.error} after ${r.forked}`);
  assert.ok(r.forked < CLASS_PIDS && r.forked >= CLASS_PIDS - 8, `the workload forked ${r.forked} processes; with cell init and itself in a cgroup of ${CLASS_PIDS} it should stop just short of that`);
  assert.equal(host.max, String(CLASS_PIDS), `the cell's pids.max is ${host.max}, not the class limit ${CLASS_PIDS}`);
  const refusals = Number(/^max (\d+)$/m.exec(host.events)?.[1] ?? NaN);
  assert.ok(refusals >= 1, `the cell's pids.events counts ${host.events}: the cgroup did not refuse the forks`);
});

test('host side, both runtimes: a running job with cpu=0.5 and memoryMiB=200 has that CPU quota and memory(+swap) limit, and its pids limit, in its own cgroups', async () => {
  const memoryMiB = 200;
  for (const runtime of RUNTIMES) {
    const marker = `limits-${runtime}-${process.pid}`;
    const { value: seen } = await whileRunning({ runtime, cpu: 0.5, memoryMiB, command: ['/bin/sh', '-c', `echo ${marker}; exec sleep 600`] }, marker, (job) => {
      assert.ok(job.cellId, `${runtime}: the running job has no cellId`);
      const cpu = cgroupDir('cpu', job.cellId);
      const mem = cgroupDir('memory', job.cellId);
      const memsw = join(mem, 'memory.memsw.limit_in_bytes');
      return {
        cellId: job.cellId,
        quota: readTrim(join(cpu, 'cpu.cfs_quota_us')),
        period: readTrim(join(cpu, 'cpu.cfs_period_us')),
        procs: readTrim(join(cpu, 'cgroup.procs')).split('\n').filter(Boolean),
        memory: readTrim(join(mem, 'memory.limit_in_bytes')),
        memsw: existsSync(memsw) ? readTrim(memsw) : null,
        memoryProcs: readTrim(join(mem, 'cgroup.procs')).split('\n').filter(Boolean),
        pids: readTrim(join(cgroupDir('pids', job.cellId), 'pids.max')),
      };
    });
    console.log(`${runtime} cgroup of a running job: ${JSON.stringify({ ...seen, procs: seen.procs.length, memoryProcs: seen.memoryProcs.length })}`);
    assert.equal(seen.quota, String(0.5 * CPU_PERIOD_US), `${runtime}: cpu.cfs_quota_us is ${seen.quota}, not 0.5 × ${CPU_PERIOD_US}`);
    assert.equal(seen.period, String(CPU_PERIOD_US), `${runtime}: cpu.cfs_period_us is ${seen.period}`);
    assert.equal(seen.memory, String(memoryMiB * MIB), `${runtime}: memory.limit_in_bytes is ${seen.memory}, not ${memoryMiB} MiB`);
    assert.ok(seen.memsw !== null, `${runtime}: no memory.memsw.limit_in_bytes: swap accounting is off, so the memory limit can be escaped into swap`);
    assert.equal(seen.memsw, String(memoryMiB * MIB), `${runtime}: memory.memsw.limit_in_bytes is ${seen.memsw}, not ${memoryMiB} MiB`);
    assert.ok(seen.procs.length > 0 && seen.memoryProcs.length > 0, `${runtime}: the cell's cgroups hold no process: the limits apply to nothing`);
    const pids = runtime === 'runsc' ? Math.max(CLASS_PIDS, RUNSC_MIN_PIDS) : CLASS_PIDS;
    assert.equal(seen.pids, String(pids), `${runtime}: pids.max is ${seen.pids}, not ${pids}`);
    const deadline = Date.now() + 60_000;
    while (existsSync(cgroupDir('cpu', seen.cellId)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(!existsSync(cgroupDir('cpu', seen.cellId)), `${runtime}: the cell's cgroup is still there 60 s after its job was cancelled`);
  }
});

test('the control plane runs as its own unprivileged account: not root, no supplementary groups, no capabilities', () => {
  const pid = Number(readTrim(join(cluster.dataDir, 'run', 'control.pid')));
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  assert.ok(argv.some((a) => a.endsWith('control/main.js')) && argv.includes(cluster.dataDir), `pid ${pid} in control.pid is not this cluster's control plane: ${argv.join(' ')}`);
  const account = accountIds(controlUser);
  assert.notEqual(account.uid, 0, `the account ${controlUser} is uid 0`);
  assert.notEqual(account.gid, 0, `the account ${controlUser} has gid 0`);
  const s = readStatus(pid);
  console.log(`control plane pid ${pid}: Uid ${s.Uid}, Gid ${s.Gid}, Groups '${s.Groups}', CapEff ${s.CapEff}, CapPrm ${s.CapPrm}`);
  assert.deepEqual(s.Uid?.split(/\s+/).map(Number), [account.uid, account.uid, account.uid, account.uid], `control plane Uid (real, effective, saved, fs) is ${s.Uid}, not ${controlUser} (${account.uid}) throughout`);
  assert.deepEqual(s.Gid?.split(/\s+/).map(Number), [account.gid, account.gid, account.gid, account.gid], `control plane Gid is ${s.Gid}, not ${account.gid} throughout`);
  assert.equal(s.Groups, '', `the control plane kept supplementary groups: ${s.Groups}`);
  for (const cap of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb']) assert.match(s[cap] ?? 'missing', /^0+$/, `the control plane holds capabilities: ${cap}=${s[cap]}`);
});

test('secrets on disk: KEK, client config and every private key are 0600 and owned by the one process that reads them; the control directory is 0700', () => {
  const account = accountIds(controlUser);
  const kek = join(cluster.dataDir, 'control', 'kek');
  assert.equal(modeOf(kek), '0600', `${kek} has mode ${modeOf(kek)}`);
  assert.equal(statSync(kek).uid, account.uid, `${kek} is not owned by ${controlUser}`);
  const clientConfig = cluster.env.CLEANROOM_CONFIG;
  assert.ok(clientConfig && existsSync(clientConfig), `no client config at ${clientConfig}`);
  assert.ok(readFileSync(clientConfig, 'utf8').includes(cluster.apiKey), `${clientConfig} does not hold the admin key, so its mode proves nothing`);
  assert.equal(modeOf(clientConfig), '0600', `the client config ${clientConfig} (it holds the admin API key) has mode ${modeOf(clientConfig)}`);
  const control = join(cluster.dataDir, 'control');
  assert.equal(modeOf(control), '0700', `${control} (database, objects, KEK) has mode ${modeOf(control)}`);
  assert.equal(statSync(control).uid, account.uid, `${control} is not owned by ${controlUser}`);
  const run = join(cluster.dataDir, 'run');
  assert.equal(modeOf(run), '0700', `${run} (logs) has mode ${modeOf(run)}`);
  const pki = join(cluster.dataDir, 'pki');
  const keys = readdirSync(pki).filter((f) => readFileSync(join(pki, f), 'utf8').includes('PRIVATE KEY'));
  assert.deepEqual(keys.sort(), ['agent-key.pem', 'ca-key.pem', 'server-key.pem'], `private keys under ${pki}: ${keys.join(', ')}`);
  const owners: Record<string, number> = { 'ca-key.pem': 0, 'agent-key.pem': 0, 'server-key.pem': account.uid };
  for (const k of keys) {
    const p = join(pki, k);
    assert.equal(modeOf(p), '0600', `${p} has mode ${modeOf(p)}`);
    assert.equal(statSync(p).uid, owners[k], `${p} is owned by uid ${statSync(p).uid}, not ${owners[k]}`);
  }
});

/** ED25519_PKCS8_PREFIX turns a 32-byte Ed25519 seed into a PKCS#8 DER key (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

test('token signing keys are wrapped under the KEK at rest: no private key in clear in the database, and the wrapped blob is the published key', async () => {
  const jwks = await cluster.client.raw('GET', '/.well-known/jwks.json');
  assert.equal(jwks.status, 200, `JWKS answered ${jwks.status}`);
  const published = (jwks.body as { keys: Array<JsonWebKey & { kid: string }> }).keys;
  assert.ok(published.length > 0, 'no signing key published');
  for (const k of published) assert.equal(k.d, undefined, `JWKS publishes the private part of ${k.kid}`);
  const dbPath = join(cluster.dataDir, 'control', 'cleanroom.db');
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  let rows: Array<{ kid: string; public_jwk: string; wrapped_private: Buffer; created_at: string }>;
  try {
    rows = db.prepare('SELECT kid, public_jwk, wrapped_private, created_at FROM signing_keys').all() as typeof rows;
  } finally {
    db.close();
  }
  assert.ok(rows.length > 0, 'no signing key rows in the database');
  assert.deepEqual(published.map((k) => k.kid).sort(), rows.map((r) => r.kid).sort(), 'the published keys are not the stored ones');
  const kek = loadKek(join(cluster.dataDir, 'control', 'kek'));
  const files = [dbPath, `${dbPath}-wal`].filter(existsSync).map((f) => [f, readFileSync(f)] as const);
  for (const row of rows) {
    const jwk = JSON.parse(row.public_jwk) as JsonWebKey;
    assert.deepEqual(Object.keys(jwk).sort(), ['crv', 'kty', 'x'], `${row.kid}: public_jwk holds more than the public key: ${Object.keys(jwk).join(', ')}`);
    for (const column of [row.kid, row.public_jwk, row.created_at, row.wrapped_private.toString('latin1')]) {
      assert.ok(!column.includes('PRIVATE KEY') && !column.includes('"d"'), `${row.kid}: a column holds a private key in clear`);
    }
    const seed = unwrapKey(kek, row.wrapped_private, `signing:${row.kid}`);
    const x = createPublicKey(createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' })).export({ format: 'jwk' }).x;
    assert.equal(x, jwk.x, `${row.kid}: the wrapped private key does not match its public key`);
    for (const form of [seed, Buffer.from(seed.toString('base64url')), Buffer.from(seed.toString('base64')), Buffer.from(seed.toString('hex'))]) {
      assert.equal(row.wrapped_private.indexOf(form), -1, `${row.kid}: the wrapped blob contains the private key`);
      for (const [f, bytes] of files) assert.equal(bytes.indexOf(form), -1, `${row.kid}: ${f} contains the private key in clear`);
    }
    seed.fill(0);
  }
  for (const [f, bytes] of files) assert.equal(bytes.indexOf('PRIVATE KEY'), -1, `${f} contains a PEM private key`);
  kek.fill(0);
});

test('the audit table refuses DELETE, UPDATE and INSERT OR REPLACE at the database level (on a copy of the live database)', async () => {
  // At least two events, whichever tests ran before: the bootstrap key's, and this key's.
  const me = await cluster.client.whoami();
  await cluster.client.createApiKey({ workspace: me.workspace.name, name: `audit-${process.pid}` });
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-audit-copy-'));
  try {
    const copy = join(dir, 'copy.db');
    const live = new Database(join(cluster.dataDir, 'control', 'cleanroom.db'), { readonly: true, fileMustExist: true });
    try {
      await live.backup(copy);
    } finally {
      live.close();
    }
    const db = new Database(copy, { fileMustExist: true });
    try {
      type Row = { seq: number; type: string; hash: string };
      const rows = () => db.prepare('SELECT seq, type, hash FROM audit_events ORDER BY seq').all() as Row[];
      const before = rows();
      assert.ok(before.length >= 2, `the audit log holds ${before.length} events: a refused DELETE of nothing would prove nothing`);
      const first = before[0]!;
      const last = before.at(-1)!;
      const attempts: Array<[string, () => unknown]> = [
        ['DELETE all', () => db.prepare('DELETE FROM audit_events').run()],
        ['DELETE the last', () => db.prepare('DELETE FROM audit_events WHERE seq = ?').run(last.seq)],
        ['UPDATE one', () => db.prepare("UPDATE audit_events SET type = 'forged' WHERE seq = ?").run(first.seq)],
        ['UPSERT one', () => db.prepare("INSERT INTO audit_events SELECT * FROM audit_events WHERE seq = ? ON CONFLICT(seq) DO UPDATE SET type = 'forged'").run(first.seq)],
        ['INSERT OR REPLACE one', () => db.prepare("INSERT OR REPLACE INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash) SELECT seq, time, 'forged', actor, workspace_id, subject, details, prev_hash, hash FROM audit_events WHERE seq = ?").run(first.seq)],
      ];
      for (const [what, run] of attempts) assert.throws(run, /append-only/, `${what}: the audit table did not refuse it`);
      assert.deepEqual(rows(), before, 'the audit table changed although every attempt was refused');
      // Control: the copy itself is writable, so the refusals above come from the triggers.
      db.prepare("INSERT INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash) VALUES (?, '', 'probe', 'test', NULL, NULL, '{}', ?, 'x')").run(last.seq + 1, last.hash);
      assert.equal(rows().length, before.length + 1, 'appending to the copy failed: the refusals above may not be the triggers');
    } finally {
      db.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Reply is a raw HTTPS answer. */
interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** call sends one request with the path exactly as given (no URL normalisation) to a loopback port. */
function call(port: number, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${cluster.apiKey}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = request({ host: '127.0.0.1', port, method, path, ca: cluster.ca, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the data listener serves only objects and JWKS: every other route answers 404 not_found even with an admin key, changes nothing and leaks nothing', async () => {
  // Something to leak: a job, a workspace key, an object.
  const job = await cluster.runJob({ runtime: 'runc', command: ['/bin/true'] });
  assert.equal(job.job.status, 'succeeded', `setup job ended ${job.job.status}`);
  const me = await cluster.client.whoami();
  const spare = await cluster.client.createApiKey({ workspace: me.workspace.name, name: `spare-${process.pid}` });
  await cluster.client.putObject('audit/probe.txt', 'probe');
  const policy = await cluster.client.getNetworkPolicy();
  const jobsBefore = (await cluster.client.listJobs(1000)).length;
  const workspacesBefore = (await cluster.client.listWorkspaces()).length;
  const secrets = [job.job.id, me.workspace.id, me.keyId, spare.id, cluster.apiKey];

  // The test's own list of control routes, with bodies that would work on the API port.
  const routes: Array<[string, string, string?]> = [
    ['GET', '/v1/jobs'],
    ['POST', '/v1/jobs', JSON.stringify({ command: ['/bin/true'] })],
    ['GET', `/v1/jobs/${job.job.id}`],
    ['GET', `/v1/jobs/${job.job.id}/logs`],
    ['POST', `/v1/jobs/${job.job.id}/cancel`, '{}'],
    ['GET', '/v1/pool'],
    ['GET', '/v1/health'],
    ['GET', '/v1/whoami'],
    ['GET', '/v1/audit'],
    ['GET', '/v1/audit/verify'],
    ['GET', '/openapi.json'],
    ['GET', '/v1/network/policy'],
    ['PUT', '/v1/network/policy', JSON.stringify({ allow: [{ cidr: '203.0.113.0/24' }] })],
    ['GET', '/v1/network/denied'],
    ['GET', '/v1/workspaces'],
    ['POST', '/v1/workspaces', JSON.stringify({ name: `leak-${process.pid}` })],
    ['POST', '/v1/api-keys', JSON.stringify({ workspace: me.workspace.name, name: `leak-${process.pid}` })],
    ['DELETE', `/v1/api-keys/${spare.id}`],
    ['HEAD', '/v1/jobs'],
    ['OPTIONS', '/v1/jobs'],
  ];
  // And every other operation the API documents, so that a route added later is covered too.
  const doc = JSON.parse((await call(apiPort, 'GET', '/openapi.json')).text) as { paths: Record<string, Record<string, unknown>> };
  const listed = new Set(routes.map(([m, p]) => `${m} ${p.replace(job.job.id, '{id}').replace(spare.id, '{id}')}`));
  for (const [path, ops] of Object.entries(doc.paths)) {
    if (path.startsWith('/v1/data/') || path === '/.well-known/jwks.json') continue;
    for (const m of Object.keys(ops).map((x) => x.toUpperCase())) {
      if (listed.has(`${m} ${path}`)) continue;
      routes.push([m, path.replace('{id}', job.job.id), m === 'GET' || m === 'DELETE' ? undefined : '{}']);
    }
  }
  const documented = Object.values(doc.paths).flatMap((ops) => Object.keys(ops)).length;
  assert.ok(documented >= 20 && routes.length >= 20, `the API documents ${documented} operations; only ${routes.length} routes to try`);

  // Controls: the admin key is valid and the routes exist on the API port; the data port serves data to that key.
  for (const [m, p] of [['GET', '/v1/jobs'], ['GET', '/v1/pool'], ['GET', '/v1/audit'], ['GET', '/openapi.json']] as const) {
    const r = await call(apiPort, m, p);
    assert.equal(r.status, 200, `control: ${m} ${p} on the API port answered ${r.status}: ${r.text.slice(0, 200)}`);
  }
  const objects = await call(dataPort, 'GET', '/v1/data/objects?prefix=audit/');
  assert.equal(objects.status, 200, `control: listing objects on the data port answered ${objects.status}: ${objects.text.slice(0, 200)}`);
  assert.ok(objects.text.includes('audit/probe.txt'), `control: the data port did not list the object: ${objects.text.slice(0, 200)}`);
  assert.equal((await call(dataPort, 'GET', '/.well-known/jwks.json')).status, 200, 'control: no JWKS on the data port');

  const rows: Array<{ request: string; status: number; code: string }> = [];
  for (const [method, path, body] of routes) {
    const r = await call(dataPort, method, path, body);
    const what = `${method} ${path} on the data port`;
    let parsed: unknown = null;
    if (method !== 'HEAD') {
      parsed = JSON.parse(r.text);
      assert.deepEqual(Object.keys(parsed as object), ['error'], `${what}: not an error body: ${r.text.slice(0, 300)}`);
      const e = (parsed as { error: Record<string, unknown> }).error;
      assert.deepEqual(Object.keys(e).sort(), ['code', 'message'], `${what}: error body is not {code, message}: ${r.text.slice(0, 300)}`);
      assert.equal(e.code, 'not_found', `${what}: answered code ${String(e.code)}`);
      assert.equal(typeof e.message, 'string', `${what}: message is not a string`);
    }
    assert.equal(r.status, 404, `${what} answered ${r.status}: ${r.text.slice(0, 300)}`);
    // The not-found message names the request's own path; anything else of the cluster's is a leak.
    for (const s of secrets.filter((x) => !path.includes(x))) assert.ok(!r.text.includes(s), `${what} leaked ${s === cluster.apiKey ? 'the API key' : s}`);
    rows.push({ request: `${method} ${path}`, status: r.status, code: (parsed as { error?: { code?: string } } | null)?.error?.code ?? '(no body)' });
  }
  console.log('\nControl routes on the data port:');
  console.table(rows);

  // Paths that try to reach a control route around the router: refused with a registered code, nothing leaked.
  const tricks = ['/v1/jobs/', '//v1/jobs', '/v1/./jobs', '/v1/data/../jobs', '/v1/data/objects/../../jobs', '/v1/data/objects/%2e%2e/%2e%2e/jobs', '/V1/JOBS', '/%76%31/jobs', '/v1/jobs?limit=1', '/v1/jobs%00', '/v1/data/objects/../../../openapi.json'];
  for (const path of tricks) {
    const r = await call(dataPort, 'GET', path);
    const what = `GET ${path} on the data port`;
    assert.ok(r.status === 400 || r.status === 404, `${what} answered ${r.status}: ${r.text.slice(0, 300)}`);
    const e = (JSON.parse(r.text) as { error: { code: string; message: string } }).error;
    assert.ok(['not_found', 'invalid_object_key', 'invalid_request'].includes(e.code), `${what}: code ${e.code}`);
    for (const s of secrets) assert.ok(!r.text.includes(s), `${what} leaked ${s === cluster.apiKey ? 'the API key' : s}`);
    assert.ok(!r.text.includes('"openapi"') && !r.text.includes('"jobs"'), `${what} answered with control data: ${r.text.slice(0, 300)}`);
  }

  // Nothing the refused requests asked for happened.
  assert.equal((await cluster.client.listJobs(1000)).length, jobsBefore, 'a job was created through the data port');
  assert.equal((await cluster.client.listWorkspaces()).length, workspacesBefore, 'a workspace was created through the data port');
  assert.deepEqual(await cluster.client.getNetworkPolicy(), policy, 'the network policy was changed through the data port');
  const spareClient = new CleanroomClient({ url: cluster.url, apiKey: spare.key, ca: cluster.ca });
  try {
    assert.equal((await spareClient.whoami()).keyId, spare.id, 'the spare API key was revoked through the data port');
  } finally {
    spareClient.close();
  }
});
