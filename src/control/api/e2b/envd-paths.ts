/** Paths as envd takes them: absolute, or relative to the user's home, which in a Cleanroom sandbox is /work. */
import { posix } from 'node:path';
import { ConnectError } from './e2b-errors.js';

/** HOME is the workload user's home in a Cleanroom sandbox (e2b's is /home/user). */
export const HOME = '/work';

/** homePath resolves a path against HOME (`~` and relative paths), refusing NUL bytes and over-long paths. */
export function homePath(p: string): string {
  if (p.includes('\0') || Buffer.byteLength(p) > 4096) throw new ConnectError('invalid_argument', 'path: at most 4096 bytes, without NUL');
  const rel = p === '~' ? '' : p.startsWith('~/') ? p.slice(2) : p;
  return posix.resolve(HOME, rel);
}
