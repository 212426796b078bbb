// Output is bounded end to end: a per-job limit past which output is dropped and the job says so; a paged logs
// endpoint; and a firehose followed by a slow client grows neither the control plane nor the agent (the live stream
// catches up from the store; agent → control is held back by the channel's backpressure).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ config: { limits: { maxOutputMiB: 2 }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
});
after(async () => {
  await cluster?.stop();
});

test('output past the job limit is dropped and counted; the kept output is exact', async () => {
  const r = await cluster.runJob({ command: ['sh', '-c', 'head -c 3145728 /dev/zero | tr "\\0" a; echo done >&2'] });
  assert.equal(r.job.status, 'succeeded');
  const kept = r.stdout.length + r.stderr.length;
  assert.equal(kept, 2 * 1024 * 1024, 'exactly the limit is kept');
  assert.equal(r.job.outputDroppedBytes, 3 * 1024 * 1024 + 5 - 2 * 1024 * 1024);
  assert.match(r.stdout, /^a+$/);
});

test('the logs endpoint is paged: a page holds at most its limit and nextAfter leads to the rest', async () => {
  const r = await cluster.runJob({ command: ['sh', '-c', 'for i in $(seq 1 40); do echo line $i; sleep 0.01; done'] });
  assert.equal(r.job.status, 'succeeded');
  const page = await cluster.client.logsPage(r.job.id, 0, 5);
  assert.equal(page.chunks.length, 5);
  assert.equal(page.complete, false);
  assert.equal(page.nextAfter, page.chunks.at(-1)!.seq);
  const all = await cluster.client.logs(r.job.id);
  assert.equal(all.complete, true);
  assert.equal(Buffer.concat(all.chunks.map((c) => c.data)).toString(), r.stdout);
  const bad = await cluster.client.logsPage(r.job.id, 0, 100_000).then(
    () => assert.fail('a page beyond the maximum was accepted'),
    (e: { status: number; code: string }) => e,
  );
  assert.deepEqual([bad.status, bad.code], [400, 'invalid_request']);
});

test('a firehose followed by a slow client does not grow the control plane or the agent; every byte arrives', async () => {
  const slow = await TestCluster.start({ config: { limits: { maxOutputMiB: 512 }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
  try {
    const control = Number(readFileSync(join(slow.dataDir, 'run', 'control.pid'), 'utf8'));
    const wrapper = slow.agentPid();
    // The agent is the child of its subreaper that runs agent/main.js (orphaned cell processes are children too).
    const children = readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/).map(Number);
    const agent = children.find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('agent/main.js'))!;
    assert.ok(agent > 0, 'found the agent process');
    const rss = (pid: number) => {
      try {
        return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
      } catch {
        return Number.NaN; // gone: the checks below say so
      }
    };
    const base = { control: rss(control), agent: rss(agent) };
    // Large enough that holding it would show (its base64 alone is 427 MiB), beside what garbage collection lets float.
    const total = 320 * 1024 * 1024;
    const job = await slow.client.createJob({ command: ['sh', '-c', `head -c ${total} /dev/zero; echo end`], timeoutSeconds: 300 });
    // Follow the live stream but read nothing for 8 s: the job must be held back, not buffered.
    let received = 0;
    let peak = { control: 0, agent: 0 };
    const done = new Promise<string>((resolve, reject) => {
      const req = request(`${slow.url}/v1/jobs/${job.id}/logs?follow=true`, { ca: slow.ca, headers: { authorization: `Bearer ${slow.apiKey}` } }, (res) => {
        res.pause();
        let tail = '';
        const sample = setInterval(() => (peak = { control: Math.max(peak.control, rss(control)), agent: Math.max(peak.agent, rss(agent)) }), 200);
        setTimeout(() => {
          res.on('data', (d: Buffer) => {
            received += d.length;
            tail = (tail + d.toString('latin1')).slice(-4096);
          });
          res.resume();
        }, 8000);
        res.on('end', () => {
          clearInterval(sample);
          resolve(tail);
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    // The job does not wait for this reader (its output is stored, sealed, up to its limit); what must not happen is
    // the control plane or the agent holding the unread output in memory.
    const tail = await done;
    assert.ok(Number.isFinite(rss(control)) && Number.isFinite(rss(agent)), 'the control plane and the agent are still running');
    assert.match(tail, /event: end/);
    const ended = await slow.client.getJob(job.id);
    assert.equal(ended.status, 'succeeded', `${ended.status}: ${ended.message}`);
    assert.equal(ended.outputDroppedBytes, 0);
    // SSE carries base64: the client received all of it (about 4/3 of the bytes), in order (checked by seq in the SDK tests).
    assert.ok(received > (total * 4) / 3, `received ${received} bytes of events for ${total} bytes of output`);
    const growth = { control: peak.control - base.control, agent: peak.agent - base.agent };
    assert.ok(growth.control < 256, `control plane RSS grew by ${growth.control.toFixed(0)} MiB for a ${total >> 20} MiB firehose`);
    assert.ok(growth.agent < 256, `agent RSS grew by ${growth.agent.toFixed(0)} MiB for a ${total >> 20} MiB firehose`);
    process.stdout.write(`# firehose ${total >> 20} MiB, slow reader: RSS growth control ${growth.control.toFixed(0)} MiB, agent ${growth.agent.toFixed(0)} MiB\n`);
  } finally {
    await slow.stop();
  }
});
