// Reconcile kills what is still alive in a dead cell's cgroup (a fork loop, a sleeper) instead of dying on EBUSY, removes
// the cgroup in every hierarchy, and spools a receipt for a leftover volume with its job; nothing else is touched.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CellCgroup, listCgroups } from '../../src/agent/cells/cgroup.js';
import { reconcileHost } from '../../src/agent/reconcile/reconcile.js';
import { ReceiptSpool } from '../../src/agent/reconcile/receipt-spool.js';
import { prepareVolume } from '../../src/agent/storage/volume.js';

const HIERARCHIES = ['freezer', 'pids', 'memory', 'cpu', 'blkio'];
const started: ChildProcess[] = [];
const scratch = mkdtempSync('/var/tmp/cleanroom-reconcile-host-');

after(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

/** cellCgroupWith makes a cell-named cgroup in several hierarchies and moves a new process (and what it forks) into it. */
function cellCgroupWith(name: string, script: string): ChildProcess {
  for (const h of HIERARCHIES) mkdirSync(`/sys/fs/cgroup/${h}/${name}`, { recursive: true });
  // The shell waits on its stdin until it has been moved, so everything it forks is in the cgroup too.
  const child = spawn('sh', ['-c', `read go; ${script}`], { stdio: ['pipe', 'ignore', 'ignore'] });
  started.push(child);
  for (const h of HIERARCHIES) writeFileSync(`/sys/fs/cgroup/${h}/${name}/cgroup.procs`, String(child.pid));
  child.stdin!.end('go\n');
  return child;
}

test('a cell cgroup with a sleeper and a fork loop in it is frozen, killed, emptied and removed; the agent does not die on EBUSY', async () => {
  assert.equal(process.getuid?.(), 0, 'this test moves processes between cgroups and must run as root (CI does)');
  const agentId = randomBytes(3).toString('hex');
  const sleeper = `cr-${agentId}-${randomBytes(5).toString('hex')}`;
  const forker = `cr-${agentId}-${randomBytes(5).toString('hex')}`;
  const unrelated = `cr-${randomBytes(3).toString('hex')}-${randomBytes(5).toString('hex')}`;
  cellCgroupWith(sleeper, 'sleep 300 & sleep 300 & wait');
  cellCgroupWith(forker, 'while :; do sleep 300 & done');
  const other = cellCgroupWith(unrelated, 'sleep 300');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(new CellCgroup(forker).pids().length > 3, 'the fork loop runs inside its cgroup');
  // A plain rmdir fails while tasks are there: the failure the agent used to die of.
  assert.throws(() => new CellCgroup(sleeper).remove(), /EBUSY/);

  const cellsDir = join(scratch, 'cells');
  const volumesDir = join(scratch, 'volumes');
  mkdirSync(join(cellsDir, 'c0ffee0001'), { recursive: true });
  writeFileSync(join(cellsDir, 'c0ffee0001', 'job'), 'job_reconcile_test');
  mkdirSync(volumesDir, { recursive: true });
  const volume = await prepareVolume({ root: volumesDir, cellId: 'c0ffee0001', uid: 100_000, gid: 100_000, sizeBytes: 16 * 1024 * 1024 });
  const spool = new ReceiptSpool(join(scratch, 'receipts'));

  const report = await reconcileHost({ agentId, runtimes: [], cellsDir, volumesDir, spool });
  assert.deepEqual(report.leftovers, []);
  assert.deepEqual(report.killed.sort(), [forker, sleeper].sort());
  assert.deepEqual(report.cgroups.sort(), [forker, sleeper].sort());
  assert.deepEqual(listCgroups(`cr-${agentId}-`), [], 'no cgroup of the agent is left in any hierarchy');
  for (const h of HIERARCHIES) assert.equal(existsSync(`/sys/fs/cgroup/${h}/${sleeper}`), false, `${h}/${sleeper} removed`);
  // Another agent's cell is not touched.
  assert.equal(other.exitCode, null, "another agent's cell process still runs");
  assert.ok(new CellCgroup(unrelated).pids().includes(other.pid!));

  // The leftover volume was shredded, and its receipt spooled with its job for the next agent to report.
  assert.equal(report.wipes.length, 1);
  assert.equal(report.wipes[0]!.jobId, 'job_reconcile_test');
  assert.equal(report.wipes[0]!.receipt.volumeId, volume.id);
  assert.equal(report.wipes[0]!.receipt.keyStateAfterRemoval, 'absent');
  const spooled = spool.read();
  assert.deepEqual(spooled.map((s) => [s.jobId, s.receipt.volumeId]), [['job_reconcile_test', volume.id]]);
  spool.remove([volume.id]);
  assert.deepEqual(spool.read(), []);
  assert.equal(existsSync(join(cellsDir, 'c0ffee0001')), false, 'the cell directory goes once its volume is shredded');

  // Clean up the unrelated cgroup this test made.
  assert.equal(await new CellCgroup(unrelated).kill(5000), true);
  new CellCgroup(unrelated).remove();
});
