/**
 * TestReplicas runs two control-plane replicas on one PostgreSQL: replica B is a TestCluster (its control plane, a real
 * agent, PKI, KEK, config, all made by `cleanroom up`), replica A a second control-plane process with its own data dir
 * and ports that shares B's PKI (CA and server certificate), KEK and store URL. The agent is on B's channel only; its
 * controlUrls list B's channel first and A's second, so it fails over to A when B dies.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { CleanroomClient } from '../../src/sdk/client.js';
import { freePort, isAlive, REPO_ROOT, TestCluster, type ClusterOptions } from './cluster.js';

/** Replica A's ports. */
interface Ports {
  apiPort: number;
  agentPort: number;
  dataPort: number;
}

/** TestReplicas is the pair; stop() ends replica A, then the cluster (B, its agent and the PostgreSQL). */
export class TestReplicas {
  /** clientA / clientB call one replica each; clientBoth lists B then A (it fails over). */
  readonly clientA: CleanroomClient;
  readonly clientB: CleanroomClient;
  readonly clientBoth: CleanroomClient;

  private constructor(
    readonly b: TestCluster,
    readonly aDir: string,
    readonly aPorts: Ports,
    private a: ChildProcess | null,
  ) {
    const { apiKey, ca } = b;
    this.clientA = new CleanroomClient({ url: this.urlA, apiKey, ca });
    this.clientB = new CleanroomClient({ url: b.url, apiKey, ca });
    this.clientBoth = new CleanroomClient({ url: `${b.url},${this.urlA}`, apiKey, ca });
  }

  /** urlA is replica A's API. */
  get urlA(): string {
    return `https://127.0.0.1:${this.aPorts.apiPort}`;
  }

  /** start brings up B (with its agent) on a fresh PostgreSQL, then A beside it, and waits until A answers. */
  static async start(opts: ClusterOptions = {}): Promise<TestReplicas> {
    const aPorts: Ports = { apiPort: await freePort(), agentPort: await freePort(), dataPort: await freePort() };
    const bPorts: Ports = { apiPort: await freePort(), agentPort: await freePort(), dataPort: await freePort() };
    const channel = (p: Ports) => `wss://127.0.0.1:${p.agentPort}/v1/agent`;
    const b = await TestCluster.start({
      ...opts,
      store: 'postgres',
      config: {
        ...(opts.config ?? {}),
        control: { ...bPorts, replicaId: 'rep_b', agentGraceMs: 15_000 },
        agent: { ...((opts.config?.agent as Record<string, unknown> | undefined) ?? {}), controlUrls: [channel(bPorts), channel(aPorts)] },
      },
    });
    const aDir = mkdtempSync('/var/tmp/cleanroom-test-replica-a-');
    let a: ChildProcess | null = null;
    try {
      mkdirSync(join(aDir, 'pki'), { mode: 0o700 });
      for (const f of ['ca.pem', 'server.pem', 'server-key.pem']) copyFileSync(join(b.dataDir, 'pki', f), join(aDir, 'pki', f));
      const bConfig = JSON.parse(readFileSync(join(b.dataDir, 'config.json'), 'utf8')) as Record<string, Record<string, unknown>>;
      const aConfig = {
        ...bConfig,
        control: { ...bConfig.control, ...aPorts, replicaId: 'rep_a' },
        data: { ...(bConfig.data ?? {}), kekFile: join(b.dataDir, 'control', 'kek') },
      };
      writeFileSync(join(aDir, 'config.json'), JSON.stringify(aConfig));
      const log = openSync(join(aDir, 'control.log'), 'a');
      // CLEANROOM_CONTROL_NODE_ARGS adds node flags to replica A too (a bench profiles both replicas with --cpu-prof).
      const nodeArgs = (process.env.CLEANROOM_CONTROL_NODE_ARGS ?? '').split(' ').filter(Boolean);
      a = spawn(process.execPath, [...nodeArgs, join(REPO_ROOT, 'dist/src/control/main.js'), '--data-dir', aDir], { stdio: ['ignore', log, log], env: { ...process.env, CLEANROOM_CONFIG: join(aDir, 'client.json') } });
      closeSync(log);
      const r = new TestReplicas(b, aDir, aPorts, a);
      await r.waitHealthy(r.clientA, 60_000);
      return r;
    } catch (e) {
      if (a?.pid) a.kill('SIGKILL');
      const tail = (() => {
        try {
          return readFileSync(join(aDir, 'control.log'), 'utf8').slice(-3000);
        } catch {
          return '';
        }
      })();
      rmSync(aDir, { recursive: true, force: true });
      await b.stop().catch(() => {});
      throw new Error(`replica A did not start: ${(e as Error).message}\n${tail}`);
    }
  }

  /** waitHealthy polls a replica's health until it answers. */
  async waitHealthy(c: CleanroomClient, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await c.health();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** controlPidB is the pid of replica B's control-plane process. */
  controlPidB(): number {
    return Number(readFileSync(join(this.b.dataDir, 'run', 'control.pid'), 'utf8'));
  }

  /** killB SIGKILLs replica B's control plane and waits until it is gone (its agent stays up and fails over). */
  async killB(): Promise<void> {
    const pid = this.controlPidB();
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    while (isAlive(pid)) {
      if (Date.now() > deadline) throw new Error(`replica B (${pid}) still alive 20 s after SIGKILL`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** logA is replica A's log (for assertions and post-mortems). */
  logA(): string {
    return readFileSync(join(this.aDir, 'control.log'), 'utf8');
  }

  /** stop ends replica A (SIGTERM, then SIGKILL), then the cluster; removes A's data dir. */
  async stop(): Promise<void> {
    for (const c of [this.clientA, this.clientB, this.clientBoth]) c.close();
    const a = this.a;
    this.a = null;
    if (a?.pid && isAlive(a.pid)) {
      a.kill('SIGTERM');
      const deadline = Date.now() + 10_000;
      while (isAlive(a.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (isAlive(a.pid)) a.kill('SIGKILL');
    }
    try {
      await this.b.stop();
    } finally {
      if (!process.env.CLEANROOM_TEST_KEEP) rmSync(this.aDir, { recursive: true, force: true });
    }
  }
}
