// The agent's libuv thread pool holds its blocking kernel calls (src/agent/thread-pool-size.ts): its size must reach Node
// through the environment it starts with, since the ES module loader sizes the pool before any module's code runs. The
// agent `cleanroom up` starts has the pool it is meant to have, and says nothing about it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { AGENT_THREAD_POOL_SIZE, threadPoolWarning } from '../../src/agent/thread-pool-size.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

test('the agent started by `up` runs with its thread pool (threads counted from /proc) and logs no pool warning', () => {
  const wrapper = cluster.agentPid();
  const children = readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  const agent = children.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((a) => a.endsWith('/agent/main.js')));
  assert.ok(agent, `the agent's node process under ${wrapper}`);
  const env = readFileSync(`/proc/${agent}/environ`, 'utf8').split('\0');
  assert.ok(env.includes(`UV_THREADPOOL_SIZE=${AGENT_THREAD_POOL_SIZE}`), 'started with the pool size in its environment');
  // Node's own threads are about 7 (main, V8 platform workers, inspector, signal); a pool of 4 makes about 11 in all.
  const threads = readdirSync(`/proc/${agent}/task`).length;
  assert.ok(threads >= AGENT_THREAD_POOL_SIZE + 4, `${threads} threads: the pool of ${AGENT_THREAD_POOL_SIZE} was not started`);
  assert.doesNotMatch(readFileSync(join(cluster.dataDir, 'run', 'agent.log'), 'utf8'), /thread pool has/);
});

test('the agent warns when it was started without its pool size', () => {
  assert.equal(threadPoolWarning({ UV_THREADPOOL_SIZE: String(AGENT_THREAD_POOL_SIZE) }), null);
  assert.equal(threadPoolWarning({ UV_THREADPOOL_SIZE: '64' }), null);
  assert.match(threadPoolWarning({}) ?? '', /4 threads.*UV_THREADPOOL_SIZE=16/);
});
