/** Builds the read-only root filesystem every cell shares: host /usr plus a small synthetic /etc. */
import { copyFileSync, cpSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { CELL_CA_FILE, CELL_FILES_DIR, WORKLOAD_UID } from './spec.js';

const MERGED_USR_LINKS = { bin: 'usr/bin', sbin: 'usr/sbin', lib: 'usr/lib', lib64: 'usr/lib64' };

/** buildRootfs (re)creates `dir` as the cells' root: mount points, /usr links, synthetic /etc, the platform CA and cell init. */
export function buildRootfs(dir: string, cellInitBinary: string, platformCa: string): void {
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['usr', 'proc', 'dev', 'sys', 'tmp', 'work', '.cr', 'etc/ssl/certs', 'etc/cleanroom', CELL_FILES_DIR.slice(1)]) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  for (const [name, target] of Object.entries(MERGED_USR_LINKS)) symlinkSync(target, join(dir, name));
  const etc = join(dir, 'etc');
  const u = WORKLOAD_UID;
  writeFileSync(join(etc, 'passwd'), `root:x:0:0:root:/root:/usr/sbin/nologin\nworkload:x:${u}:${u}:workload:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`);
  writeFileSync(join(etc, 'group'), `root:x:0:\nworkload:x:${u}:\nnogroup:x:65534:\n`);
  // Per-cell facts (the gateway's address for platform names, the resolver) are written by cell init at assignment.
  symlinkSync(`${CELL_FILES_DIR}/hosts`, join(etc, 'hosts'));
  symlinkSync(`${CELL_FILES_DIR}/resolv.conf`, join(etc, 'resolv.conf'));
  writeFileSync(join(etc, 'hostname'), 'cell\n');
  writeFileSync(join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
  writeFileSync(join(dir, CELL_CA_FILE), platformCa);
  // Library paths and command alternatives are host facts, not secrets; programs need them to start.
  for (const f of ['ld.so.cache', 'ld.so.conf']) if (existsSync(`/etc/${f}`)) copyFileSync(`/etc/${f}`, join(etc, f));
  if (existsSync('/etc/alternatives')) cpSync('/etc/alternatives', join(etc, 'alternatives'), { recursive: true, verbatimSymlinks: true });
  const caBundle = '/etc/ssl/certs/ca-certificates.crt';
  if (existsSync(caBundle)) copyFileSync(caBundle, join(etc, 'ssl/certs/ca-certificates.crt'));
  copyFileSync(cellInitBinary, join(dir, '.cr/init'));
  chmodSync(join(dir, '.cr/init'), 0o755);
}
