/** Hands out a distinct host uid/gid range to each live cell, distinct across the agents of one host too. */
import { mkdirSync, readdirSync, readlinkSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { UID_RANGE_SIZE } from '../runtime/spec.js';

/** FIRST_HOST_UID is where cell ranges start: far above any host account, so host root is never mapped. */
const FIRST_HOST_UID = 1 << 24;
/** SLOTS is how many ranges fit between FIRST_HOST_UID and 2^31. */
const SLOTS = Math.floor((2 ** 31 - FIRST_HOST_UID) / UID_RANGE_SIZE);

/**
 * UID_CLAIMS_DIR holds one symlink per range in use on this host, named after its slot and pointing at the agent id that
 * holds it. Host uids are host-global: two agents on one host (each walking the slots from its own offset) would
 * otherwise, sooner or later, give two live cells the same host uids. A symlink is created atomically and exclusively.
 */
export const UID_CLAIMS_DIR = '/run/cleanroom/uid-claims';

/** UidClaims is where an allocator records its ranges for the other agents of the host, and under which id. */
export interface UidClaims {
  dir: string;
  agentId: string;
}

/** UidRanges allocates per-cell uid ranges; a range is in use by at most one live cell at a time. */
export class UidRanges {
  private readonly used = new Set<number>();
  private next: number;

  /**
   * Creates an allocator whose agent starts at slot `offset`. With claims, the ranges the agent's earlier run left
   * claimed are released first: construct it only once no cell of this agent is left (after reconcile).
   */
  constructor(
    offset = 0,
    private readonly claims: UidClaims | null = null,
  ) {
    this.next = offset % SLOTS;
    if (claims) {
      mkdirSync(claims.dir, { recursive: true, mode: 0o700 });
      releaseUidClaims(claims);
    }
  }

  /** acquire returns the base uid of a free range (free here, and not claimed by another agent of the host). */
  acquire(): number {
    for (let i = 0; i < SLOTS; i++) {
      const slot = (this.next + i) % SLOTS;
      if (this.used.has(slot) || !this.claim(slot)) continue;
      this.used.add(slot);
      this.next = (slot + 1) % SLOTS;
      return FIRST_HOST_UID + slot * UID_RANGE_SIZE;
    }
    throw new Error('no free uid range');
  }

  /** release frees the range starting at `base`. */
  release(base: number): void {
    const slot = (base - FIRST_HOST_UID) / UID_RANGE_SIZE;
    if (!this.used.delete(slot) || !this.claims) return;
    try {
      unlinkSync(join(this.claims.dir, String(slot)));
    } catch {
      // already gone
    }
  }

  private claim(slot: number): boolean {
    if (!this.claims) return true;
    try {
      symlinkSync(this.claims.agentId, join(this.claims.dir, String(slot)));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
  }
}

/** releaseUidClaims removes the claims an agent holds (its cells are gone: at start after reconcile, or in `down`). */
export function releaseUidClaims(claims: UidClaims): number {
  let n = 0;
  let names: string[];
  try {
    names = readdirSync(claims.dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    try {
      if (readlinkSync(join(claims.dir, name)) !== claims.agentId) continue;
      unlinkSync(join(claims.dir, name));
      n++;
    } catch {
      // another agent's, or gone meanwhile
    }
  }
  return n;
}
