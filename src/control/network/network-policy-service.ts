/** NetworkPolicyService owns each workspace's egress policy and the record of connections it denied. */
import { ApiError } from '../../shared/errors.js';
import { validateEgressPolicy, type EgressPolicy } from '../../shared/net/egress-policy.js';
import { cidrOf } from '../../shared/net/ipv4.js';
import { CELL_POOL_CIDR } from '../../shared/net/pool.js';
import type { DeniedConnection } from '../../shared/wire.js';
import { DEFAULT_EGRESS_POLICY, type DeniedConnectionRecord, type Workspace } from '../model.js';
import type { DeniedQuery, Store } from '../store/store.js';
import type { AuditLog } from '../audit/audit-log.js';

const POOL = cidrOf(CELL_POOL_CIDR);

/** LAST_READ_KEPT bounds the policies kept for policyNow (a few hundred bytes each). */
const LAST_READ_KEPT = 10_000;

/** NetworkPolicyService is the only writer of egress policies and denied-connection records. */
export class NetworkPolicyService {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    /** onDenied sees each denied connection that was kept, by workspace (the metrics count them). */
    private readonly onDenied: (workspaceId: string) => void = () => {},
  ) {}

  /** The policy last read of each workspace (policyNow's first answer): bounded by LAST_READ_KEPT. */
  private readonly lastRead = new Map<string, EgressPolicy>();

  /** policyOf returns the policy in force for a workspace: its own, or deny-all if it never set one. */
  async policyOf(workspaceId: string): Promise<EgressPolicy> {
    const policy = (await this.store.getEgressPolicy(workspaceId)) ?? DEFAULT_EGRESS_POLICY;
    if (this.lastRead.size >= LAST_READ_KEPT && !this.lastRead.has(workspaceId)) this.lastRead.clear();
    this.lastRead.set(workspaceId, policy);
    return policy;
  }

  /**
   * policyNow is for a start that should not wait for the store's read (a round trip on PostgreSQL): the policy this
   * replica last read for the workspace (null if none), and the read of the policy in force now. Policies change on
   * any replica, so `last` is only a guess: the caller must not let a workload run before `current` has agreed with it.
   */
  policyNow(workspaceId: string): { last: EgressPolicy | null; current: Promise<EgressPolicy> } {
    return { last: this.lastRead.get(workspaceId) ?? null, current: this.policyOf(workspaceId) };
  }

  /** set validates and stores a new policy for the workspace; on bad input (422 invalid_policy) the previous one stays. */
  async set(ws: Workspace, input: unknown, actor: string): Promise<EgressPolicy> {
    const r = validateEgressPolicy(input, { poolCidr: POOL });
    if (!r.ok) {
      const { code, path, message } = r.error;
      throw new ApiError('invalid_policy', `${path || 'policy'}: ${message} (the previous policy stays in force)`, { code, path });
    }
    await this.store.setEgressPolicy(ws.id, r.policy);
    this.lastRead.set(ws.id, r.policy);
    await this.audit.record({ type: 'policy.changed', actor, workspaceId: ws.id, subject: 'egress', details: { allow: r.policy.allow.length, dryRun: r.policy.dryRun } });
    return r.policy;
  }

  /**
   * recordDenied stores an agent's records under their job's workspace; records of unknown jobs, and of jobs that are not
   * the agent's own, are dropped. Returns how many were kept.
   */
  async recordDenied(agentId: string, records: readonly DeniedConnection[]): Promise<number> {
    const workspaceOf = new Map<string, string | null>();
    const kept: DeniedConnectionRecord[] = [];
    for (const r of records) {
      if (!isDeniedConnection(r) || r.jobId === null) continue;
      if (!workspaceOf.has(r.jobId)) {
        const job = await this.store.getJob(r.jobId);
        workspaceOf.set(r.jobId, job && job.agentId === agentId ? job.workspaceId : null);
      }
      const workspaceId = workspaceOf.get(r.jobId);
      if (!workspaceId) continue;
      kept.push({ workspaceId, jobId: r.jobId, cellId: r.cellId, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port, time: r.time });
    }
    if (kept.length) await this.store.addDeniedConnections(kept);
    for (const r of kept) this.onDenied(r.workspaceId);
    return kept.length;
  }

  /** listDenied returns the workspace's denied connections, newest first; naming another workspace's job is 404. */
  async listDenied(ws: Workspace, q: DeniedQuery): Promise<DeniedConnectionRecord[]> {
    if (q.jobId !== undefined) {
      const job = await this.store.getJob(q.jobId);
      if (!job || job.workspaceId !== ws.id) throw new ApiError('not_found', `no job ${q.jobId} in this workspace`);
    }
    return this.store.listDeniedConnections(ws.id, q);
  }
}

// The agent is trusted, but what it reports was observed from hostile cells: a malformed record is dropped, not stored.
function isDeniedConnection(r: DeniedConnection): boolean {
  const s = (v: unknown, max: number) => typeof v === 'string' && v.length > 0 && v.length <= max;
  return (
    typeof r === 'object' &&
    r !== null &&
    (r.jobId === null || s(r.jobId, 100)) &&
    s(r.cellId, 100) &&
    (r.action === 'denied' || r.action === 'dry-run') &&
    s(r.destination, 64) &&
    s(r.protocol, 16) &&
    (r.port === null || (Number.isInteger(r.port) && r.port >= 0 && r.port <= 65535)) &&
    s(r.time, 40) &&
    !Number.isNaN(Date.parse(r.time))
  );
}
