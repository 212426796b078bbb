/**
 * envd's WatchDir, by polling: Cleanroom's in-cell side has no inotify channel, so the watcher lists the directory (its
 * subtree when recursive) every WATCH_POLL_MS through FileRelay — inside the cell, as the workload user, like every
 * file operation — and reports the differences as envd events: CREATE, REMOVE, WRITE (size or mtime changed) and
 * CHMOD. What polling cannot see: changes undone within one interval, and a rename is a REMOVE plus a CREATE. A poll
 * waits while the client's socket is full, and each watch is one of the workspace's live streams.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import type { FileStat } from '../../../shared/wire.js';
import type { FileRelay } from '../../sandboxes/file-relay.js';
import type { Quotas } from '../../quotas/quotas.js';
import { ConnectStream, keepaliveSeconds } from './connect-protocol.js';
import { ConnectError, connectError } from './e2b-errors.js';
import { entry, MAX_LIST_DEPTH, MAX_LIST_ENTRIES } from './envd-filesystem.js';
import type { EnvdTarget } from './envd-gateway.js';
import { homePath } from './envd-paths.js';

/** WATCH_POLL_MS is how often a watched directory is listed. */
export const WATCH_POLL_MS = 500;

type Snapshot = Map<string, FileStat>;

/** EnvdWatch serves filesystem.Filesystem/WatchDir. */
export class EnvdWatch {
  constructor(
    private readonly files: FileRelay,
    private readonly quotas: Quotas,
  ) {}

  /** watchDir streams `{start}`, then `{filesystem: {name, type, entry?}}` events (or keepalives) until the client leaves. */
  async watchDir(sb: EnvdTarget, body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (typeof body.path !== 'string' || body.path === '') throw new ConnectError('invalid_argument', 'path: a non-empty string');
    const root = homePath(body.path);
    const recursive = body.recursive === true;
    const includeEntry = body.includeEntry === true;
    const st = await this.files.simple(sb, 'stat', root).catch((e: unknown) => {
      throw connectError(e);
    });
    if (st.stat?.type !== 'directory') throw new ConnectError('invalid_argument', `path ${root} is not a directory`);
    let before = await this.snapshot(sb, root, recursive);
    const release = this.quotas.openStream(sb.workspace);
    const stream = new ConnectStream(res, { keepalive: {} }, keepaliveSeconds(req));
    res.once('close', release);
    stream.send({ start: {} });
    while (stream.open) {
      await new Promise((r) => setTimeout(r, WATCH_POLL_MS));
      if (!stream.open) break;
      let after: Snapshot;
      try {
        after = await this.snapshot(sb, root, recursive);
      } catch (e) {
        return stream.end(connectError(e)); // the directory went away, or the sandbox ended
      }
      for (const [name, type, s] of diff(before, after)) {
        const event = { name, type, ...(includeEntry && s ? { entry: entry(posix.join(root, name), s) } : {}) };
        if (!stream.send({ filesystem: event })) await new Promise<void>((r) => stream.onDrain(r));
      }
      before = after;
    }
  }

  /** snapshot lists `root` (and its subtree when recursive), by path relative to root, at most MAX_LIST_ENTRIES entries. */
  private async snapshot(sb: EnvdTarget, root: string, recursive: boolean): Promise<Snapshot> {
    const out: Snapshot = new Map();
    const walk = async (rel: string, level: number): Promise<void> => {
      const r = await this.files.simple(sb, 'list', rel ? posix.join(root, rel) : root);
      for (const s of r.entries ?? []) {
        if (out.size >= MAX_LIST_ENTRIES) return;
        const name = rel ? `${rel}/${s.name}` : s.name;
        out.set(name, s);
        if (recursive && s.type === 'directory' && level < MAX_LIST_DEPTH) {
          await walk(name, level + 1).catch(() => {}); // removed between the two lists: seen as a REMOVE next time
        }
      }
    };
    await walk('', 1);
    return out;
  }
}

/** diff lists the changes from one snapshot to the next as envd event types. */
function diff(before: Snapshot, after: Snapshot): Array<[string, string, FileStat | null]> {
  const out: Array<[string, string, FileStat | null]> = [];
  for (const [name, s] of after) {
    const old = before.get(name);
    if (!old || old.type !== s.type) out.push([name, 'EVENT_TYPE_CREATE', s]);
    else if (old.size !== s.size || old.mtimeMs !== s.mtimeMs) out.push([name, 'EVENT_TYPE_WRITE', s]);
    else if (old.mode !== s.mode) out.push([name, 'EVENT_TYPE_CHMOD', s]);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push([name, 'EVENT_TYPE_REMOVE', null]);
  return out;
}
