// A job's token dies with its job whatever the ending (succeeded, failed, timeout, cancelled, oom, agent crash), and it
// never shows on the host: not in any process's argv or environment, the control plane's database, its logs, or any other
// file of the data directory.
// Jobs hand their token out as hex on stdout: the output is stored in the database, so printing it verbatim would plant
// the very leak the host scan looks for.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import type { Job, JobRequest } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';

const TTL_S = 20;
const REFRESH_AT = 0.25; // a running job gets its second token after 5 s
const OBJECT = '/v1/data/objects/in/x';
let cluster: TestCluster;
/** Every token any job of this file saw, for the host scan at the end. */
const seen = new Set<string>();

before(async () => {
  cluster = await TestCluster.start({ config: { tokens: { ttlSeconds: TTL_S, refreshAt: REFRESH_AT } } });
  await cluster.client.putObject('in/x', 'x');
});
after(async () => {
  await cluster?.stop();
});

/** SHOW prints the token file as one line of hex. */
const SHOW = 'show() { od -An -v -tx1 "$CLEANROOM_TOKEN_FILE" | tr -d " \\n"; echo; }; show';
/** SHOW_REFRESHED then waits until the token file changes and prints the new token too (no token in any argv: `[` is a builtin). */
const SHOW_REFRESHED = `${SHOW}; was=$(md5sum < "$CLEANROOM_TOKEN_FILE"); while [ "$(md5sum < "$CLEANROOM_TOKEN_FILE")" = "$was" ]; do sleep 0.2; done; show`;

type Runtime = 'runc' | 'runsc';

/** Watched is a job followed from its start: the tokens it printed (as they come) and its end. */
interface Watched {
  id: string;
  tokens(n: number): Promise<string[]>;
  ended: Promise<Job>;
  output(): string;
}

/** watch starts a job that may read in/ and follows its output, decoding each hex line it prints into a token. */
async function watch(runtime: Runtime, script: string, extra: Partial<JobRequest> = {}): Promise<Watched> {
  const created = await cluster.client.createJob({ command: ['sh', '-c', script], runtime, data: [{ prefix: 'in/', access: 'read' }], timeoutSeconds: 120, ...extra });
  let stdout = '';
  let stderr = '';
  const tokens: string[] = [];
  const junk: string[] = [];
  const waiters: Array<() => void> = [];
  const ended = cluster.client.followLogs(created.id, (c) => {
    if (c.stream === 'stderr') stderr += c.data.toString('utf8');
    if (c.stream !== 'stdout') return;
    stdout += c.data.toString('utf8');
    const lines = stdout.split('\n').slice(0, -1);
    for (const line of lines.slice(tokens.length + junk.length)) {
      if (!/^([0-9a-f]{2})+$/.test(line)) {
        junk.push(line);
        continue;
      }
      const t = Buffer.from(line, 'hex').toString('utf8');
      tokens.push(t);
      seen.add(t);
    }
    for (const w of waiters.splice(0)) w();
  });
  const output = () => `stdout: ${stdout}\nstderr: ${stderr}`;
  const tokensOf = async (n: number): Promise<string[]> => {
    while (tokens.length < n) {
      if (junk.length) throw new Error(`job ${created.id} printed something other than a token; ${output()}`);
      const more = new Promise<void>((r) => waiters.push(r));
      const end = await Promise.race([more.then(() => null), ended]);
      if (end && tokens.length < n) throw new Error(`job ${created.id} ended as ${end.status} after printing ${tokens.length} of ${n} tokens; ${output()}`);
    }
    return tokens.slice(0, n);
  };
  return { id: created.id, tokens: tokensOf, ended, output };
}

/** assertRevoked checks that the token is the job's and that the data service refuses it as revoked. */
async function assertRevoked(job: Job, token: string): Promise<void> {
  assert.equal(decodeJwt(token).sub, job.id, 'the job printed a token that is not its own');
  assert.deepEqual(await cluster.tokenCall(token, OBJECT), { status: 401, code: 'token_revoked' }, `the token of a job that ended as ${job.status} is not refused as revoked`);
}

