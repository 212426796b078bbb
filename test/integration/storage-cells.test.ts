// Every cell's writable storage is its own fscrypt-encrypted volume: canary never in plaintext, ENOSPC at the limit, shredded with a receipt.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { TestCluster } from '../support/cluster.js';
import { cellWorkDir, volumeOfCell, waitFor } from '../support/host.js';
import { getPolicy } from '../../src/agent/storage/fscrypt.js';
import { RUNTIMES } from '../../src/shared/wire.js';

/** From <linux/fscrypt.h>. */
const FSCRYPT_MODE_AES_256_XTS = 1;
const FSCRYPT_MODE_AES_256_CTS = 4;

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

function volumeOf(cellId: string): { id: string; img: string; mnt: string } {
  const dir = join(cluster.dataDir, 'agent', 'volumes');
  const { volumeId } = volumeOfCell(dir, cellId);
  return { id: volumeId, img: join(dir, `${volumeId}.img`), mnt: join(dir, `${volumeId}.mnt`) };
}

function grepTree(dir: string, needle: Buffer, found: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.name.includes(needle.toString())) found.push(`name ${p}`);
    if (e.isDirectory() && !e.isSymbolicLink()) {
      if (e.name.endsWith('.mnt') || e.name === 'rootfs') continue; // mounted volumes are read through their own checks
      grepTree(p, needle, found);
    } else if (e.isFile()) {
      try {
        if (readFileSync(p).includes(needle)) found.push(p);
      } catch {
        /* vanished */
      }
    }
  }
  return found;
}

for (const runtime of RUNTIMES) {
  test(`${runtime}: a canary written in the cell never reaches the disk in plaintext, and is shredded at the end`, async () => {
    const [a, b] = [randomBytes(6).toString('hex'), randomBytes(6).toString('hex')];
    const marker = `CANARY-${a}${b}`;
    // The marker is assembled inside the cell, so it is not in the stored command either. The cell lives on until the test
    // has read its volume from the host (a file in its /work), however long the host's sync takes.
    const script = `M="CANARY-$A$B"; echo $M > /work/$M.txt; echo $M > /tmp/$M.txt; sync; echo written; until [ -e /work/go ]; do sleep 0.05; done`;
    const created = await cluster.client.createJob({ command: ['sh', '-c', script], env: { A: a, B: b }, runtime, timeoutSeconds: 120 });
    let written = false;
    const ended = cluster.client.followLogs(created.id, (c) => (written ||= c.data.toString().includes('written')));
    ended.catch(() => {}); // awaited below; a failure before that cuts it at teardown
    await waitFor(() => written, 30_000);
    const job = await cluster.client.getJob(created.id);
    const vol = volumeOf(job.cellId!);
    // From the host, as an auditor: the policy is v2 with AES-256-XTS contents and AES-256-CTS names.
    const dataDir = join(vol.mnt, 'data');
    const policy = getPolicy(dataDir);
    assert.ok(policy, 'the volume directory has an encryption policy');
    assert.equal(policy.version, 2);
    assert.equal(policy.contentsMode, FSCRYPT_MODE_AES_256_XTS);
    assert.equal(policy.filenamesMode, FSCRYPT_MODE_AES_256_CTS);
    execFileSync('sync');
    writeDropCaches();
    const raw = readFileSync(vol.img);
    assert.equal(raw.includes(Buffer.from(marker)), false, 'the marker is in the raw backing file');
    writeFileSync(join(cellWorkDir(cluster.dataDir, job.cellId!), 'go'), '');
    const final = await ended;
    assert.equal(final.status, 'succeeded');
    await waitFor(async () => (await cluster.client.getJob(created.id)).wipe !== null, 10_000);
    const wiped = await cluster.client.getJob(created.id);
    assert.equal(wiped.wipe!.volumeId, vol.id);
    assert.equal(wiped.wipe!.keyStateAfterRemoval, 'absent', JSON.stringify(wiped.wipe));
    assert.ok(!JSON.stringify(wiped.wipe).includes(marker));
    assert.equal(existsSync(vol.img), false, 'backing file deleted');
    assert.equal(existsSync(vol.mnt), false, 'mount point removed');
    assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(vol.id), false, 'still mounted');
    // A gVisor gofer still exiting may hold a copy of the mount at the wipe: the key is gone, and the wipe then only arms
    // the loop device's autoclear (its receipt says so). The kernel detaches it when that last holder lets go.
    const attached = () => execFileSync('losetup', ['-a']).toString().includes(vol.id);
    if (JSON.stringify(wiped.wipe).includes('autoclear armed')) await waitFor(() => !attached(), 10_000).catch(() => {});
    assert.equal(attached(), false, 'loop device still attached');
    assert.deepEqual(grepTree(cluster.dataDir, Buffer.from(marker)), [], 'the marker is somewhere under the data directory or in logs');
  });
}

