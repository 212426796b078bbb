// TokenService with a real SQLite store: what verify accepts and refuses, with the reason users see; key rotation and JWKS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
import { SqliteStore } from '../../../src/control/store/sqlite-store.js';
import { AuditLog } from '../../../src/control/audit/audit-log.js';
import { Keyring } from '../../../src/control/data/keyring.js';
import { SigningKeys } from '../../../src/control/tokens/signing-keys.js';
import { TokenService, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../../src/control/tokens/token-service.js';
import { ApiError } from '../../../src/shared/errors.js';

let dir: string;
let store: SqliteStore;
let keyring: Keyring;
let keys: SigningKeys;
let tokens: TokenService;
const subject = { jobId: 'job_1', workspaceId: 'ws_1', dataGrants: [{ prefix: 'in/', access: 'read' as const }] };

before(() => {
  dir = mkdtempSync('/tmp/cleanroom-tokens-');
  store = new SqliteStore(join(dir, 'db'));
  keyring = new Keyring(store, randomBytes(32));
  keys = new SigningKeys(store, keyring, { rotationMs: 3600_000, tokenTtlMs: 600_000, skewMs: 60_000 });
  tokens = new TokenService(store, keys, new AuditLog(store), { ttlSeconds: 600, refreshAt: 0.8 });
});
after(async () => {
  tokens.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function refusal(token: string): Promise<string> {
  try {
    await tokens.verify(token);
  } catch (e) {
    assert.ok(e instanceof ApiError, `not an ApiError: ${String(e)}`);
    assert.equal(e.status, 401);
    return e.code;
  }
  assert.fail('the token was accepted');
}

/** signed makes a token with the service's own current key: only the claims differ from a minted one. */
async function signed(claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  const k = await keys.current();
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ws: 'ws_1', scope: 'data:read:in/', iss: TOKEN_ISSUER, aud: TOKEN_AUDIENCE, sub: 'job_1', jti: 'x', iat: now, exp: now + 60, ...claims })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: k.kid, ...header })
    .sign(k.privateKey);
}

test('a minted token verifies to its workload, workspace and scopes', async () => {
  const c = await tokens.mint(subject);
  const id = await tokens.verify(c.token);
  assert.equal(id.jobId, 'job_1');
  assert.equal(id.workspaceId, 'ws_1');
  assert.deepEqual(id.scopes, [{ action: 'read', prefix: 'in/' }]);
  const claims = decodeJwt(c.token);
  assert.equal(claims.exp! - claims.iat!, 600);
  assert.deepEqual(Object.keys(decodeProtectedHeader(c.token)).sort(), ['alg', 'kid', 'typ']);
  assert.equal(decodeProtectedHeader(c.token).typ, 'at+jwt');
  assert.equal(decodeProtectedHeader(c.token).alg, 'EdDSA');
});

test('revocation kills every token of the job at once', async () => {
  const s = { ...subject, jobId: 'job_rev' };
  const [a, b] = [await tokens.mint(s), await tokens.mint(s, 'refreshed')];
  await tokens.revokeJob('job_rev', 'ws_1', 'ended');
  assert.equal(await refusal(a.token), 'token_revoked');
  assert.equal(await refusal(b.token), 'token_revoked');
});

test('refusals: expired beyond the skew, longer than an hour, wrong audience or issuer or type, never issued, tampered', async () => {
  const now = Math.floor(Date.now() / 1000);
  assert.equal(await refusal(await signed({ iat: now - 400, exp: now - 61 })), 'token_expired');
  assert.equal(await refusal(await signed({ exp: now + 3601 })), 'invalid_token');
  assert.equal(await refusal(await signed({ aud: 'cleanroom-control' })), 'invalid_token');
  assert.equal(await refusal(await signed({ iss: 'someone-else' })), 'invalid_token');
  assert.equal(await refusal(await signed({}, { typ: 'JWT' })), 'invalid_token');
  assert.equal(await refusal(await signed({ jti: 'never-issued' })), 'invalid_token');
  const good = (await tokens.mint(subject)).token;
  const [h, p, s] = good.split('.');
  const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
  const widened = Buffer.from(JSON.stringify({ ...claims, scope: 'data:write:' })).toString('base64url');
  assert.equal(await refusal(`${h}.${widened}.${s}`), 'invalid_token');
  assert.equal(await refusal('a.b'), 'invalid_token');
});

