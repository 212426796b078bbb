/** TokenService mints, verifies, refreshes and revokes workload tokens (RFC 9068 JWT access tokens, EdDSA). */
import { randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { ApiError } from '../../shared/errors.js';
import type { WorkloadCredentials } from '../../shared/wire.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { DataGrant, TokenRecord } from '../model.js';
import type { Store } from '../store/store.js';
import { signEdDsaJwt } from './jws.js';
import { parseScopes, scopeString, type Scope } from './scopes.js';
import type { SigningKeys } from './signing-keys.js';

/** TOKEN_ISSUER names the control plane in `iss`; TOKEN_AUDIENCE names the data service in `aud`. */
export const TOKEN_ISSUER = 'cleanroom-control';
/** TOKEN_AUDIENCE is the only audience the data service accepts. */
export const TOKEN_AUDIENCE = 'cleanroom-data';
/** MAX_TOKEN_LIFETIME_S is the ceiling on `exp - iat`; a longer-lived token is refused even if validly signed. */
export const MAX_TOKEN_LIFETIME_S = 3600;
/** CLOCK_SKEW_S is the clock difference tolerated when checking `exp` and `iat`. */
export const CLOCK_SKEW_S = 60;

const REFRESH_RETRY_MS = 5000;

/** TokenSubject is the workload a token is for. */
export interface TokenSubject {
  jobId: string;
  workspaceId: string;
  dataGrants: readonly DataGrant[];
}

/** WorkloadIdentity is what a verified token proves. */
export interface WorkloadIdentity {
  jobId: string;
  workspaceId: string;
  jti: string;
  scopes: Scope[];
}

/**
 * TokenRefused is a refusal of a token whose signature verified: its workspace and job claims are ours, so the refusal
 * can be charged to that workspace (its audit events, its denial budget). Clients see only the code and message.
 */
export class TokenRefused extends ApiError {
  constructor(
    code: 'invalid_token' | 'token_expired' | 'token_revoked',
    message: string,
    readonly workload: { jobId: string; workspaceId: string },
  ) {
    super(code, message);
  }
}

/** TokenServiceOptions: lifetime and when (fraction of it) running workloads get a fresh token. */
export interface TokenServiceOptions {
  ttlSeconds: number;
  refreshAt: number;
}

/** TokenService is the only place tokens are made or judged. */
export class TokenService {
  private readonly refreshTimers = new Map<string, NodeJS.Timeout>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly store: Store,
    private readonly keys: SigningKeys,
    private readonly audit: AuditLog,
    private readonly options: TokenServiceOptions,
  ) {
    // Records of expired tokens can go: an expired token fails on `exp` before its record is looked at.
    this.sweeper = setInterval(() => this.store.deleteTokensExpiredBefore(new Date(Date.now() - 2 * CLOCK_SKEW_S * 1000).toISOString()).catch(() => {}), 600_000); // a failed sweep is retried at the next
    this.sweeper.unref();
  }

  /**
   * mint signs a fresh token for a workload and records its id (not the token). `handOver`, if given, receives the
   * credentials once the record is written (its audit event is written alongside, not waited for by the hand-over) and
   * `after`, if given, has resolved true: a caller with other writes to finish before the workload may run (its job's
   * own row) makes them while the token is stored instead of before. `after` false: nothing is handed over; rejected:
   * neither, and mint rejects once the record is written (the caller revokes it). `record`, if given, stores the
   * token's record instead of Store.addToken (a caller that writes its job's row in the same statement).
   */
  async mint(
    s: TokenSubject,
    kind: 'minted' | 'refreshed' = 'minted',
    handOver?: (c: WorkloadCredentials) => void,
    after?: Promise<boolean>,
    record: (t: TokenRecord) => Promise<void> = (t) => this.store.addToken(t),
  ): Promise<WorkloadCredentials> {
    after?.catch(() => {}); // its rejection is heard once the record is written (below): never unhandled meanwhile
    const key = await this.keys.current();
    const iat = Math.floor(Date.now() / 1000);
    const exp = iat + Math.min(this.options.ttlSeconds, MAX_TOKEN_LIFETIME_S);
    const jti = randomUUID();
    const scope = scopeString(s.dataGrants);
    const token = signEdDsaJwt(
      { typ: 'at+jwt', kid: key.kid },
      { iss: TOKEN_ISSUER, sub: s.jobId, aud: TOKEN_AUDIENCE, iat, exp, jti, ws: s.workspaceId, scope, client_id: 'cleanroom-workload' },
      key.privateKey,
    );
    const expiresAt = new Date(exp * 1000).toISOString();
    // Stored before it is handed over: on a shared (PostgreSQL) store the write is a round trip, and a workload must
    // never present a token that a data service (of any replica) cannot find yet.
    // Its audit event is written at the same time (the chain's order is the store's; record never throws): the hand-over
    // waits only for the token's record.
    const stored = record({ jti, jobId: s.jobId, workspaceId: s.workspaceId, issuedAt: new Date(iat * 1000).toISOString(), expiresAt, revokedAt: null })
      .then(() => after ?? true)
      .then((go) => {
        if (go) handOver?.({ token, expiresAt });
      });
    const audited = this.audit.record({ type: kind === 'minted' ? 'token.minted' : 'token.refreshed', actor: 'system', workspaceId: s.workspaceId, subject: s.jobId, details: { jti, kid: key.kid, expiresAt, scope } });
    await Promise.all([stored, audited]);
    return { token, expiresAt };
  }

  /** verify checks signature, type, issuer, audience, lifetime, expiry (with skew) and revocation; throws a 401 ApiError. */
  async verify(token: string): Promise<WorkloadIdentity> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        token,
        async (header) => {
          const k = header.kid ? await this.keys.verificationKey(header.kid) : null;
          if (!k) throw new ApiError('invalid_token', 'the token is signed by a key this service does not know');
          return k;
        },
        { issuer: TOKEN_ISSUER, audience: TOKEN_AUDIENCE, typ: 'at+jwt', algorithms: ['EdDSA'], clockTolerance: CLOCK_SKEW_S, requiredClaims: ['exp', 'iat', 'jti', 'sub'] },
      ));
    } catch (e) {
      throw tokenError(e);
    }
    const { sub, jti, exp, iat, ws, scope } = payload as JWTPayload & { ws?: unknown; scope?: unknown };
    if (typeof ws !== 'string' || typeof scope !== 'string' || typeof jti !== 'string' || typeof sub !== 'string') {
      throw new ApiError('invalid_token', 'the token lacks its workspace or scope claims');
    }
    const workload = { jobId: sub, workspaceId: ws };
    if (exp! - iat! > MAX_TOKEN_LIFETIME_S) throw new TokenRefused('invalid_token', 'the token claims a lifetime longer than one hour', workload);
    if (iat! > Date.now() / 1000 + CLOCK_SKEW_S) throw new TokenRefused('invalid_token', 'the token was issued in the future', workload);
    const record = await this.store.getToken(jti);
    if (!record || record.jobId !== sub || record.workspaceId !== ws) throw new TokenRefused('invalid_token', 'this service never issued that token', workload);
    if (record.revokedAt) throw new TokenRefused('token_revoked', `the token was revoked at ${record.revokedAt}: its workload has ended`, workload);
    return { jobId: sub, workspaceId: ws, jti, scopes: parseScopes(scope) };
  }

  /**
   * keepFresh re-mints the workload's token at `refreshAt` of its lifetime (or after `delayMs`), and hands each new one to
   * `deliver`. `live`, if given, is asked before each refresh and again once the new token is stored: a workload that
   * ended (on any replica: this one's end stops the refresh at once, another's may be heard late or never) gets no new
   * token, and one minted while it ended is revoked with the workload's others.
   */
  keepFresh(
    s: TokenSubject,
    deliver: (c: WorkloadCredentials) => void,
    delayMs = Math.min(this.options.ttlSeconds, MAX_TOKEN_LIFETIME_S) * this.options.refreshAt * 1000,
    live?: () => Promise<boolean>,
  ): void {
    this.stopRefresh(s.jobId);
    const current = () => this.refreshTimers.get(s.jobId) === timer;
    const refresh = async (): Promise<void> => {
      if (live && !(await live())) return void (current() && this.stopRefresh(s.jobId));
      if (!current()) return;
      const c = await this.mint(s, 'refreshed');
      if (live && !(await live())) return this.revokeJob(s.jobId, s.workspaceId, 'the workload ended while its token was refreshed');
      if (!current()) return; // stopped meanwhile (the workload ended here, or its refresh was started again)
      deliver(c);
      this.keepFresh(s, deliver, undefined, live);
    };
    const timer = setTimeout(() => {
      // The store was busy or closing: try again soon, well before the current token expires.
      refresh().catch(() => current() && this.keepFresh(s, deliver, REFRESH_RETRY_MS, live));
    }, delayMs);
    timer.unref();
    this.refreshTimers.set(s.jobId, timer);
  }

  /** revokeJob kills every token of a workload at once; each revocation is audited. */
  async revokeJob(jobId: string, workspaceId: string, why: string): Promise<void> {
    this.stopRefresh(jobId);
    const at = new Date().toISOString();
    for (const jti of await this.store.revokeTokensOfJob(jobId, at)) {
      await this.audit.record({ type: 'token.revoked', actor: 'system', workspaceId, subject: jobId, details: { jti, why } });
    }
  }

  /** jwks returns the public keys tokens are checked against. */
  jwks(): ReturnType<SigningKeys['jwks']> {
    return this.keys.jwks();
  }

  /** close stops timers. */
  close(): void {
    clearInterval(this.sweeper);
    for (const t of this.refreshTimers.values()) clearTimeout(t);
    this.refreshTimers.clear();
  }

  /** stopRefresh stops keeping a workload's token fresh (it ended; its tokens are revoked by whoever ended it). */
  stopRefresh(jobId: string): void {
    clearTimeout(this.refreshTimers.get(jobId));
    this.refreshTimers.delete(jobId);
  }
}

function tokenError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  // jose checks the signature before the claims: a claim failure carries a payload we signed.
  const claims = e instanceof joseErrors.JWTClaimValidationFailed || e instanceof joseErrors.JWTExpired ? (e.payload as { sub?: unknown; ws?: unknown }) : null;
  const workload = typeof claims?.sub === 'string' && typeof claims.ws === 'string' ? { jobId: claims.sub, workspaceId: claims.ws } : null;
  const refuse = (code: 'invalid_token' | 'token_expired', message: string) => (workload ? new TokenRefused(code, message, workload) : new ApiError(code, message));
  if (e instanceof joseErrors.JWTExpired) return refuse('token_expired', 'the token has expired; read the token file again for the refreshed one');
  if (e instanceof joseErrors.JWTClaimValidationFailed) return refuse('invalid_token', `the token's "${e.claim}" claim is not acceptable here (${e.reason})`);
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return new ApiError('invalid_token', 'the token signature does not verify');
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return new ApiError('invalid_token', 'the token is not signed with EdDSA');
  return new ApiError('invalid_token', 'the token is malformed (expected a signed JWT access token)');
}