/** assertValid checks that a running job's token is accepted: what the revocation check sees is the job's end. */
async function assertValid(token: string): Promise<void> {
  assert.deepEqual(await cluster.tokenCall(token, OBJECT), { status: 200, code: undefined }, 'the token of a running job is not accepted');
}

// How each ending is brought about, what the job must end as, and on which runtimes it is checked.
const ENDINGS: Array<{ name: string; runtimes: Runtime[]; script: string; extra?: Partial<JobRequest>; status: Job['status']; exitCode?: number; during?: (w: Watched, token: string) => Promise<void> }> = [
  { name: 'succeeded', runtimes: ['runc', 'runsc'], script: SHOW, status: 'succeeded', exitCode: 0 },
  { name: 'failed (exit 3)', runtimes: ['runc', 'runsc'], script: `${SHOW}; exit 3`, status: 'failed', exitCode: 3 },
  { name: 'timeout', runtimes: ['runc'], script: `${SHOW}; exec sleep 60`, extra: { timeoutSeconds: 8 }, status: 'timeout' },
  {
    name: 'cancel',
    runtimes: ['runc', 'runsc'],
    script: `${SHOW}; exec sleep 60`,
    status: 'cancelled',
    during: async (w, token) => {
      await assertValid(token);
      await cluster.client.cancelJob(w.id);
    },
  },
  { name: 'oom', runtimes: ['runc', 'runsc'], script: `${SHOW}; exec python3 -c 'x = bytearray(400 * 1024 * 1024)'`, extra: { memoryMiB: 64 }, status: 'oom' },
];

for (const e of ENDINGS) {
  for (const runtime of e.runtimes) {
    test(`${runtime}: the token is revoked when its job ends: ${e.name}`, async () => {
      const w = await watch(runtime, e.script, e.extra);
      const [token] = await w.tokens(1);
      if (e.during) await e.during(w, token!);
      const job = await w.ended;
      assert.equal(job.status, e.status, `${w.output()}\nmessage: ${job.message}`);
      if (e.exitCode !== undefined) assert.equal(job.exitCode, e.exitCode);
      await assertRevoked(job, token!);
    });
  }
}

test('runc and runsc: the tokens are revoked when their jobs end because the agent was killed', async () => {
  const watched = await Promise.all((['runc', 'runsc'] as const).map((rt) => watch(rt, `${SHOW}; exec sleep 120`)));
  const tokens = await Promise.all(watched.map(async (w) => (await w.tokens(1))[0]!));
  for (const t of tokens) await assertValid(t);
  await cluster.killAgent();
  const up = await cluster.cli(['up', '--detach', '--data-dir', cluster.dataDir]);
  assert.equal(up.code, 0, up.stderr);
  const jobs = await Promise.all(watched.map((w) => w.ended));
  for (const [i, job] of jobs.entries()) {
    assert.equal(job.status, 'error', `${watched[i]!.output()}\nmessage: ${job.message}`);
    assert.match(job.message ?? '', /agent/);
    await assertRevoked(job, tokens[i]!);
  }
  await cluster.waitWarm();
});

test('no token is on the host: not in any process argv or environment, the database, the logs or any file of the data directory', async () => {
  // While a job of each runtime runs, after it got a refreshed token through its control channel…
  const running = await Promise.all((['runc', 'runsc'] as const).map((rt) => watch(rt, `${SHOW_REFRESHED}; exec sleep 60`)));
  const live = (await Promise.all(running.map((w) => w.tokens(2)))).flat();
  assert.equal(new Set(live).size, 4, 'each job got a second, different token');
  const runcJob = running[0]!.id;
  const during = await scanHost(live);
  assert.deepEqual(during.found, [], 'a live token is on the host');
  // The scan reads what it claims to: the runc workload's own environment (a host process), and the latest writes to the
  // database (the running jobs' records).
  assert.ok(during.environsOfJobs.includes(runcJob), `the scan did not see the environment of the runc workload of ${runcJob}`);
  assert.deepEqual(during.jobsInDatabase, live.map((t) => decodeJwt(t).sub), 'the scan did not find the running jobs in the database files');
  for (const w of running) await cluster.client.cancelJob(w.id);
  for (const w of running) assert.equal((await w.ended).status, 'cancelled');

  // …and after every job of this file has ended.
  const expected = ENDINGS.reduce((n, e) => n + e.runtimes.length, 0) + 2 + live.length;
  assert.equal(seen.size, expected, 'the scan covers the tokens of every test of this file: run the whole file');
  const afterwards = await scanHost([...seen]);
  assert.deepEqual(afterwards.found, [], 'a token is on the host');
});

