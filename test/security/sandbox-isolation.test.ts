// A sandbox's supervisor against a hostile workload: symlinks it plants (to /proc/1/root, /proc/1/mem, /etc/shadow,
// a host path, another cell's volume on the host) resolve only inside its own cell with its own rights, also while it
// swaps them in a loop under running file operations; recursive remove never follows a link; and the workload cannot
// open the supervisor's memory, read its fds, trace or signal it. Real agent and runc/runsc cells. Requires root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { SandboxControl } from '../support/sandbox-control.js';
import { volumeOfCell } from '../support/host.js';
import { RUNTIMES, type Runtime } from '../../src/shared/wire.js';

let cluster: TestCluster;
let control: SandboxControl;
const sandboxes = new Map<Runtime, string>();
/** A host directory and file no cell may see: the targets of the planted links. */
const hostDir = `/var/tmp/cleanroom-h3-canary-${randomBytes(6).toString('hex')}`;
const hostFile = join(hostDir, 'canary.txt');
const HOST_SECRET = `HOST-SECRET-${randomBytes(8).toString('hex')}`;

before(async () => {
  mkdirSync(hostDir, { mode: 0o777 });
  writeFileSync(hostFile, HOST_SECRET, { mode: 0o666 });
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }, { runtime: 'runsc', class: 'small', warm: 1 }, { runtime: 'crun', class: 'small', warm: 1 }] } } });
  await cluster.waitWarm();
  control = await SandboxControl.takeOver(cluster);
  for (const runtime of RUNTIMES) sandboxes.set(runtime, (await control.createSandbox(runtime)).jobId);
});

after(async () => {
  await control?.close();
  await cluster?.stop();
  rmSync(hostDir, { recursive: true, force: true });
});

/** volumeDataOf finds the host path of a cell's /work (its volume's data directory) through the volume markers. */
function workDirOnHost(cellId: string): string {
  const dir = join(cluster.dataDir, 'agent', 'volumes');
  return join(dir, `${volumeOfCell(dir, cellId).volumeId}.mnt`);
}

function hostUnchanged(): void {
  assert.equal(readFileSync(hostFile, 'utf8'), HOST_SECRET, 'the host canary is unchanged');
  assert.deepEqual(readdirSync(hostDir), ['canary.txt'], 'nothing was created in the host directory');
}

