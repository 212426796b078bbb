// Sandboxes at the agent level, files: every operation runs inside the cell as the workload user, through the
// supervisor (never from the host): stat, list, mkdir -p, remove, rename, read and write streamed in chunks, a full
// volume answered with no_space (and the sandbox still works). Real agent, real runc/runsc cells. Requires root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { TestCluster } from '../support/cluster.js';
import { SandboxControl } from '../support/sandbox-control.js';
import { RUNTIMES, type Runtime } from '../../src/shared/wire.js';

const MiB = 1024 * 1024;
let cluster: TestCluster;
let control: SandboxControl;
const sandboxes = new Map<Runtime, string>();

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }, { runtime: 'runsc', class: 'small', warm: 1 }, { runtime: 'crun', class: 'small', warm: 1 }] } } });
  await cluster.waitWarm();
  control = await SandboxControl.takeOver(cluster);
  for (const runtime of RUNTIMES) sandboxes.set(runtime, (await control.createSandbox(runtime)).jobId);
});

after(async () => {
  await control?.close();
  await cluster?.stop();
});

/** pattern makes deterministic bytes for any offset, so that a file can be checked without keeping it. */
function pattern(offset: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = ((offset + i) * 2654435761) >>> 24;
  return b;
}

for (const runtime of RUNTIMES) {
  const id = () => sandboxes.get(runtime)!;

  test(`${runtime}: mkdir -p, write, stat, list, rename, read, remove`, async () => {
    assert.equal((await control.file(id(), 'mkdir', '/work/a/b/c')).ok, true);
    assert.equal((await control.file(id(), 'mkdir', '/work/a/b/c')).ok, true, 'an existing directory is fine');
    const w = await control.writeFile(id(), '/work/a/b/c/hello.txt', 12, () => Buffer.from('hello world\n'));
    assert.deepEqual([w.ok, w.bytes], [true, 12], JSON.stringify(w));
    const st = await control.file(id(), 'stat', '/work/a/b/c/hello.txt');
    assert.equal(st.ok, true);
    assert.deepEqual({ ...st.stat, mtimeMs: 0 }, { name: 'hello.txt', type: 'file', size: 12, mode: 0o644, mtimeMs: 0 });
    // Files the supervisor writes belong to the workload user.
    // (python, not stat(1): coreutils' statx is refused in gVisor cells.)
    const owner = await control.exec(id(), ['/usr/bin/python3', '-c', 'import os; s = os.stat("/work/a/b/c/hello.txt"); print(f"{s.st_uid}:{s.st_gid}")']);
    assert.equal(owner.stdout, '1000:1000\n');
    const ls = await control.file(id(), 'list', '/work/a/b');
    assert.deepEqual(ls.entries?.map((e) => [e.name, e.type]), [['c', 'directory']]);
    assert.equal(ls.truncated, false);
    assert.equal((await control.file(id(), 'rename', '/work/a/b/c/hello.txt', { to: '/work/a/hello.txt' })).ok, true);
    const r = await control.readFile(id(), '/work/a/hello.txt');
    assert.deepEqual([r.result.ok, r.result.bytes, r.data.toString()], [true, 12, 'hello world\n']);
    assert.equal((await control.file(id(), 'mkdir', '/work/a/hello.txt/x')).code, 'not_a_directory');
    const notEmpty = await control.file(id(), 'remove', '/work/a');
    assert.deepEqual([notEmpty.ok, notEmpty.code], [false, 'not_empty']);
    assert.equal((await control.file(id(), 'remove', '/work/a', { recursive: true })).ok, true);
    const gone = await control.file(id(), 'stat', '/work/a');
    assert.deepEqual([gone.ok, gone.code], [false, 'not_found']);
    // Errors by code.
    assert.equal((await control.readFile(id(), '/work')).result.code, 'is_a_directory');
    assert.equal((await control.file(id(), 'list', '/work/nope')).code, 'not_found');
    assert.equal((await control.writeFile(id(), '/usr/bin/evil', 1, () => Buffer.from('x'))).code, 'permission_denied');
  });

  test(`${runtime}: 1 MiB write then read, and a 50 MB file streamed both ways`, async () => {
    const one = pattern(7, MiB);
    const t0 = performance.now();
    const w = await control.writeFile(id(), '/work/one.bin', MiB, (off, n) => one.subarray(off, off + n));
    const t1 = performance.now();
    const r = await control.readFile(id(), '/work/one.bin');
    const t2 = performance.now();
    assert.equal(w.ok, true);
    assert.ok(r.data.equals(one), '1 MiB read back equals what was written');
    console.log(`${runtime}: 1 MiB write ${(t1 - t0).toFixed(1)} ms, read ${(t2 - t1).toFixed(1)} ms`);
    const size = 50 * 1000 * 1000;
    const h = createHash('sha256');
    for (let off = 0; off < size; off += MiB) h.update(pattern(off, Math.min(MiB, size - off)));
    const want = h.digest('hex');
    const t3 = performance.now();
    const big = await control.writeFile(id(), '/work/big.bin', size, pattern);
    const t4 = performance.now();
    assert.deepEqual([big.ok, big.bytes], [true, size], JSON.stringify(big));
    const got = createHash('sha256');
    let n = 0;
    const rb = await control.readFile(id(), '/work/big.bin', (d) => (got.update(d), (n += d.length)));
    const t5 = performance.now();
    assert.deepEqual([rb.result.ok, rb.result.bytes, n], [true, size, size]);
    assert.equal(got.digest('hex'), want);
    console.log(`${runtime}: 50 MB write ${(t4 - t3).toFixed(0)} ms, read ${(t5 - t4).toFixed(0)} ms`);
    assert.equal((await control.file(id(), 'remove', '/work/big.bin')).ok, true);
  });

  test(`${runtime}: a 1 GiB write into a 256 MiB volume ends with no_space, and the sandbox still works`, async () => {
    const chunk = pattern(0, 256 * 1024);
    const r = await control.writeFile(id(), '/work/huge.bin', 1024 * MiB, (_o, n) => chunk.subarray(0, n), 256 * 1024);
    assert.deepEqual([r.ok, r.code], [false, 'no_space'], JSON.stringify(r));
    assert.equal((await control.file(id(), 'remove', '/work/huge.bin')).ok, true);
    const e = await control.exec(id(), ['sh', '-c', 'echo after > /work/after.txt && cat /work/after.txt']);
    assert.equal(e.stdout, 'after\n');
  });
}