/** HostScan is what scanHost found, and proof of what it read. */
interface HostScan {
  /** found names each place a token or its signature was seen. */
  found: string[];
  /** environsOfJobs lists the CLEANROOM_JOB_ID of every host process environment that has one (workloads of runc cells). */
  environsOfJobs: string[];
  /** jobsInDatabase lists the jobs of the tokens whose ids are in the database files (all of them: it holds their records). */
  jobsInDatabase: string[];
}

/** filesUnder lists the regular files below `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

/** scanHost looks for each token, and its signature alone, in every host process's cmdline and environ, in the raw bytes of
 *  the control plane's database files (SQLite's main, WAL and shared memory; or PostgreSQL's data directory), in every log, and in every other regular file of the data
 *  directory (without crossing into mounts; the cells' volume images are encrypted, and skipped). */
async function scanHost(tokens: string[]): Promise<HostScan> {
  // The signature is also looked for in three overlapping thirds: a row stored across two database pages splits a string at
  // one point, which leaves at least one third whole.
  const needles = tokens.flatMap((t) => {
    const { sub, jti } = decodeJwt(t);
    const sig = t.split('.')[2]!;
    assert.equal(sig.length, 86, 'an Ed25519 signature is 86 base64url characters');
    return [
      { what: `token ${jti} of ${sub}`, bytes: Buffer.from(t) },
      { what: `signature of token ${jti} of ${sub}`, bytes: Buffer.from(sig) },
      ...[0, 27, 54].map((at) => ({ what: `signature (characters ${at}-${at + 31}) of token ${jti} of ${sub}`, bytes: Buffer.from(sig.slice(at, at + 32)) })),
    ];
  });
  const found: string[] = [];
  const look = (where: string, data: Buffer): void => {
    for (const n of needles) if (data.includes(n.bytes)) found.push(`${n.what} in ${where}`);
  };

  // Every process is read. One that refuses (EACCES: kernel threads, this machine's own init, a process in the middle of an
  // exec or a change of user) is passed over only if it is none of the cluster's: its control plane, its agent and all
  // under the agent's subreaper (cells, runsc sandboxes, helpers). The cluster's own are retried, and fail the scan if
  // they stay unreadable.
  const environsOfJobs: string[] = [];
  const ours = clusterProcesses();
  assert.ok(ours.size >= 3, `found only the processes ${[...ours].join(', ')} of the cluster`);
  let scanned = 0;
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number)) {
    for (const f of ['cmdline', 'environ']) {
      const data = await readProc(pid, f, ours.has(pid));
      if (data === 'gone' || data === 'not ours') continue;
      if (data === 'unreadable') {
        found.push(`/proc/${pid}/${f} of the cluster could not be read`);
        continue;
      }
      scanned++;
      look(`/proc/${pid}/${f} (${comm(pid)})`, data);
      const job = f === 'environ' ? /(?:^|\0)CLEANROOM_JOB_ID=(job_[0-9a-f]+)/.exec(data.toString('latin1'))?.[1] : undefined;
      if (job) environsOfJobs.push(job);
    }
  }
  assert.ok(scanned >= 2 * ours.size, `scanned only ${scanned} process files`);

  const control = join(cluster.dataDir, 'control');
  let dbFiles: string[];
  if (cluster.postgres) {
    // On PostgreSQL (CLEANROOM_TEST_STORE=postgres): every file of its data directory (tables, indexes, WAL), once a
    // checkpoint has written every page out.
    await cluster.postgres.query('cleanroom', 'CHECKPOINT');
    dbFiles = filesUnder(join(cluster.postgres.dir, 'data'));
    assert.ok(dbFiles.some((f) => f.includes('/pg_wal/')), `no WAL under ${cluster.postgres.dir}/data`);
  } else {
    dbFiles = readdirSync(control).filter((f) => /\.db(-wal|-shm)?$/.test(f)).map((f) => join(control, f));
    assert.ok(dbFiles.includes(join(control, 'cleanroom.db')), `no database in ${control}: ${dbFiles.join(', ')}`);
  }
  const db = Buffer.concat(dbFiles.map((f) => readFileSync(f)));
  const scannedFiles = new Set(dbFiles);
  look(`the database (${dbFiles.length} files: ${dbFiles.slice(0, 3).join(', ')}${dbFiles.length > 3 ? ', …' : ''})`, db);
  const jobsInDatabase = tokens.map((t) => decodeJwt(t).sub!).filter((job) => db.includes(job));

  const runDir = join(cluster.dataDir, 'run');
  const logs = readdirSync(runDir).filter((f) => f.endsWith('.log'));
  assert.deepEqual(['agent.log', 'control.log'].filter((l) => !logs.includes(l)), [], `logs missing in ${runDir}`);
  for (const f of logs) {
    look(`run/${f}`, readFileSync(join(runDir, f)));
    scannedFiles.add(join(runDir, f));
  }

  const rootDev = lstatSync(cluster.dataDir).dev;
  const walk = (dir: string): void => {
    for (const name of readIfPresent(dir, (d) => readdirSync(d)) ?? []) {
      const path = join(dir, name);
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (!st || st.dev !== rootDev) continue; // removed meanwhile, or a mount (a cell's volume)
      if (st.isDirectory()) walk(path);
      if (!st.isFile() || name.endsWith('.img') || scannedFiles.has(path)) continue;
      const data = readIfPresent(path, (p) => readFileSync(p));
      if (data) look(path.slice(cluster.dataDir.length + 1), data);
    }
  };
  walk(cluster.dataDir);
  return { found, environsOfJobs, jobsInDatabase };
}

