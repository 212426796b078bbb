// The `store` config: SQLite by default, PostgreSQL by URL from the file or from CLEANROOM_STORE_URL (a secret).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/shared/config.js';
import { redactedUrl } from '../../src/control/store/postgres-store.js';

test('store: sqlite by default, postgres with a URL and a pool size, the URL from CLEANROOM_STORE_URL over the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-store-config-'));
  const path = join(dir, 'config.json');
  const load = (config: unknown, env: NodeJS.ProcessEnv = {}) => {
    writeFileSync(path, JSON.stringify(config));
    return loadConfig(path, env).store;
  };
  try {
    assert.deepEqual(load({}), { kind: 'sqlite' });
    assert.deepEqual(load({ store: { kind: 'postgres', url: 'postgres://u:p@db:5432/cr' } }), { kind: 'postgres', url: 'postgres://u:p@db:5432/cr', poolSize: 10 });
    assert.deepEqual(load({ store: { kind: 'postgres', url: 'postgresql://db/cr', poolSize: 3 } }), { kind: 'postgres', url: 'postgresql://db/cr', poolSize: 3 });
    const env = { CLEANROOM_STORE_URL: 'postgres://u:secret@db/cr' };
    assert.deepEqual(load({}, env), { kind: 'postgres', url: env.CLEANROOM_STORE_URL, poolSize: 10 }, 'the env alone selects PostgreSQL');
    assert.deepEqual(load({ store: { kind: 'postgres', url: 'postgres://other/x', poolSize: 4 } }, env), { kind: 'postgres', url: env.CLEANROOM_STORE_URL, poolSize: 4 });
    assert.throws(() => load({ store: { kind: 'sqlite' } }, env), /store\.kind is "sqlite" but CLEANROOM_STORE_URL is set/);
    assert.throws(() => load({ store: { kind: 'postgres' } }), /store\.url/);
    assert.throws(() => load({ store: { kind: 'postgres', url: 'mysql://u:pw@db/x' } }), (e: Error) => /store\.url: a postgres:\/\//.test(e.message) && !e.message.includes('pw'));
    assert.throws(() => load({ store: { kind: 'postgres', url: 'postgres://db/x', poolSize: 0 } }), /store\.poolSize/);
    assert.throws(() => load({ store: { kind: 'mysql' } }), /store\.kind/);
    assert.throws(() => load({ store: { kind: 'sqlite', url: 'postgres://db/x' } }), /url/, 'sqlite takes no URL');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a store URL is logged without its password', () => {
  assert.equal(redactedUrl('postgres://u:s3cret@db:5432/cr?sslmode=require'), 'postgres://u:***@db:5432/cr?sslmode=require');
  assert.equal(redactedUrl('postgres://db/cr'), 'postgres://db/cr');
  assert.equal(redactedUrl('not a url :pw@'), '(an unparsable URL)');
});