for (const runtime of RUNTIMES) {
  const id = () => sandboxes.get(runtime)!;

  test(`${runtime}: planted symlinks resolve only inside the cell, with the workload's rights`, async () => {
    // Another sandbox (a neighbour) with a secret in its /work; its host path is what a link will aim at.
    const neighbour = await control.createSandbox('runc');
    const NEIGHBOUR_SECRET = `NEIGHBOUR-${randomBytes(8).toString('hex')}`;
    assert.equal((await control.writeFile(neighbour.jobId, '/work/secret.txt', NEIGHBOUR_SECRET.length, () => Buffer.from(NEIGHBOUR_SECRET))).ok, true);
    const neighbourHostPath = workDirOnHost(neighbour.cellId);
    const links = {
      root: '/proc/1/root',
      mem: '/proc/1/mem',
      environ: '/proc/1/environ',
      shadow: '/etc/shadow',
      hostfile: hostFile,
      hostdir: hostDir,
      neighbour: neighbourHostPath,
    };
    const plant = Object.entries(links).map(([n, t]) => `ln -sfn '${t}' /work/l-${n}`).join('; ');
    assert.equal((await control.exec(id(), ['sh', '-c', `${plant}; echo planted`])).stdout, 'planted\n');
    const cellPasswd = (await control.exec(id(), ['cat', '/etc/passwd'])).stdout;
    const hostShadow = existsSync('/etc/shadow') ? readFileSync('/etc/shadow', 'utf8') : null;

    // Through /proc/1/root: init's root is the cell's own root; and the workload may not traverse init's /proc entries.
    const viaRoot = await control.readFile(id(), '/work/l-root/etc/passwd');
    if (viaRoot.result.ok) assert.equal(viaRoot.data.toString(), cellPasswd, 'through /proc/1/root only the cell itself');
    else assert.equal(viaRoot.result.code, 'permission_denied');
    const mem = await control.readFile(id(), '/work/l-mem');
    assert.equal(mem.result.ok, false, 'init memory through a link');
    assert.equal((await control.readFile(id(), '/proc/1/mem')).result.ok, false, 'init memory directly');
    if (runtime !== 'runsc') assert.equal((await control.readFile(id(), '/work/l-environ')).result.code, 'permission_denied');
    const shadow = await control.readFile(id(), '/work/l-shadow');
    if (hostShadow !== null) assert.notEqual(shadow.data.toString(), hostShadow);
    assert.equal(shadow.result.ok, false, JSON.stringify(shadow.result));
    // Host paths do not exist in the cell's mount namespace: reads find nothing, writes create nothing on the host.
    for (const l of ['hostfile', 'neighbour'] as const) {
      const r = await control.readFile(id(), `/work/l-${l}`);
      assert.ok(!r.data.toString().includes('SECRET') && !r.data.toString().includes(NEIGHBOUR_SECRET), `${l} leaked`);
    }
    const nb = await control.readFile(id(), '/work/l-neighbour/secret.txt');
    assert.equal(nb.result.ok, false);
    assert.equal((await control.writeFile(id(), '/work/l-hostfile', 5, () => Buffer.from('owned'))).ok, false);
    assert.equal((await control.writeFile(id(), '/work/l-hostdir/new.txt', 5, () => Buffer.from('owned'))).ok, false);
    assert.equal((await control.file(id(), 'mkdir', '/work/l-hostdir/sub')).ok, false);
    assert.equal((await control.file(id(), 'rename', '/work/l-hostfile', { to: '/work/moved' })).ok, true, 'renaming a link moves the link');
    assert.equal((await control.file(id(), 'remove', '/work/l-hostdir', { recursive: true })).ok, true, 'removing a link removes the link');
    hostUnchanged();
    const again = await control.readFile(neighbour.jobId, '/work/secret.txt');
    assert.equal(again.data.toString(), NEIGHBOUR_SECRET, "the neighbour's file is intact");
    // Recursive remove never follows a link into what it points at.
    await control.exec(id(), ['sh', '-c', 'mkdir -p /work/keep /work/rmme && echo k > /work/keep/k.txt && ln -s /work/keep /work/rmme/link']);
    assert.equal((await control.file(id(), 'remove', '/work/rmme', { recursive: true })).ok, true);
    assert.equal((await control.readFile(id(), '/work/keep/k.txt')).data.toString(), 'k\n');
    await control.end(neighbour.jobId);
  });

  test(`${runtime}: a symlink swapped in a loop under running file operations never leads out of the cell`, async () => {
    // The workload flips /work/race/d between a directory, a link to a host directory and a link to /proc/1/root/tmp.
    const swapper = `p_${randomUUID()}`;
    const script = `mkdir -p /work/race; i=0; while true; do rm -rf /work/race/d; mkdir /work/race/d; rm -rf /work/race/d; ln -sfn '${hostDir}' /work/race/d; rm -f /work/race/d; ln -sfn /proc/1/root/tmp /work/race/d; rm -f /work/race/d; i=$((i+1)); done`;
    control.send({ type: 'proc.start', jobId: id(), procId: swapper, argv: ['sh', '-c', script], env: {}, cwd: '/work', timeoutMs: 120_000, pty: null, stdin: false });
    await control.waitFor((m) => m.type === 'proc.started' && m.procId === swapper);
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const w = await control.writeFile(id(), '/work/race/d/f.txt', 4, () => Buffer.from('RACE'));
      const r = await control.readFile(id(), '/work/race/d/canary.txt');
      const m = await control.file(id(), 'mkdir', '/work/race/d/sub');
      for (const [k, ok] of [['write', w.ok], ['read', r.result.ok], ['mkdir', m.ok]] as const) outcomes[`${k} ${ok ? 'ok' : 'refused'}`] = (outcomes[`${k} ${ok ? 'ok' : 'refused'}`] ?? 0) + 1;
      assert.ok(!r.data.toString().includes(HOST_SECRET), 'a racing read reached the host canary');
    }
    console.log(`${runtime} race outcomes: ${JSON.stringify(outcomes)}`);
    control.send({ type: 'proc.signal', jobId: id(), procId: swapper, signal: 9 });
    await control.waitFor((m) => m.type === 'proc.exited' && m.procId === swapper);
    hostUnchanged();
    // The sandbox still serves.
    assert.equal((await control.exec(id(), ['echo', 'fine'])).stdout, 'fine\n');
  });

  test(`${runtime}: the workload cannot open the supervisor's memory, read its fds, trace or signal it`, async () => {
    const script = [
      'for m in "<" "<>"; do if eval "(exec 3${m}/proc/1/mem)" 2>/dev/null; then echo "OPEN mem $m"; else echo "denied mem $m"; fi; done',
      'if (exec 3<>/proc/1/environ) 2>/dev/null; then echo "OPEN environ rw"; else echo "denied environ rw"; fi',
      'if ls /proc/1/fd >/dev/null 2>&1; then echo "OPEN fd"; else echo "denied fd"; fi',
      'grep -E "^(Uid|CapEff|CapPrm|CapBnd):" /proc/1/status | tr -s "\t" " "',
      'for s in TERM INT HUP USR1 USR2 QUIT ALRM STOP KILL; do kill -s $s 1 2>/dev/null && echo "delivered $s"; done; kill -s CONT 1 2>/dev/null',
      'sleep 0.2; echo survived',
    ].join('\n');
    const r = await control.exec(id(), ['sh', '-c', script]);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 4), ['denied mem <', 'denied mem <>', 'denied environ rw', 'denied fd'], r.stdout);
    // Real and saved uid 0, effective the workload's, no capability and an empty bounding set.
    const status = lines.slice(4, 8).sort();
    if (runtime !== 'runsc') assert.deepEqual(status, ['CapBnd: 0000000000000000', 'CapEff: 0000000000000000', 'CapPrm: 0000000000000000', 'Uid: 0 1000 0 1000']);
    else assert.ok(status.includes('CapEff: 0000000000000000') && status.includes('Uid: 0 1000 0 1000'), status.join(' | '));
    assert.deepEqual(lines.slice(8), ['survived'], `signals reached init: ${lines.slice(8).join(', ')}`);
    const pt = await control.exec(id(), ['/usr/bin/python3', '-c', 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.ptrace(16, 1, 0, 0); print(r, ctypes.get_errno())']);
    const [ret, errno] = pt.stdout.trim().split(' ').map(Number);
    assert.equal(ret, -1, `PTRACE_ATTACH to init succeeded: ${pt.stdout}`);
    assert.ok(errno === 1 || errno === 38, `PTRACE_ATTACH failed with EPERM or ENOSYS, got errno ${errno}`);
    // The supervisor still serves after all that.
    assert.equal((await control.exec(id(), ['echo', 'alive'])).stdout, 'alive\n');
  });
}
