// Host check for encrypted volumes: can this machine create, encrypt and wipe a per-cell volume?
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopIndex, getKeyStatus, getPolicy, loadAddon, POLICY_V2_AES256 } from './fscrypt.js';
import { loopDevicesByBackingFile, mountPointsWithin, prepareVolume, wipeVolume } from './volume.js';

const execFileAsync = promisify(execFile);
const PROBE_SIZE = 16 * 1024 * 1024;

// StorageCheck is one check's outcome with a message meant for an operator.
export interface StorageCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

// StorageSupport is the overall verdict and every check behind it.
export interface StorageSupport {
  readonly ok: boolean;
  readonly checks: readonly StorageCheck[];
}

// Runs a check, turning a thrown error into a failed check with its message.
async function check(name: string, fn: () => Promise<string> | string): Promise<StorageCheck> {
  try {
    return { name, ok: true, detail: await fn() };
  } catch (err) {
    return { name, ok: false, detail: err instanceof Error ? err.message : String(err) };
  }
}

// Deletes the probe's scratch root, refusing (rather than recursing into a live filesystem) if anything is still attached.
async function removeScratchRoot(root: string): Promise<void> {
  // A loop device whose backing file is already unlinked (autoclear armed) holds nothing of this tree.
  const loops = [...(await loopDevicesByBackingFile()).keys()].filter((f) => f.startsWith(`${root}/`) && existsSync(f));
  if ((await mountPointsWithin(root)).length > 0 || loops.length > 0) {
    throw new Error(`the probe volume is still mounted or attached under ${root}; left in place`);
  }
  await fsp.rm(root, { recursive: true, force: true });
}

// Creates, verifies and wipes a small real volume in a scratch directory.
async function probeVolume(): Promise<string> {
  const root = await fsp.realpath(await fsp.mkdtemp(join(tmpdir(), 'cleanroom-storage-doctor-')));
  try {
    const volume = await prepareVolume({ root, cellId: 'doctor-probe', uid: 0, gid: 0, sizeBytes: PROBE_SIZE });
    let wiped = false;
    try {
      const policy = getPolicy(volume.dataDir);
      if (policy === null || policy.version !== POLICY_V2_AES256.version || policy.contentsMode !== POLICY_V2_AES256.contentsMode ||
          policy.filenamesMode !== POLICY_V2_AES256.filenamesMode) {
        throw new Error(`policy read back as ${JSON.stringify(policy)}, expected v2 AES-256-XTS/AES-256-CTS`);
      }
      if (getKeyStatus(volume.mountPoint, volume.keyIdentifier).state !== 'present') throw new Error('key not present after add');
      const receipt = await wipeVolume(volume);
      wiped = true;
      if (receipt.keyStateAfterRemoval !== 'absent') throw new Error(`key state after wipe: ${receipt.keyStateAfterRemoval}`);
      const prepareMs = volume.steps.reduce((sum, s) => sum + s.ms, 0);
      return `prepared ${PROBE_SIZE >> 20} MiB volume in ${prepareMs.toFixed(1)} ms, wiped in ${receipt.totalMs.toFixed(1)} ms; key ABSENT after wipe`;
    } finally {
      if (!wiped) await wipeVolume(volume).catch(() => undefined);
    }
  } finally {
    await removeScratchRoot(root);
  }
}

// checkStorageSupport reports whether this host can run per-cell encrypted volumes, ending with a real probe volume.
export async function checkStorageSupport(): Promise<StorageSupport> {
  const checks: StorageCheck[] = [];
  checks.push(await check('root', () => {
    if (process.geteuid?.() !== 0) throw new Error('the agent must run as root to attach loop devices, mount and manage fscrypt keys');
    return 'running as root';
  }));
  checks.push(await check('addon', () => {
    loadAddon();
    return 'build/fscrypt.node loaded';
  }));
  checks.push(await check('loop-control', () => `LOOP_CTL_GET_FREE -> /dev/loop${freeLoopIndex()}`));
  checks.push(await check('ext4', async () => {
    const filesystems = await fsp.readFile('/proc/filesystems', 'utf8');
    if (!/\text4\n/.test(filesystems)) throw new Error('ext4 is not registered in /proc/filesystems (load the ext4 module)');
    return 'ext4 registered';
  }));
  checks.push(await check('mkfs.ext4', async () => {
    const { stderr } = await execFileAsync('mkfs.ext4', ['-V'], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    const version = /mke2fs (\d+)\.(\d+)/.exec(stderr);
    if (version === null) throw new Error(`cannot read the mke2fs version from: ${stderr.trim()}`);
    const [major, minor] = [Number(version[1]), Number(version[2])];
    if (major < 1 || (major === 1 && minor < 47)) {
      throw new Error(`mke2fs ${major}.${minor} is too old: assume_storage_prezeroed needs e2fsprogs >= 1.47`);
    }
    return `mke2fs ${major}.${minor}`;
  }));
  if (checks.every((c) => c.ok)) {
    checks.push(await check('fscrypt-volume', probeVolume));
  } else {
    checks.push({ name: 'fscrypt-volume', ok: false, detail: 'skipped: fix the failed checks above first' });
  }
  return { ok: checks.every((c) => c.ok), checks };
}