/** readProc reads /proc/<pid>/<file>: 'gone' if the process exited meanwhile, 'not ours' if another process refuses,
 *  'unreadable' if one of the cluster's still refuses after 2 s. */
async function readProc(pid: number, file: string, ofCluster: boolean): Promise<Buffer | 'gone' | 'not ours' | 'unreadable'> {
  const deadline = Date.now() + 2000;
  for (;;) {
    try {
      return readFileSync(`/proc/${pid}/${file}`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') return 'gone';
      if (code !== 'EACCES') throw e;
      if (!ofCluster) return 'not ours';
      if (Date.now() > deadline) return 'unreadable';
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** clusterProcesses returns the pids of the control plane, the agent's subreaper and every descendant of either. */
function clusterProcesses(): Set<number> {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    const stat = readIfPresent(`/proc/${e}/stat`, (p) => readFileSync(p, 'utf8'));
    const ppid = Number(stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (!stat || !(ppid > 0)) continue;
    children.set(ppid, [...(children.get(ppid) ?? []), Number(e)]);
  }
  const roots = ['control', 'agent'].map((n) => Number(readFileSync(join(cluster.dataDir, 'run', `${n}.pid`), 'utf8')));
  const out = new Set<number>();
  const add = (pid: number): void => {
    if (out.has(pid)) return;
    out.add(pid);
    for (const c of children.get(pid) ?? []) add(c);
  };
  for (const r of roots) add(r);
  return out;
}

function comm(pid: number): string {
  return readIfPresent(`/proc/${pid}/comm`, (p) => readFileSync(p, 'utf8'))?.trim() ?? '?';
}

/** readIfPresent returns read(path), or null if the path (or its process) went away meanwhile; any other error fails the scan. */
function readIfPresent<T>(path: string, read: (p: string) => T): T | null {
  try {
    return read(path);
  } catch (e) {
    if (['ENOENT', 'ESRCH'].includes((e as NodeJS.ErrnoException).code ?? '')) return null;
    throw e;
  }
}
