/** newJob is the record of a workload being admitted: what a create (single or batch) stores before placement. */
import { pooledRandomBytes } from '../data/random-pool.js';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { JobImageChoice } from '../images/image-service.js';
import type { Job, SandboxFields, Workspace, WorkloadMode } from '../model.js';
import type { ResolvedJob } from './job-request.js';

/**
 * newJob builds a new, queued workload record of a resolved request: a job (`job_…`) or a sandbox (`sbx_…`, with its
 * fields), on `chosen`'s image (null: the host root), under the egress policy given.
 */
export function newJob(ws: Workspace, r: ResolvedJob, egress: EgressPolicy, chosen: JobImageChoice, mode: WorkloadMode = 'job', sandbox?: SandboxFields): Job {
  return {
    id: `${mode === 'sandbox' ? 'sbx' : 'job'}_${pooledRandomBytes(10).toString('hex')}`,
    workspaceId: ws.id,
    status: 'queued',
    ...r,
    createdAt: new Date().toISOString(),
    startedAt: null,
    endedAt: null,
    exitCode: null,
    signal: null,
    message: null,
    cancelRequested: false,
    agentId: null,
    cellId: null,
    timings: {},
    wipe: null,
    egress,
    expiredAt: null,
    outputDroppedBytes: 0,
    image: chosen ? { digest: chosen.record.digest!, ...numericUser(chosen.record.manifest?.config.user ?? '') } : null,
    imageRef: chosen?.ref ?? null,
    ...(mode === 'sandbox' ? { mode, sandbox } : {}),
  };
}

/** numericUser reads an image's User when it is numeric ("uid" or "uid:gid"); names are the agent's to resolve (null). */
export function numericUser(user: string): { uid: number | null; gid: number | null } {
  const m = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(user);
  const id = (s: string | undefined) => (s !== undefined && Number(s) < 65536 ? Number(s) : null);
  return m ? { uid: id(m[1]), gid: id(m[2]) } : { uid: null, gid: null };
}
