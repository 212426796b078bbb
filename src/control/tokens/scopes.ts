/** Data scopes of a workload token: `data:read:<prefix>` and `data:write:<prefix>`, space-separated as in RFC 9068. */
import type { DataGrant } from '../model.js';
import { isUnder } from '../data/object-key.js';

/** DataAction is what a request does to the data store. */
export type DataAction = 'read' | 'write';

/** Scope is one parsed scope entry. */
export interface Scope {
  action: DataAction;
  prefix: string;
}

/** scopeString renders grants as the token's `scope` claim; read-write grants both actions. */
export function scopeString(grants: readonly DataGrant[]): string {
  return grants.flatMap((g) => (g.access === 'read' ? [`data:read:${g.prefix}`] : [`data:read:${g.prefix}`, `data:write:${g.prefix}`])).join(' ');
}

/** parseScopes reads a `scope` claim; unknown entries are ignored (they grant nothing). */
export function parseScopes(scope: string): Scope[] {
  const out: Scope[] = [];
  for (const entry of scope.split(' ')) {
    const m = /^data:(read|write):(.*)$/s.exec(entry);
    if (m) out.push({ action: m[1] as DataAction, prefix: m[2]! });
  }
  return out;
}

/** allows reports whether scopes permit `action` on `key` (for a listing, `key` is the listed prefix). */
export function allows(scopes: readonly Scope[], action: DataAction, key: string): boolean {
  return scopes.some((s) => s.action === action && isUnder(key, s.prefix));
}
