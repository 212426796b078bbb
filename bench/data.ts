// bench/data.ts measures workload-token mint and verify (in process, real SQLite store) and the data service's throughput
// for a 100 MiB object, in and out: from the host through the API, and from inside a cell through its gateway.
// Usage: node dist/bench/data.js [iterations=500] [objectMiB=100]   (as root; writes bench/results/data.json)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SqliteStore } from '../src/control/store/sqlite-store.js';
import { AuditLog } from '../src/control/audit/audit-log.js';
import { Keyring } from '../src/control/data/keyring.js';
import { SigningKeys } from '../src/control/tokens/signing-keys.js';
import { TokenService } from '../src/control/tokens/token-service.js';
import { REPO_ROOT, TestCluster } from '../test/support/cluster.js';
import { describeMachine } from './machine.js';
import { summarize, type Stats } from './stats.js';

const iterations = Number(process.argv[2] ?? 500);
const objectMiB = Number(process.argv[3] ?? 100);

async function tokenCosts(): Promise<{ mint_ms: Stats; verify_ms: Stats }> {
  const dir = mkdtempSync('/tmp/cleanroom-bench-tokens-');
  const store = new SqliteStore(join(dir, 'db'));
  const keyring = new Keyring(store, randomBytes(32));
  const tokens = new TokenService(store, new SigningKeys(store, keyring, { rotationMs: 86_400_000, tokenTtlMs: 3_600_000, skewMs: 60_000 }), new AuditLog(store), { ttlSeconds: 3600, refreshAt: 0.8 });
  try {
    const mint: number[] = [];
    const verify: number[] = [];
    for (let i = 0; i < iterations + 20; i++) {
      const t0 = performance.now();
      const c = await tokens.mint({ jobId: `job_${i}`, workspaceId: 'ws_bench', dataGrants: [{ prefix: 'in/', access: 'read' }, { prefix: 'out/', access: 'read-write' }] });
      const t1 = performance.now();
      await tokens.verify(c.token);
      const t2 = performance.now();
      if (i >= 20) mint.push(t1 - t0), verify.push(t2 - t1);
    }
    return { mint_ms: summarize(mint), verify_ms: summarize(verify) };
  } finally {
    tokens.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** zeros streams `bytes` bytes in 1 MiB pieces without holding them. */
function zeros(bytes: number): Readable {
  const piece = randomBytes(1 << 20);
  let left = bytes;
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(left, piece.length);
      left -= n;
      this.push(piece.subarray(0, n));
    },
  });
}

const sink = () => new Writable({ write: (_c, _e, done) => done() });

async function hostThroughput(cluster: TestCluster, bytes: number): Promise<{ in_mib_s: number; out_mib_s: number }> {
  const t0 = performance.now();
  await cluster.client.putObject('bench/object.bin', zeros(bytes), bytes);
  const t1 = performance.now();
  await pipeline(await cluster.client.getObject('bench/object.bin'), sink());
  const t2 = performance.now();
  const mib = bytes / (1 << 20);
  return { in_mib_s: round1(mib / ((t1 - t0) / 1000)), out_mib_s: round1(mib / ((t2 - t1) / 1000)) };
}

// Inside a cell: the workload streams the object to and from https://data.cleanroom.internal with its token.
const CELL_SCRIPT = String.raw`
const fs = require('fs'), https = require('https'), crypto = require('crypto');
const bytes = Number(process.env.BYTES), ca = fs.readFileSync(process.env.CLEANROOM_CA_FILE);
const auth = { authorization: 'Bearer ' + fs.readFileSync(process.env.CLEANROOM_TOKEN_FILE, 'utf8') };
const url = process.env.CLEANROOM_DATA_URL + '/v1/data/objects/bench/cell.bin';
const piece = crypto.randomBytes(1 << 20);
(async () => {
  const t0 = performance.now();
  await new Promise((res, rej) => {
    const r = https.request(url, { method: 'PUT', ca, headers: { ...auth, 'content-length': bytes } }, (s) => { s.resume(); s.on('end', () => (s.statusCode === 201 ? res() : rej(new Error('PUT ' + s.statusCode)))); });
    r.on('error', rej);
    let left = bytes;
    const more = () => { while (left > 0) { const n = Math.min(left, piece.length); left -= n; if (!r.write(piece.subarray(0, n))) return void r.once('drain', more); } r.end(); };
    more();
  });
  const t1 = performance.now();
  let got = 0;
  await new Promise((res, rej) => https.get(url, { ca, headers: auth }, (s) => { s.on('data', (c) => (got += c.length)); s.on('end', res); s.on('error', rej); }).on('error', rej));
  const t2 = performance.now();
  if (got !== bytes) throw new Error('short read ' + got);
  console.log(JSON.stringify({ put_ms: t1 - t0, get_ms: t2 - t1 }));
})().catch((e) => { console.error(e.message); process.exit(1); });
`;

async function cellThroughput(cluster: TestCluster, bytes: number): Promise<{ in_mib_s: number; out_mib_s: number }> {
  const r = await cluster.runJob({ command: ['node', '-e', CELL_SCRIPT], env: { BYTES: String(bytes) }, data: [{ prefix: 'bench/', access: 'read-write' }], memoryMiB: 512, timeoutSeconds: 300 });
  if (r.job.status !== 'succeeded') throw new Error(`cell transfer failed: ${r.stderr}`);
  const t = JSON.parse(r.stdout) as { put_ms: number; get_ms: number };
  const mib = bytes / (1 << 20);
  return { in_mib_s: round1(mib / (t.put_ms / 1000)), out_mib_s: round1(mib / (t.get_ms / 1000)) };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

const tokens = await tokenCosts();
console.log(`token mint   p50 ${tokens.mint_ms.p50} ms  p95 ${tokens.mint_ms.p95}  (n=${tokens.mint_ms.n}, includes its SQLite record and audit event)`);
console.log(`token verify p50 ${tokens.verify_ms.p50} ms  p95 ${tokens.verify_ms.p95}  (signature, claims, revocation lookup)`);
const bytes = objectMiB * 1024 * 1024;
const cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] }, limits: { maxMemoryMiB: 2048 } } });
let host: { in_mib_s: number; out_mib_s: number }[] = [];
let cell: { in_mib_s: number; out_mib_s: number };
try {
  for (let i = 0; i < 3; i++) host.push(await hostThroughput(cluster, bytes));
  cell = await cellThroughput(cluster, bytes);
} finally {
  await cluster.stop();
}
host = host.sort((a, b) => a.in_mib_s - b.in_mib_s);
const median = host[1]!;
console.log(`data service, ${objectMiB} MiB from the host via the API: in ${median.in_mib_s} MiB/s, out ${median.out_mib_s} MiB/s (median of 3)`);
console.log(`data service, ${objectMiB} MiB from inside a cell via its gateway: in ${cell.in_mib_s} MiB/s, out ${cell.out_mib_s} MiB/s`);
const out = { date: new Date().toISOString(), machine: describeMachine(), tokens, object_mib: objectMiB, host_api: median, cell_gateway: cell };
writeFileSync(join(REPO_ROOT, 'bench/results/data.json'), JSON.stringify(out, null, 2) + '\n');