test('within the skew, a just-expired token still verifies', async () => {
  const c = await tokens.mint(subject);
  const claims = decodeJwt(c.token);
  // Re-sign the same record's claims with exp 30 s ago (inside the 60 s skew).
  const now = Math.floor(Date.now() / 1000);
  const t = await signed({ ...claims, iat: now - 90, exp: now - 30 });
  assert.equal((await tokens.verify(t)).jobId, 'job_1');
});

test('rotation: a new key signs, the old one still verifies its tokens, JWKS lists both', async () => {
  const before = await tokens.mint(subject);
  const k1 = (await keys.current()).kid;
  // Another replica (same store, same KEK) that rotates every millisecond.
  const fast = new SigningKeys(store, keyring, { rotationMs: 1, tokenTtlMs: 600_000, skewMs: 60_000 });
  await new Promise((r) => setTimeout(r, 5));
  const k2 = (await fast.current()).kid;
  assert.notEqual(k1, k2);
  const jwks = await fast.jwks();
  const kids = new Set(jwks.keys.map((k) => k.kid));
  assert.ok(kids.has(k1) && kids.has(k2), `JWKS lacks a live key: ${[...kids].join(', ')}`);
  for (const k of jwks.keys) assert.equal((k as { d?: string }).d, undefined, 'a private key part is published');
  assert.equal((await tokens.verify(before.token)).jobId, 'job_1', 'a token of the previous key stopped verifying');
});

test("the keyring keeps its own copy of the KEK: zeroing the caller's buffer does not weaken what it wraps", () => {
  const kek = randomBytes(32);
  const same = Buffer.from(kek);
  const ring = new Keyring(store, kek);
  kek.fill(0); // what the control plane does right after start-up
  const secret = randomBytes(32);
  const wrapped = ring.wrap(secret, 'ctx');
  assert.deepEqual(new Keyring(store, same).unwrap(wrapped, 'ctx'), secret);
  assert.throws(() => new Keyring(store, Buffer.alloc(32)).unwrap(wrapped, 'ctx'), 'wrapped under an all-zero key');
});

test('a refresh asks whether the workload still runs: none for one that ended, and one minted as it ended is revoked', async () => {
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const events = async (jobId: string) => (await store.listAudit({ limit: 100, order: 'asc' })).filter((e) => e.subject === jobId).map((e) => e.type);
  // Ended before the refresh (elsewhere: nothing here stopped it): no token minted, none delivered, the refresh stops.
  const ended = { ...subject, jobId: 'job_refresh_ended' };
  const delivered: string[] = [];
  let asked = 0;
  tokens.keepFresh(ended, (c) => delivered.push(c.token), 10, async () => (asked++, false));
  await wait(200);
  assert.equal(asked, 1, 'asked once, and not again');
  assert.equal(delivered.length, 0, 'nothing was delivered');
  assert.deepEqual(await events(ended.jobId), [], 'no token was minted');
  // Ended while its token was minted: the new token is not delivered, and it is revoked.
  const racing = { ...subject, jobId: 'job_refresh_racing' };
  const answers = [true, false];
  tokens.keepFresh(racing, (c) => delivered.push(c.token), 10, async () => answers.shift() ?? false);
  const deadline = Date.now() + 5000;
  while ((await events(racing.jobId)).length < 2 && Date.now() < deadline) await wait(20);
  await wait(100);
  assert.deepEqual(await events(racing.jobId), ['token.refreshed', 'token.revoked']);
  assert.equal(delivered.length, 0, 'nothing was delivered');
  assert.deepEqual(await store.revokeTokensOfJob(racing.jobId, new Date().toISOString()), [], 'no token of it is left unrevoked');
});
