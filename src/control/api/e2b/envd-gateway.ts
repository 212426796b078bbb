/**
 * EnvdGateway finds the sandbox an envd request is for and checks its access token. The sandbox is named by the
 * `E2b-Sandbox-Id` header (the SDK sends it on every call when E2B_SANDBOX_URL is set), or by a Host of the form
 * `49983-<id>.<domain>`. A signed upload/download URL carries neither when E2B_SANDBOX_URL is used: its signature is
 * then matched against the running sandboxes' tokens (cost linear in the running sandboxes, one HMAC and one SHA-256 each).
 * Unknown sandbox and wrong token get the same answer, so the gateway is no oracle for sandbox ids.
 */
import type { IncomingMessage } from 'node:http';
import { ApiError } from '../../../shared/errors.js';
import { isTerminal } from '../../jobs/job-service.js';
import type { Job, Workspace } from '../../model.js';
import type { Quotas } from '../../quotas/quotas.js';
import type { LiveSandbox, SandboxService } from '../../sandboxes/sandbox-service.js';
import type { Store } from '../../store/store.js';
import { ConnectError } from './e2b-errors.js';
import type { EnvdTokens, FileOperation } from './envd-tokens.js';

/** ENVD_PORT is the port e2b's envd listens on, the first label of the Host form. */
export const ENVD_PORT = 49983;

/** RUNNING_CACHE_MS: the running sandboxes that signed URLs are matched against are re-read at most this often, so that
 *  unauthenticated requests cannot make the store read every sandbox on each of them. */
const RUNNING_CACHE_MS = 250;
/** RECHECK_MS: a signature that matches none of a cached list re-reads it if that list is at least this old. */
const RECHECK_MS = 50;

const HOST_FORM = new RegExp(`^${ENVD_PORT}-([A-Za-z0-9_-]{1,100})\\.`);

/** SignedRequest is what a signed URL claims: the operation on a path, for a user. */
export interface SignedRequest {
  path: string;
  operation: FileOperation;
  user: string;
  signature: string;
  expiration: string | null;
}

/** EnvdTarget is the running sandbox an envd request acts on, with its workspace (for quotas). */
export interface EnvdTarget extends LiveSandbox {
  workspace: Workspace;
}

/** EnvdGateway resolves and authorizes envd requests. */
export class EnvdGateway {
  private running: { at: number; jobs: Promise<Job[]> } | null = null;
  constructor(
    private readonly store: Store,
    private readonly sandboxes: SandboxService,
    private readonly tokens: EnvdTokens,
    private readonly quotas: Quotas,
  ) {}

  /** sandboxIdOf reads the sandbox id of a request (header first, then Host); null if it names none. */
  sandboxIdOf(req: IncomingMessage): string | null {
    return envdSandboxIdOf(req);
  }

  /** isEnvdRequest says whether a request is meant for envd (it names a sandbox). */
  isEnvdRequest(req: IncomingMessage): boolean {
    return this.sandboxIdOf(req) !== null;
  }

  /**
   * resolve returns the running sandbox a request may act on, or throws unauthenticated / unavailable (not running).
   * Like any authenticated request, it spends one of the workspace's request budget (429 past it).
   */
  async resolve(req: IncomingMessage, signed?: SignedRequest): Promise<EnvdTarget> {
    const id = this.sandboxIdOf(req);
    const token = req.headers['x-access-token'];
    let job: Job | null = null;
    if (id !== null) {
      const j = await this.store.getJob(id);
      if (j && j.mode === 'sandbox') {
        const ok = typeof token === 'string' ? await this.tokens.check(j, token) : signed ? await this.tokens.checkSignature(j, signed) : false;
        if (ok) job = j;
      }
    } else if (signed) {
      job = await this.bySignature(signed);
    }
    if (!job) throw new ConnectError('unauthenticated', 'unknown sandbox, or a wrong access token (X-Access-Token) or URL signature');
    if (isTerminal(job)) throw new ConnectError('unavailable', `sandbox ${job.id} is not running: it has ended (${job.status})`);
    const ws = await this.store.getWorkspace(job.workspaceId);
    if (!ws) throw new ConnectError('unauthenticated', 'unknown sandbox');
    this.quotas.takeRequest(ws);
    try {
      return { ...(await this.sandboxes.live(ws, job.id)), workspace: ws };
    } catch (e) {
      if (e instanceof ApiError && e.code === 'sandbox_not_running') throw new ConnectError('unavailable', e.message);
      throw e;
    }
  }

  private async bySignature(signed: SignedRequest): Promise<Job | null> {
    const read = () => (this.running = { at: Date.now(), jobs: this.store.jobsWithStatus(['running']).then((js) => js.filter((j) => j.mode === 'sandbox')) });
    const age = () => (this.running === null ? Infinity : Date.now() - this.running.at);
    let refreshed = false;
    if (age() >= RUNNING_CACHE_MS) (read(), (refreshed = true));
    for (;;) {
      for (const j of await this.running!.jobs) if (await this.tokens.checkSignature(j, signed)) return j;
      // A sandbox started since the last read: read again, once, and no more often than every RECHECK_MS.
      if (refreshed || age() < RECHECK_MS) return null;
      read();
      refreshed = true;
    }
  }

}

/** envdSandboxIdOf reads the sandbox id an envd request names (E2b-Sandbox-Id header first, then Host); null if none. */
export function envdSandboxIdOf(req: IncomingMessage): string | null {
  const h = req.headers['e2b-sandbox-id'];
  if (typeof h === 'string' && h !== '') return h;
  const host = req.headers.host ?? '';
  return HOST_FORM.exec(host)?.[1] ?? null;
}
