// Proves a warm cell holds no tenant data: after jobs ran, no cell (bundle, runtime state, processes, work/tmp) carries their identity, key, ids or env.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TestCluster } from '../support/cluster.js';
import { RUNTIMES } from '../../src/shared/wire.js';


let cluster: TestCluster;

before(async () => {
  cluster = await TestCluster.start();
  await cluster.waitWarm();
});

after(async () => {
  await cluster?.stop();
});

/** waitIdle waits until every pool target is met, nothing is busy or preparing, and the used cells are gone. */
async function waitIdle(goneCells: string[], cellsDir: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const p = await cluster.client.pool();
    const entries = Object.values(p.agents).flatMap((a) => Object.values(a));
    const idle = entries.length > 0 && entries.every((e) => e.warm >= e.target && e.busy === 0 && e.preparing === 0);
    if (idle && goneCells.every((c) => !existsSync(join(cellsDir, c)))) return;
    if (Date.now() > deadline) throw new Error(`cluster not idle and warm: ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** regularFiles lists the regular files under `dir` (FIFOs, sockets and links are not followed). */
function regularFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...regularFiles(p));
    else if (e.isFile() && lstatSync(p).size < 16 << 20) out.push(p);
  }
  return out;
}

/** leaksIn returns which tenant strings occur in `text`, by label. */
function leaksIn(text: string, tenant: Record<string, string>): string[] {
  return Object.entries(tenant).filter(([, v]) => text.includes(v)).map(([k, v]) => `${k} (${v})`);
}

function environOf(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
}

test('a warm cell holds no tenant data: config, runtime state, init environment, processes, work/ and tmp/', async () => {
  const me = await cluster.client.whoami();
  const marker = `tenant-marker-${randomBytes(8).toString('hex')}`;
  const usedCells: string[] = [];
  const tenant: Record<string, string> = {
    'workspace id': me.workspace.id,
    'API key prefix': 'crk_',
    'API key': cluster.apiKey,
    'job id prefix': 'job_',
    'env marker': marker,
  };
  // Jobs that leave the marker everywhere they can: env, /work, /tmp, /dev/shm, a background process.
  const script = 'echo "$CR_MARKER" > /work/m; echo "$CR_MARKER" > /tmp/m; echo "$CR_MARKER" > /dev/shm/m; (sleep 30 &) ; echo ok';
  for (const runtime of RUNTIMES) {
    const r = await cluster.runJob({ runtime, command: ['/bin/sh', '-c', script], env: { CR_MARKER: marker } });
    assert.equal(r.job.status, 'succeeded', `${runtime} seeding job ended ${r.job.status}: ${r.stderr}`);
    assert.match(r.job.cellId ?? '', /^[0-9a-f]{10}$/, `${runtime} job has no cellId`);
    usedCells.push(r.job.cellId!);
    tenant[`job id ${r.job.id}`] = r.job.id;
  }

  const agentDir = join(cluster.dataDir, 'agent');
  const cellsDir = join(agentDir, 'cells');
  await waitIdle(usedCells, cellsDir);
  const agentId = cluster.agentId;
  const cells = readdirSync(cellsDir);
  assert.ok(cells.length >= RUNTIMES.length, `expected warm cells under ${cellsDir}, found ${cells.join(', ')}`);
  for (const used of usedCells) assert.ok(!cells.includes(used), `cell ${used} was returned to the pool after its job`);

  const observed: Array<Record<string, unknown>> = [];
  for (const id of cells) {
    const dir = join(cellsDir, id);
    const configText = readFileSync(join(dir, 'config.json'), 'utf8');
    assert.deepEqual(leaksIn(configText, tenant), [], `warm cell ${id}: config.json contains tenant data`);
    const config = JSON.parse(configText) as { process: { env: string[] }; mounts: Array<{ destination: string; source: string }> };
    for (const f of regularFiles(dir)) assert.deepEqual(leaksIn(readFileSync(f, 'latin1'), tenant), [], `warm cell ${id}: ${f} contains tenant data`);
    // The host directories behind the cell's writable paths (wherever the agent keeps them) must be empty.
    for (const dest of ['/work', '/tmp']) {
      const source = config.mounts.find((m) => m.destination === dest)?.source;
      assert.equal(typeof source, 'string', `warm cell ${id}: no mount at ${dest}`);
      assert.ok(existsSync(source!), `warm cell ${id}: no host directory behind ${dest} (${source})`);
      assert.deepEqual(readdirSync(source!), [], `warm cell ${id}: ${dest} (${source}) is not empty`);
    }

    const pid = Number(readFileSync(join(dir, 'init.pid'), 'utf8').trim());
    assert.ok(pid > 0, `warm cell ${id}: no init pid`);
    const env = environOf(pid);
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    assert.deepEqual(leaksIn(env.join('\n'), tenant), [], `warm cell ${id}: init (pid ${pid}) environment holds tenant data`);
    assert.deepEqual(leaksIn(cmd.join(' '), tenant), [], `warm cell ${id}: init (pid ${pid}) command line holds tenant data`);
    // The spec gives init no environment; runc adds HOME from the cell's synthetic /etc/passwd for init's user (the
    // cell's root, /root). For runsc, init.pid is the sandbox process, whose environment is empty.
    const allowed = new Set([...config.process.env, 'HOME=/root']);
    const extra = env.filter((e) => !allowed.has(e));
    assert.deepEqual(extra, [], `warm cell ${id}: init (pid ${pid}) environment has more than the platform's HOME: ${JSON.stringify(env)}`);
    observed.push({ cell: id, initPid: pid, init: cmd[0], environ: env.join(' '), work: 0, tmp: 0 });
  }
  console.log('\nwarm cells after two tenant jobs:');
  console.table(observed);

  // Every process of the agent's cells (runc init, runsc sandbox, gofer, stubs), by command line, and their environments.
  const cellProcs: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (!cmd.includes(`cr-${agentId}-`) && !cmd.includes(cellsDir)) continue;
    cellProcs.push(Number(e));
    try {
      assert.deepEqual(leaksIn(cmd + '\n' + environOf(Number(e)).join('\n'), tenant), [], `cell process ${e} (${cmd.slice(0, 60)}) holds tenant data`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  assert.ok(cellProcs.length > 0, 'found no processes of the warm cells to inspect');

  // What the runtimes keep about their containers (runc state.json, runsc .state) names only warm cells and no tenant.
  for (const stateDir of RUNTIMES.map((r) => join(agentDir, r)).filter(existsSync)) {
    for (const f of regularFiles(stateDir)) {
      const text = readFileSync(f, 'latin1');
      assert.deepEqual(leaksIn(text, tenant), [], `runtime state ${f} contains tenant data`);
      for (const used of usedCells) assert.ok(!text.includes(`cr-${agentId}-${used}`) && !f.includes(used), `runtime state ${f} still refers to used cell ${used}`);
    }
  }
});
