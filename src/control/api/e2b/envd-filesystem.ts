/**
 * envd's `filesystem.Filesystem` service over FileRelay: Stat, ListDir (with depth), MakeDir, Move, Remove (WatchDir is
 * envd-watch.ts). Every operation runs inside the cell as the workload user (FileRelay's guarantee).
 */
import { posix } from 'node:path';
import { ApiError } from '../../../shared/errors.js';
import type { FileStat } from '../../../shared/wire.js';
import type { FileRelay } from '../../sandboxes/file-relay.js';
import type { LiveSandbox } from '../../sandboxes/sandbox-service.js';
import { ConnectError, connectError } from './e2b-errors.js';
import { homePath } from './envd-paths.js';

/** MAX_LIST_ENTRIES bounds one ListDir answer across all depths. */
export const MAX_LIST_ENTRIES = 10_000;
/** MAX_LIST_DEPTH bounds how deep ListDir descends. */
export const MAX_LIST_DEPTH = 16;

type Json = Record<string, unknown>;

/** EnvdFilesystemService answers the filesystem.Filesystem methods for one resolved sandbox. */
export class EnvdFilesystemService {
  constructor(private readonly files: FileRelay) {}

  /** stat answers {entry}. */
  async stat(sb: LiveSandbox, body: Json): Promise<Json> {
    const path = homePath(str(body.path, 'path'));
    return { entry: entry(path, await this.statOf(sb, path)) };
  }

  /** listDir answers the entries of a directory, descending `depth` levels (1: the directory itself). */
  async listDir(sb: LiveSandbox, body: Json): Promise<Json> {
    const root = homePath(str(body.path, 'path'));
    const depth = Math.min(MAX_LIST_DEPTH, Math.max(1, Number(body.depth) || 1));
    const st = await this.statOf(sb, root);
    if (st.type !== 'directory') throw new ConnectError('invalid_argument', `path ${root} is not a directory`);
    const out: Json[] = [];
    const walk = async (dir: string, level: number): Promise<void> => {
      // Below the first level, a directory that vanished or may not be read is skipped, as `find` would go on.
      const r = await this.files.simple(sb, 'list', dir).catch((e: unknown) => {
        if (level > 1) return { entries: [] };
        throw connectError(e);
      });
      for (const s of r.entries ?? []) {
        if (out.length >= MAX_LIST_ENTRIES) return;
        const p = posix.join(dir, s.name);
        if (s.type !== 'other') out.push(entry(p, s));
        if (s.type === 'directory' && level < depth) await walk(p, level + 1);
      }
    };
    await walk(root, 1);
    return { entries: out };
  }

  /** makeDir makes a directory with its parents; an existing path is already_exists (the SDK answers false). */
  async makeDir(sb: LiveSandbox, body: Json): Promise<Json> {
    const path = homePath(str(body.path, 'path'));
    const existing = await this.files.simple(sb, 'stat', path).catch((e: unknown) => {
      if (e instanceof ApiError && e.code === 'not_found') return null;
      throw connectError(e);
    });
    if (existing) throw new ConnectError('already_exists', `${path} already exists`);
    await this.files.simple(sb, 'mkdir', path).catch((e: unknown) => {
      throw connectError(e);
    });
    return { entry: entry(path, await this.statOf(sb, path)) };
  }

  /** move renames a file or directory. */
  async move(sb: LiveSandbox, body: Json): Promise<Json> {
    const from = homePath(str(body.source, 'source'));
    const to = homePath(str(body.destination, 'destination'));
    await this.files.simple(sb, 'rename', from, { to }).catch((e: unknown) => {
      throw connectError(e);
    });
    return { entry: entry(to, await this.statOf(sb, to)) };
  }

  /** remove removes a file or a directory with its contents. */
  async remove(sb: LiveSandbox, body: Json): Promise<Json> {
    const path = homePath(str(body.path, 'path'));
    await this.files.simple(sb, 'remove', path, { recursive: true }).catch((e: unknown) => {
      throw connectError(e);
    });
    return {};
  }

  private async statOf(sb: LiveSandbox, path: string): Promise<FileStat> {
    const r = await this.files.simple(sb, 'stat', path).catch((e: unknown) => {
      throw connectError(e);
    });
    if (!r.stat) throw new ConnectError('internal', 'the sandbox answered without a stat');
    return r.stat;
  }
}

const TYPES: Record<FileStat['type'], string> = { file: 'FILE_TYPE_FILE', directory: 'FILE_TYPE_DIRECTORY', symlink: 'FILE_TYPE_SYMLINK', other: 'FILE_TYPE_UNSPECIFIED' };

/** entry is envd's EntryInfo for a stat. */
export function entry(path: string, s: FileStat): Json {
  return {
    name: posix.basename(path) || s.name,
    path,
    type: TYPES[s.type],
    size: String(s.size),
    mode: s.mode,
    permissions: permissions(s),
    owner: '',
    group: '',
    modifiedTime: new Date(s.mtimeMs).toISOString(),
  };
}

/** permissions renders the mode as `ls -l` does (drwxr-xr-x). */
function permissions(s: FileStat): string {
  const kind = s.type === 'directory' ? 'd' : s.type === 'symlink' ? 'l' : '-';
  let out = kind;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (s.mode >> shift) & 7;
    out += (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (b & 1 ? 'x' : '-');
  }
  return out;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw new ConnectError('invalid_argument', `${what}: a non-empty string`);
  return v;
}
