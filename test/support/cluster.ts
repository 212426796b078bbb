/** TestCluster starts a real Cleanroom (control plane + agent) in a temporary data directory, as `up --detach` does. */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CleanroomClient, type Job, type JobRequest, type OutputChunk } from '../../src/sdk/client.js';
import { listCgroups } from '../../src/agent/cells/cgroup.js';
import { UID_CLAIMS_DIR } from '../../src/agent/cells/uid-ranges.js';
import { DATA_SERVICE_NAME, RUNTIMES } from '../../src/shared/wire.js';
import { loadConfig } from '../../src/shared/config.js';
import { dataPaths } from '../../src/shared/paths.js';
import { bootstrapDataDir } from '../../src/supervisor/bootstrap.js';
import { logFile, pidFile } from '../../src/supervisor/processes.js';
import { AGENT_THREAD_POOL_SIZE } from '../../src/agent/thread-pool-size.js';
import { TestPostgres } from './postgres.js';
import { freePort } from './ports.js';

export { freePort };

const run = promisify(execFile);

/** REPO_ROOT is the repository checkout (tests run from dist/test/support). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
/** CLI is the command-line entry point. */
export const CLI = join(REPO_ROOT, 'bin/cleanroom.js');

/** ClusterOptions adjusts the config written for the cluster. */
export interface ClusterOptions {
  /** Extra config merged over the defaults (agent pool sizes, limits…). */
  config?: Record<string, unknown>;
  /** Start the control plane alone, without the local agent (a simulated fleet connects instead): set-up as `up` does it,
   *  then only the control plane's process. `down` stops it as usual. */
  noAgent?: boolean;
  /** The control plane's store: SQLite in the data dir, or a PostgreSQL this cluster starts (test/support/postgres.ts)
   *  and stops. Default: CLEANROOM_TEST_STORE, else sqlite (so any suite can be run on PostgreSQL unchanged). */
  store?: 'sqlite' | 'postgres';
}

/** JobResult is a finished job with its output split by stream. */
export interface JobResult {
  job: Job;
  stdout: string;
  stderr: string;
  chunks: OutputChunk[];
}

/** TestCluster is one running Cleanroom; stop() tears it down and removes its data directory. */
export class TestCluster {
  readonly client: CleanroomClient;

  private constructor(
    readonly dataDir: string,
    readonly env: NodeJS.ProcessEnv,
    readonly url: string,
    readonly apiKey: string,
    readonly ca: string,
    /** The PostgreSQL the control plane stores in, if it is not SQLite. */
    readonly postgres: TestPostgres | null,
  ) {
    this.client = new CleanroomClient({ url, apiKey, ca });
  }

