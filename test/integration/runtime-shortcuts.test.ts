// The two runtime shortcuts of a cell's life (root; real runc and crun): a crun cell after the first of its profile loads
// the seccomp filter crun compiled for that profile (run.oci.seccomp_bpf_data) and is confined exactly as the first, and
// an exited cell is removed without a runtime process — nothing of it is left (state directory, cgroups, processes),
// also when its workload left a process behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCells } from '../support/agent-cells.js';
import { listCgroups } from '../../src/agent/cells/cgroup.js';
import { CRUN_SECCOMP_BPF_ANNOTATION } from '../../src/agent/runtime/oci-runtime.js';

let cells: AgentCells;

before(async () => {
  cells = await AgentCells.start();
});

after(async () => {
  await cells?.close();
});

// Prints the seccomp mode and filter count of the workload, then tries calls the profile denies.
const PROBE = [
  'sh',
  '-c',
  'grep -E "^(Seccomp|Seccomp_filters|NoNewPrivs):" /proc/self/status; unshare -m true 2>/dev/null; echo "unshare=$?"; ' +
    'if mount -t tmpfs x /tmp 2>/dev/null; then echo mount=0; else echo mount=refused; fi',
];

function specOf(cellDir: string): { annotations?: Record<string, string>; linux: { seccomp?: unknown } } {
  return JSON.parse(readFileSync(join(cellDir, 'config.json'), 'utf8')) as { annotations?: Record<string, string>; linux: { seccomp?: unknown } };
}

test('crun: the second cell of a profile loads the filter crun compiled for the first, and is confined the same', async () => {
  const first = await cells.prepare('crun', null);
  const firstDir = join(cells.env.cellsDir, first.id);
  assert.equal(specOf(firstDir).annotations?.[CRUN_SECCOMP_BPF_ANNOTATION], undefined, 'the first cell of a profile is compiled by crun');
  const compiled = readFileSync(join(cells.dir, 'agent', 'crun', first.name, 'seccomp.bpf'));
  assert.ok(compiled.length >= 8 && compiled.length % 8 === 0, `crun kept no whole filter: ${compiled.length} bytes`);

  const second = await cells.prepare('crun', null);
  const spec = specOf(join(cells.env.cellsDir, second.id));
  assert.equal(spec.annotations?.[CRUN_SECCOMP_BPF_ANNOTATION], compiled.toString('base64'), 'the second cell carries the first one’s compiled filter');
  assert.ok(spec.linux.seccomp, 'the spec still states the profile');

  const runs = [await cells.run(first, { command: PROBE }), await cells.run(second, { command: PROBE })];
  for (const [i, r] of runs.entries()) {
    assert.equal(r.end.reason, 'succeeded', `cell ${i}: ${JSON.stringify(r.end)} ${r.stderr}`);
    assert.match(r.stdout, /^Seccomp:\s+2$/m, `cell ${i}: ${r.stdout}`);
    assert.match(r.stdout, /^Seccomp_filters:\s+1$/m, `cell ${i}: ${r.stdout}`);
    assert.match(r.stdout, /^NoNewPrivs:\s+1$/m, `cell ${i}: ${r.stdout}`);
    assert.match(r.stdout, /^unshare=[1-9]\d*$/m, `cell ${i}: unshare was not refused: ${r.stdout}`);
    assert.match(r.stdout, /^mount=refused$/m, `cell ${i}: ${r.stdout}`);
  }
  assert.equal(runs[0]!.stdout, runs[1]!.stdout, 'both cells see the same confinement');
});

for (const runtime of ['crun', 'runc'] as const) {
  test(`${runtime}: an exited cell leaves no state directory, cgroup or process, also when its workload left one behind`, async () => {
    for (const command of [['true'], ['sh', '-c', 'setsid sleep 60 </dev/null >/dev/null 2>&1 & echo started']]) {
      const cell = await cells.prepare(runtime, null);
      const stateDir = join(cells.dir, 'agent', runtime, cell.name);
      assert.ok(existsSync(stateDir), `${runtime} keeps its state in ${stateDir}`);
      const r = await cells.run(cell, { command });
      assert.equal(r.end.reason, 'succeeded', JSON.stringify(r.end));
      assert.ok(r.receipt, 'the volume was wiped');
      assert.equal(existsSync(stateDir), false, `${runtime}'s state directory of ${cell.name} is left`);
      assert.deepEqual(listCgroups(cell.name), [], `cgroups of ${cell.name} are left`);
      const listed = execFileSync(runtime, ['--root', join(cells.dir, 'agent', runtime), 'list', '-q'], { encoding: 'utf8' });
      assert.ok(!listed.includes(cell.name), `${runtime} still lists ${cell.name}`);
      const sleepers = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => /\bsleep 60$/.test(l.trim()));
      assert.deepEqual(sleepers.filter((l) => isInCell(Number(l.trim().split(/\s+/)[0]), cell.name)), [], 'a process of the cell outlived it');
    }
  });
}

test('a warm cell that is wiped before any assignment is deleted through its runtime', async () => {
  const cell = await cells.prepare('crun', null);
  const stateDir = join(cells.dir, 'agent', 'crun', cell.name);
  assert.ok(existsSync(stateDir));
  await cell.wipe();
  assert.equal(existsSync(stateDir), false);
  assert.deepEqual(listCgroups(cell.name), []);
});

function isInCell(pid: number, name: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(name);
  } catch {
    return false;
  }
}
