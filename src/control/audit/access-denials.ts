/**
 * AccessDenials writes refused requests (`access.denied`) to the audit log within a budget, so that nobody can fill the
 * never-pruned log by being refused: a token bucket per workspace, and one shared by callers we cannot attribute
 * (bad API keys, unverifiable tokens). Beyond a bucket, refusals are counted, and one `access.denied.suppressed` event
 * per window says how many of each reason went unrecorded: written when the window ends or, if sooner, just before the
 * next refusal that fits the budget.
 */
import type { AuditLog } from './audit-log.js';

/** DenialBudget is a token bucket: `burst` events at once, refilled at `perMinute`. */
export interface DenialBudget {
  burst: number;
  perMinute: number;
}

/** WORKSPACE_DENIAL_BUDGET bounds the refusals recorded per workspace (its keys, its workloads' tokens). */
export const WORKSPACE_DENIAL_BUDGET: DenialBudget = Object.freeze({ burst: 50, perMinute: 30 });
/** ANONYMOUS_DENIAL_BUDGET bounds the refusals recorded for callers of no known workspace, all together. */
export const ANONYMOUS_DENIAL_BUDGET: DenialBudget = Object.freeze({ burst: 100, perMinute: 60 });
/** SUPPRESSED_WINDOW_MS is the longest a count of unrecorded refusals waits for its summary event. */
export const SUPPRESSED_WINDOW_MS = 60_000;

/** AccessDenialsOptions: the two budgets, the summary window, and a clock (tests pass their own). */
export interface AccessDenialsOptions {
  workspace: DenialBudget;
  anonymous: DenialBudget;
  windowMs: number;
  now: () => number;
}

/** Denial is one refused request: who, in which workspace (null: unknown), on what, and why. */
export interface Denial {
  actor: string;
  workspaceId: string | null;
  subject: string | null;
  reason: string;
  details?: Record<string, unknown>;
}

interface Suppressed {
  count: number;
  reasons: Record<string, number>;
  since: number;
  until: number;
  timer: NodeJS.Timeout;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
  suppressed: Suppressed | null;
}

/** AccessDenials is the only writer of `access.denied` and `access.denied.suppressed` events. */
export class AccessDenials {
  private readonly buckets = new Map<string, Bucket>();
  private readonly opts: AccessDenialsOptions;

  constructor(
    private readonly audit: AuditLog,
    opts: Partial<AccessDenialsOptions> = {},
  ) {
    this.opts = { workspace: WORKSPACE_DENIAL_BUDGET, anonymous: ANONYMOUS_DENIAL_BUDGET, windowMs: SUPPRESSED_WINDOW_MS, now: Date.now, ...opts };
  }

  /** record writes the refusal if its workspace's budget (or the anonymous one) allows, and counts it otherwise. */
  async record(d: Denial): Promise<void> {
    const scope = d.workspaceId ?? '';
    const budget = d.workspaceId === null ? this.opts.anonymous : this.opts.workspace;
    const now = this.opts.now();
    let b = this.buckets.get(scope);
    if (!b) {
      b = { tokens: budget.burst, refilledAt: now, suppressed: null };
      this.buckets.set(scope, b);
    }
    b.tokens = Math.min(budget.burst, b.tokens + ((now - b.refilledAt) * budget.perMinute) / 60_000);
    b.refilledAt = now;
    if (b.tokens < 1) {
      this.suppress(scope, b, d.reason, now);
      return;
    }
    b.tokens -= 1;
    await this.summarise(scope, b);
    await this.audit.record({ type: 'access.denied', actor: d.actor, workspaceId: d.workspaceId, subject: d.subject, details: { reason: d.reason, ...d.details } });
  }

  /** flush writes every pending summary now (at shutdown, so that no count is lost). */
  async flush(): Promise<void> {
    for (const [scope, b] of this.buckets) await this.summarise(scope, b);
  }

  private suppress(scope: string, b: Bucket, reason: string, now: number): void {
    if (!b.suppressed) {
      const timer = setTimeout(() => void this.summarise(scope, b), this.opts.windowMs);
      timer.unref();
      b.suppressed = { count: 0, reasons: {}, since: now, until: now, timer };
    }
    const s = b.suppressed;
    s.count++;
    s.reasons[reason] = (s.reasons[reason] ?? 0) + 1;
    s.until = now;
  }

  private async summarise(scope: string, b: Bucket): Promise<void> {
    const s = b.suppressed;
    if (!s) return;
    b.suppressed = null;
    clearTimeout(s.timer);
    await this.audit.record({
      type: 'access.denied.suppressed',
      actor: 'system',
      workspaceId: scope === '' ? null : scope,
      subject: null,
      details: { count: s.count, reasons: s.reasons, since: new Date(s.since).toISOString(), until: new Date(s.until).toISOString() },
    });
  }
}