  /** start brings a cluster up on free ports and waits for a warm pool. */
  static async start(opts: ClusterOptions = {}): Promise<TestCluster> {
    const dataDir = mkdtempSync('/var/tmp/cleanroom-test-');
    const [apiPort, agentPort, dataPort] = [await freePort(), await freePort(), await freePort()];
    // A private /16 of its own, so that clusters (and a production agent) on one host never share addresses.
    const pool = unusedPool();
    // Tests poll the API far faster than a client should: the request-rate quota is raised for them (quotas.test sets
    // its own per workspace).
    const base = {
      control: { apiPort, agentPort, dataPort, agentGraceMs: 3000 },
      network: { pool },
      agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }, { runtime: 'runsc', class: 'small', warm: 1 }, { runtime: 'crun', class: 'small', warm: 1 }] },
      quotas: { requestsPerSecond: 100_000, requestBurst: 100_000 },
      // The suites were written when runc was the jobs' default; crun's posture is checked by posture.test.ts.
      limits: { defaultRuntime: 'runc' },
      // Existing suites run on the host's /usr (their tools); image tests name their images or set their own default.
      images: { default: 'host' },
    };
    const storeKind = opts.store ?? (process.env.CLEANROOM_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite');
    let postgres: TestPostgres | null = null;
    if (storeKind === 'postgres') {
      try {
        postgres = await TestPostgres.start();
      } catch (e) {
        rmSync(dataDir, { recursive: true, force: true });
        throw e;
      }
      Object.assign(base, { store: { kind: 'postgres', url: postgres.url() } });
    }
    writeFileSync(join(dataDir, 'config.json'), JSON.stringify(merge(base, opts.config ?? {})));
    const env: NodeJS.ProcessEnv = { ...process.env, CLEANROOM_CONFIG: join(dataDir, 'client.json'), CLEANROOM_DATA_DIR: dataDir };
    delete env.CLEANROOM_URL;
    delete env.CLEANROOM_API_KEY;
    delete env.CLEANROOM_CA;
    delete env.CLEANROOM_STORE_URL; // the store is the one written above
    try {
      if (opts.noAgent) await startControlOnly(dataDir, env);
      else await run(process.execPath, [CLI, 'up', '--detach', '--data-dir', dataDir], { env, timeout: 180_000 });
    } catch (e) {
      const logs = ['control', 'agent'].map((n) => join(dataDir, 'run', `${n}.log`)).filter(existsSync).map((f) => readFileSync(f, 'utf8').slice(-3000));
      await run(process.execPath, [CLI, 'down', '--data-dir', dataDir], { env }).catch(() => {});
      await postgres?.stop();
      rmSync(dataDir, { recursive: true, force: true });
      throw new Error(`cleanroom up failed: ${(e as Error).message}\n${logs.join('\n')}`);
    }
    const client = JSON.parse(readFileSync(join(dataDir, 'client.json'), 'utf8')) as { url: string; apiKey: string; caPath: string };
    return new TestCluster(dataDir, env, client.url, client.apiKey, readFileSync(client.caPath, 'utf8'), postgres);
  }

  /** cli runs the command line against this cluster; never throws on a non-zero exit. */
  async cli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await run(process.execPath, [CLI, ...args], { env: { ...this.env, ...extraEnv }, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
    }
  }

  /** runJob submits a job, follows its output and returns when it has ended. */
  async runJob(req: JobRequest, client: CleanroomClient = this.client): Promise<JobResult> {
    const created = await client.createJob(req);
    const chunks: OutputChunk[] = [];
    const job = await client.followLogs(created.id, (c) => chunks.push(c));
    const text = (s: 'stdout' | 'stderr') => Buffer.concat(chunks.filter((c) => c.stream === s).map((c) => c.data)).toString('utf8');
    return { job, stdout: text('stdout'), stderr: text('stderr'), chunks };
  }

  /** waitWarm waits until every pool target is met. */
  async waitWarm(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = await this.client.pool();
      const entries = Object.values(p.agents).flatMap((a) => Object.values(a));
      if (entries.length > 0 && entries.every((e) => e.warm >= e.target)) return;
      if (Date.now() > deadline) throw new Error(`pool not warm: ${JSON.stringify(p)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** agentPort is the port of the control plane's agent channel. */
  get agentPort(): number {
    return (JSON.parse(readFileSync(join(this.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number } }).control.agentPort;
  }

  /** agentTls is the agent certificate, its key and the CA, as an agent of this cluster dials the channel with them. */
  agentTls(): { ca: string; cert: string; key: string } {
    const pki = (f: string) => readFileSync(join(this.dataDir, 'pki', f), 'utf8');
    return { ca: pki('ca.pem'), cert: pki('agent.pem'), key: pki('agent-key.pem') };
  }

  /** controlPid is the pid of the control plane's process. */
  controlPid(): number {
    return Number(readFileSync(join(this.dataDir, 'run', 'control.pid'), 'utf8'));
  }

  /** agentId is the id under which this cluster's agent names host objects (`cr-<agentId>-…`). */
  get agentId(): string {
    return readFileSync(join(this.dataDir, 'agent', 'agent-id'), 'utf8').trim();
  }

  /** agentPid is the pid of the agent's process (the subreaper wrapping it). */
  agentPid(): number {
    return Number(readFileSync(join(this.dataDir, 'run', 'agent.pid'), 'utf8'));
  }

  /** killAgent SIGKILLs the agent's node process under its subreaper (whose other children are orphaned cell processes) and
   *  waits until it is gone; `up --detach` starts it again. */
  async killAgent(): Promise<void> {
    const wrapper = this.agentPid();
    const children = readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const agents = children.filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((arg) => arg.endsWith('/agent/main.js'));
      } catch {
        return false;
      }
    });
    const agentNode = agents[0];
    if (agents.length !== 1 || agentNode === undefined) throw new Error(`expected one agent process under the subreaper ${wrapper}, found ${JSON.stringify(agents)} among ${JSON.stringify(children)}`);
    process.kill(agentNode, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    while (isAlive(agentNode)) {
      if (Date.now() > deadline) throw new Error(`agent process ${agentNode} still alive 20 s after SIGKILL`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** dataPort is the port of the data service (the listener workloads reach through their gateway). */
  get dataPort(): number {
    return (JSON.parse(readFileSync(join(this.dataDir, 'config.json'), 'utf8')) as { control: { dataPort: number } }).control.dataPort;
  }

  /** tokenCall sends GET `path` to the data service (or another port) with a bearer token from the host, as anyone holding
   *  the token could, and returns the status and error code. */
  async tokenCall(token: string, path: string, port = this.dataPort): Promise<{ status: number; code?: string }> {
    const c = new CleanroomClient({ url: `https://127.0.0.1:${port}`, ca: this.ca });
    try {
      const r = await c.raw('GET', path, undefined, { authorization: `Bearer ${token}` });
      return { status: r.status, code: (r.body as { error?: { code?: string } }).error?.code };
    } finally {
      c.close();
    }
  }

  /** config is the cluster's config file as written. */
  get config(): { control: { host?: string; agentPort: number; dataPort: number }; network: { pool: string } } {
    return JSON.parse(readFileSync(join(this.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number; dataPort: number }; network: { pool: string } };
  }

  /**
   * startAgent starts one more real agent on this host for this cluster's control plane: its own data directory (with
   * the cluster's CA and agent certificate), its own network pool (none of the cluster's, nor in use here) and its own
   * id; it dials agent.controlUrls (this cluster's channel unless opts.config says otherwise). stop() it in an after().
   */
  async startAgent(opts: ClusterOptions = {}): Promise<ExtraAgent> {
    const dataDir = mkdtempSync('/var/tmp/cleanroom-test-');
    // As `up` leaves it: runc resolves the cells' bind-mount sources as their (unmapped) root, which needs the x bit.
    chmodSync(dataDir, 0o711);
    const own = this.config;
    let pool = unusedPool();
    while (pool === own.network.pool) pool = unusedPool();
    const base = {
      control: { host: '127.0.0.1', agentPort: own.control.agentPort, dataPort: own.control.dataPort },
      network: { pool },
      agent: { controlUrls: [`wss://127.0.0.1:${own.control.agentPort}/v1/agent`], pool: [{ runtime: 'runc', class: 'small', warm: 1 }] },
      images: { default: 'host' },
    };
    writeFileSync(join(dataDir, 'config.json'), JSON.stringify(merge(base, opts.config ?? {})));
    mkdirSync(join(dataDir, 'pki'), { mode: 0o700 });
    for (const f of ['ca.pem', 'agent.pem', 'agent-key.pem']) copyFileSync(join(this.dataDir, 'pki', f), join(dataDir, 'pki', f));
    mkdirSync(join(dataDir, 'run'));
    const agent = new ExtraAgent(dataDir, pool);
    await agent.start();
    return agent;
  }

  /** stop runs `cleanroom down`, checks that nothing of the cluster outlived it (processes, nft table, gateway, cgroups,
   *  loop devices, mounts), and removes the data directory. */
  async stop(): Promise<void> {
    this.client.close();
    await run(process.execPath, [CLI, 'down', '--data-dir', this.dataDir], { env: this.env, timeout: 60_000 }).catch(() => {});
    // A control plane started alone has no agent and no agent id.
    const hasAgent = existsSync(join(this.dataDir, 'agent', 'agent-id'));
    const problems = await hostLeaks(this.dataDir, hasAgent ? this.agentId : 'no-agent-');
    // The control plane is down: its database can go.
    await this.postgres?.stop();
    // CLEANROOM_TEST_KEEP=1 keeps the data directory (logs, database) for a post-mortem.
    if (mountsUnder(this.dataDir).length === 0 && !process.env.CLEANROOM_TEST_KEEP) rmSync(this.dataDir, { recursive: true, force: true });
    if (problems.length) throw new Error(`the cluster leaked: ${problems.join('; ')}`);
  }
}

/** ExtraAgent is one more agent process of a cluster (TestCluster.startAgent), with its own data directory and pool. */
export class ExtraAgent {
  private proc: ChildProcess | null = null;

  constructor(
    readonly dataDir: string,
    /** Its network pool (a private /16). */
    readonly pool: string,
  ) {}

  /**
   * start spawns the agent process (again, after a kill) and waits until it is connected to the control plane (or only
   * until it has started, its id made: 'started'); throws with its log if it exits first.
   */
  async start(until: 'connected' | 'started' = 'connected'): Promise<void> {
    const logFile = join(this.dataDir, 'run', 'agent.log');
    const from = existsSync(logFile) ? readFileSync(logFile).length : 0;
    const log = openSync(logFile, 'a');
    const argv = [process.execPath, join(REPO_ROOT, 'dist/src/agent/main.js'), '--data-dir', this.dataDir];
    // Under a subreaper, as `up` starts an agent: the inits that `runc create` leaves are reaped at once.
    const wrapped = hasTini() ? ['tini', '-s', '--', ...argv] : argv;
    const proc = spawn(wrapped[0]!, wrapped.slice(1), { stdio: ['ignore', log, log], env: { ...process.env, CLEANROOM_DATA_DIR: this.dataDir, UV_THREADPOOL_SIZE: String(AGENT_THREAD_POOL_SIZE) } });
    closeSync(log);
    this.proc = proc;
    const deadline = Date.now() + 60_000;
    const ready = () => existsSync(join(this.dataDir, 'agent', 'agent-id')) && (until === 'started' || readFileSync(logFile).subarray(from).includes('connected to control plane'));
    while (!ready()) {
      if (Date.now() > deadline || proc.exitCode !== null) {
        const log = this.log();
        await this.stop().catch(() => {});
        throw new Error(`the extra agent did not start: ${log.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** agentId is its id (it names its host objects `cr<agentId>…`, `cr-<agentId>-…`). */
  get agentId(): string {
    return readFileSync(join(this.dataDir, 'agent', 'agent-id'), 'utf8').trim();
  }

  /** log is its log so far. */
  log(): string {
    return readFileSync(join(this.dataDir, 'run', 'agent.log'), 'utf8');
  }

  /** agentPid is the agent's node process (under its subreaper, if any), or null when it is gone. */
  agentPid(): number | null {
    const top = this.proc?.pid;
    if (top === undefined || !isAlive(top)) return null;
    // The node process itself (argv[0] is node, not the subreaper that names main.js among its arguments).
    const isAgent = (pid: number): boolean => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return argv[0] === process.execPath && argv[1]?.endsWith('/agent/main.js') === true;
      } catch {
        return false;
      }
    };
    if (isAgent(top)) return top;
    const children = readFileSync(`/proc/${top}/task/${top}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return children.find(isAgent) ?? null;
  }

  /** kill SIGKILLs the agent's node process (its cells stay behind, as after a crash) and waits until it is gone. */
  async kill(): Promise<void> {
    const pid = this.agentPid();
    if (pid === null) throw new Error('the extra agent is not running');
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    while (isAlive(pid)) {
      if (Date.now() > deadline) throw new Error(`agent process ${pid} still alive 20 s after SIGKILL`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** reconcile runs the agent's start-up clean-up alone (`main.js --reconcile`, as `cleanroom down` does); returns its report. */
  async reconcile(): Promise<{ containers: string[]; killed: number[]; cgroups: string[]; wiped: number; netns: number; links: number; leftovers: unknown[] }> {
    const r = await run(process.execPath, [join(REPO_ROOT, 'dist/src/agent/main.js'), '--data-dir', this.dataDir, '--reconcile'], { timeout: 120_000 });
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as never;
  }

  /** stop ends the agent (SIGTERM: it wipes its cells; then a reconcile for what a kill left), checks the host for its
   *  leftovers and removes its data directory. */
  async stop(): Promise<void> {
    const top = this.proc?.pid;
    if (top !== undefined && isAlive(top)) {
      const pid = this.agentPid();
      if (pid !== null) process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 40_000;
      while (isAlive(top) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (isAlive(top)) process.kill(top, 'SIGKILL');
    }
    const orphan = this.agentPid();
    if (orphan !== null) throw new Error(`the extra agent ${orphan} outlived its stop; its data directory ${this.dataDir} is kept`);
    if (existsSync(join(this.dataDir, 'agent', 'agent-id'))) await this.reconcile().catch(() => undefined);
    const problems = existsSync(join(this.dataDir, 'agent', 'agent-id')) ? await hostLeaks(this.dataDir, this.agentId) : [];
    if (mountsUnder(this.dataDir).length === 0 && !process.env.CLEANROOM_TEST_KEEP) rmSync(this.dataDir, { recursive: true, force: true });
    if (problems.length) throw new Error(`the extra agent leaked: ${problems.join('; ')}`);
  }
}

function hasTini(): boolean {
  try {
    execFileSync('tini', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * hostLeaks lists what of one agent (its data directory, its id) outlived it on the host: processes, its nft table and
 * gateway, cgroups, netns, interfaces, containers, files in its volumes directory other than tombstones, loop devices and
 * mounts (the last two are also undone here).
 */
export async function hostLeaks(dataDir: string, agentId: string): Promise<string[]> {
  const problems: string[] = [];
  const alive = await processesMentioning(dataDir, 30_000);
  if (alive.length) problems.push(`processes still alive after down: ${alive.join(', ')}`);
  // The agent's own network objects (nft table, gateway interface) go with it at a clean stop.
  const prefix = `cr${agentId}`;
  if (existsSync(`/sys/class/net/${prefix}gw`)) problems.push(`gateway interface ${prefix}gw left after down`);
  const tables = await run('nft', ['list', 'tables']).then((r) => r.stdout, () => '');
  if (tables.includes(`inet ${prefix}\n`) || tables.trimEnd().endsWith(`inet ${prefix}`)) problems.push(`nft table inet ${prefix} left after down`);
  for (const name of listCgroups(`cr-${agentId}-`)) problems.push(`cgroup ${name} left after down`);
  // Cells' netns (`<prefix>-<cell>`) and the agent's network hub (`<prefix>hub`, with the uplink's peer in it).
  for (const ns of safeList('/run/netns').filter((n) => n.startsWith(`${prefix}-`) || n === `${prefix}hub`)) problems.push(`netns ${ns} left after down`);
  const claims = safeList(UID_CLAIMS_DIR).filter((n) => {
    try {
      return readlinkSync(join(UID_CLAIMS_DIR, n)) === agentId;
    } catch {
      return false;
    }
  });
  if (claims.length) problems.push(`${claims.length} uid range claim(s) in ${UID_CLAIMS_DIR} left after down`);
  for (const link of safeList('/sys/class/net').filter((n) => n.startsWith(prefix))) problems.push(`interface ${link} left after down`);
  for (const rt of RUNTIMES) {
    const stateDir = join(dataDir, 'agent', rt);
    for (const c of safeList(stateDir).filter((n) => n.startsWith('cr-'))) problems.push(`${rt} container ${c} left after down`);
  }
  for (const dev of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    let backing = '';
    try {
      backing = readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim();
    } catch {
      continue;
    }
    if (!backing.startsWith(`${dataDir}/`)) continue;
    problems.push(`/dev/${dev} still bound to ${backing} after down`);
    await run('losetup', ['-d', `/dev/${dev}`]).catch(() => {});
  }
  // A wiped volume leaves only its marker as a tombstone: a backing file, mount point or spare of either (volume.ts)
  // still in the volumes directory outlived the agent's stop.
  const volumesDir = join(dataDir, 'agent', 'volumes');
  for (const name of safeList(volumesDir).filter((n) => !/^v-[0-9a-f]{16}\.cell$/.test(n))) problems.push(`${join(volumesDir, name)} left after down`);
  // Never remove a tree with something mounted in it: the removal would go into the mount.
  for (const [dev, mnt] of mountsUnder(dataDir)) {
    problems.push(`${dev} still mounted at ${mnt} after down`);
    await run('umount', ['-l', mnt]).catch(() => {});
    if (dev.startsWith('/dev/loop')) await run('losetup', ['-d', dev]).catch(() => {});
  }
  return problems;
}

/**
 * startControlOnly does what `cleanroom up --detach` does, without the agent: the data directory's set-up (account, PKI,
 * the platform-admin key written to the client config), then the control plane's process alone, detached, with its pid
 * file (so `cleanroom down` stops it); resolves when the API answers.
 */
async function startControlOnly(dataDir: string, env: NodeJS.ProcessEnv): Promise<void> {
  const paths = dataPaths(dataDir);
  const config = loadConfig(paths.config);
  const { adminKey, account } = await bootstrapDataDir(paths, config, ['127.0.0.1', 'localhost', config.control.host, DATA_SERVICE_NAME]);
  if (!adminKey) throw new Error(`${dataDir} was set up before: no platform-admin key to hand out`);
  const url = `https://127.0.0.1:${config.control.apiPort}`;
  writeFileSync(env.CLEANROOM_CONFIG!, JSON.stringify({ url, apiKey: adminKey, caPath: paths.pki.caCert }, null, 2) + '\n', { mode: 0o600 });
  const log = openSync(logFile(paths, 'control'), 'a', 0o600);
  // CLEANROOM_CONTROL_NODE_ARGS adds node flags to the control plane (a bench profiles it with --cpu-prof).
  const nodeArgs = (env.CLEANROOM_CONTROL_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, join(REPO_ROOT, 'dist/src/control/main.js'), '--data-dir', dataDir], { uid: account.uid, gid: account.gid, detached: true, stdio: ['ignore', log, log], env });
  closeSync(log);
  writeFileSync(pidFile(paths, 'control'), String(child.pid));
  child.unref();
  const client = new CleanroomClient({ url, apiKey: adminKey, ca: readFileSync(paths.pki.caCert, 'utf8') });
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the control plane exited (${child.exitCode}) during start-up`);
      if (await client.health().then(() => true, () => false)) return;
      if (Date.now() > deadline) throw new Error('the control plane did not answer within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    client.close();
  }
}

/** isAlive reports whether a process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** mountsUnder lists [device, mount point] of mounts inside dir. */
export function mountsUnder(dir: string): Array<[string, string]> {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[1]?.startsWith(`${dir}/`))
    .map((f) => [f[0]!, f[1]!]);
}

/** processesMentioning waits up to timeoutMs for every process whose command line mentions dir to end; returns those left. */
export async function processesMentioning(dir: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
      .filter((e) => {
        try {
          return readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(dir) && !/\) Z /.test(readFileSync(`/proc/${e}/stat`, 'utf8'));
        } catch {
          return false;
        }
      })
      .map(Number);
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** unusedPool picks one of 10.200-249.0.0/16 in which no interface of this host has an address (other clusters run here too). */
export function unusedPool(): string {
  const used = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((a) => a?.address ?? '')
      .filter((a) => a.startsWith('10.'))
      .map((a) => Number(a.split('.')[1])),
  );
  const free = Array.from({ length: 50 }, (_, i) => 200 + i).filter((n) => !used.has(n));
  if (free.length === 0) throw new Error('every pool 10.200-249.0.0/16 has addresses on this host: too many clusters running');
  return `10.${free[Math.floor(Math.random() * free.length)]}.0.0/16`;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = prev && typeof prev === 'object' && !Array.isArray(prev) && v && typeof v === 'object' && !Array.isArray(v) ? merge(prev as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}