test('a job that writes past its disk limit gets ENOSPC; the host loses at most the volume, and gets it back', async () => {
  // Measured on the volume's own backing file (its allocated blocks), not the host's free space: other writers on the
  // same filesystem (the test's own cluster, anything else on the host) move that by hundreds of MiB.
  const created = await cluster.client.createJob({ command: ['sh', '-c', 'dd if=/dev/zero of=/work/fill bs=1M count=400 2>&1; echo "dd exit $?"; sleep 2'], diskMiB: 256, timeoutSeconds: 60 });
  let out = '';
  const ended = cluster.client.followLogs(created.id, (c) => (out += c.data.toString()));
  ended.catch(() => {}); // awaited below
  await waitFor(() => out.includes('dd exit'), 30_000);
  const cellId = (await cluster.client.getJob(created.id)).cellId!;
  const work = cellWorkDir(cluster.dataDir, cellId); // <volumes>/<id>.mnt/data/work
  const backingFile = work.replace(/\.mnt\/data\/work$/, '.img');
  const allocatedMiB = (statSync(backingFile).blocks * 512) / 1024 / 1024;
  await ended;
  assert.match(out, /No space left on device/);
  assert.match(out, /dd exit 1/);
  assert.ok(allocatedMiB >= 200, `the volume holds only ${allocatedMiB} MiB after a 400 MiB write: not the file measured`);
  assert.ok(allocatedMiB <= 256, `the volume takes ${allocatedMiB} MiB of the host for a 256 MiB limit`);
  await waitFor(async () => (await cluster.client.getJob(created.id)).wipe !== null, 10_000);
  assert.equal(existsSync(backingFile), false, 'the backing file (the space the volume took) is still there after the wipe');
  // Its inode may live on as a spare for the next volume (volume.ts), but holding no block.
  const volumesDir = join(backingFile, '..');
  for (const n of readdirSync(volumesDir).filter((n) => n.startsWith('spare-img-'))) assert.equal(statSync(join(volumesDir, n)).blocks, 0, `${n} holds blocks`);
});

test('a job may not ask for more disk than its workspace allows', async () => {
  await assert.rejects(cluster.client.createJob({ command: ['true'], diskMiB: 1 << 20 }), (e: { code: string }) => e.code === 'limit_exceeded');
});

test('cleanroom pool shows volumes by state', async () => {
  await cluster.waitWarm();
  const r = await cluster.cli(['pool', '--json']);
  const p = JSON.parse(r.stdout) as { volumes: Record<string, { warm: number; wiped: number }> };
  const v = Object.values(p.volumes)[0]!;
  assert.ok(v.warm >= 3, JSON.stringify(p));
  assert.ok(v.wiped >= 2, JSON.stringify(p));
  const human = await cluster.cli(['pool']);
  assert.match(human.stdout, /VOLUMES/);
});

function writeDropCaches(): void {
  try {
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
  } catch {
    /* not permitted in some containers; the check still reads the file */
  }
}
