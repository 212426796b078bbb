/**
 * The users of an image: its /etc/passwd and /etc/group (tenant data, parsed leniently but bounded), the workload user
 * Cleanroom adds, and the uid a cell runs the image's workload as (its config's `User`).
 */
import { WORKLOAD_UID } from '../runtime/spec.js';
import { IMAGE_UID_RANGE } from '../../shared/images/format.js';

/** ImageUser is who an image's workload runs as inside its cells: never uid 0. */
export interface ImageUser {
  uid: number;
  gid: number;
  name: string;
}

/** AccountEntry is one line of passwd (name, uid, gid) or group (name, gid as uid). */
interface AccountEntry {
  name: string;
  id: number;
  gid: number;
}

function parseAccounts(text: string, idField: number, gidField: number): AccountEntry[] {
  const out: AccountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    const id = Number(f[idField]);
    const gid = Number(f[gidField]);
    if (f.length > gidField && f[0] && Number.isInteger(id) && Number.isInteger(gid)) out.push({ name: f[0], id, gid });
  }
  return out;
}

/** DEFAULT_USER is the workload user of every cell whose image names none (or names root). */
export const DEFAULT_USER: ImageUser = { uid: WORKLOAD_UID, gid: WORKLOAD_UID, name: 'workload' };

const validId = (n: number) => Number.isInteger(n) && n > 0 && n < IMAGE_UID_RANGE;

/**
 * resolveImageUser turns the image config's `User` (`name`, `uid`, `name:group`, `uid:gid`) into a uid and gid found
 * in the image's passwd (and group): a non-root user of the image (or a numeric uid) runs as itself; root, nothing, or a
 * name the image does not know runs as the workload user (WORKLOAD_UID). A gid of 0 is replaced by the user's own or WORKLOAD_UID's.
 */
export function resolveImageUser(user: string, passwd: string, group: string): ImageUser {
  const [u = '', g] = user.trim().split(':', 2);
  if (u === '') return DEFAULT_USER;
  const users = parseAccounts(passwd, 2, 3);
  const numeric = /^\d+$/.test(u) ? Number(u) : null;
  const found = numeric !== null ? users.find((e) => e.id === numeric) : users.find((e) => e.name === u);
  // A numeric uid runs as that uid even without a passwd entry (as OCI runtimes do); an unknown name cannot.
  const uid = found?.id ?? numeric;
  if (uid === null || !validId(uid)) return DEFAULT_USER;
  let gid = found?.gid ?? uid;
  if (g !== undefined && g !== '') {
    const groups = parseAccounts(group, 2, 2);
    const gg = /^\d+$/.test(g) ? Number(g) : groups.find((e) => e.name === g)?.id;
    if (gg !== undefined && validId(gg)) gid = gg;
  }
  return { uid, gid: validId(gid) ? gid : WORKLOAD_UID, name: found?.name ?? String(uid) };
}

/** withWorkloadUser returns passwd and group with the workload user (and its group) added when the image lacks uid/gid 1000. */
export function withWorkloadUser(passwd: string, group: string): { passwd: string; group: string } {
  const nl = (s: string) => (s === '' || s.endsWith('\n') ? s : `${s}\n`);
  const u = WORKLOAD_UID;
  const hasUser = parseAccounts(passwd, 2, 3).some((e) => e.id === u);
  const hasGroup = parseAccounts(group, 2, 2).some((e) => e.id === u);
  const rootLine = passwd === '' ? 'root:x:0:0:root:/root:/sbin/nologin\n' : '';
  const rootGroup = group === '' ? 'root:x:0:\n' : '';
  return {
    passwd: nl(passwd) + rootLine + (hasUser ? '' : `workload:x:${u}:${u}:workload:/work:/bin/sh\n`),
    group: nl(group) + rootGroup + (hasGroup ? '' : `workload:x:${u}:\n`),
  };
}
