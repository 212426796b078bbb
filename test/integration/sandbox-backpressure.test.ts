// Sandboxes at the agent level, backpressure: a process that writes faster than its client reads is slowed by its own
// pipe (the supervisor stops reading it), not buffered: the agent's and cell init's memory stay bounded, and the rest
// of the sandbox keeps working. Real agent, real runc/runsc cells. Requires root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TestCluster } from '../support/cluster.js';
import { SandboxControl } from '../support/sandbox-control.js';
import { CellCgroup } from '../../src/agent/cells/cgroup.js';
import { PROC_OUTPUT_RING_BYTES, PROC_STREAM_WINDOW_BYTES, type ProcInfo } from '../../src/shared/wire.js';

const MiB = 1024 * 1024;
let cluster: TestCluster;
let control: SandboxControl;

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }, { runtime: 'runsc', class: 'small', warm: 1 }] } } });
  await cluster.waitWarm();
  control = await SandboxControl.takeOver(cluster);
});

after(async () => {
  await control?.close();
  await cluster?.stop();
});

/** agentNodePid finds the agent's node process under its subreaper. */
function agentNodePid(): number {
  const wrapper = cluster.agentPid();
  const children = readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const node = children.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/agent/main.js'));
  assert.ok(node, 'the agent process');
  return node;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

async function listProc(jobId: string, procId: string): Promise<ProcInfo> {
  const requestId = randomUUID();
  control.send({ type: 'proc.list', jobId, requestId });
  const m = await control.waitFor((x) => x.type === 'proc.listed' && x.requestId === requestId);
  const p = m.type === 'proc.listed' ? m.procs.find((x) => x.procId === procId) : undefined;
  assert.ok(p, 'the process is listed');
  return p;
}

for (const runtime of ['runc', 'runsc'] as const) {
  test(`${runtime}: a flooding process blocks on its pipe while nothing acks; memory stays bounded; acks let it go on`, async () => {
    const { jobId, cellId } = await control.createSandbox(runtime);
    const agentPid = agentNodePid();
    const agentBefore = rssBytes(agentPid);
    const procId = `p_${randomUUID()}`;
    const streamId = `s_${randomUUID()}`;
    let received = 0;
    let acking = false;
    const stop = control.onMessage((m) => {
      if (m.type === 'proc.output' && m.streamId === streamId) {
        received += Buffer.from(m.data, 'base64').length;
        if (acking) control.send({ type: 'proc.ack', jobId, streamId, seq: received });
      }
    });
    control.send({ type: 'proc.start', jobId, procId, argv: ['cat', '/dev/zero'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: false, streamId });
    await control.waitFor((m) => m.type === 'proc.started' && m.procId === procId);
    await new Promise((r) => setTimeout(r, 2000));
    const a = await listProc(jobId, procId);
    await new Promise((r) => setTimeout(r, 2000));
    const b = await listProc(jobId, procId);
    assert.equal(b.running, true);
    assert.equal(b.nextSeq, a.nextSeq, `the process kept producing output nobody read: ${a.nextSeq} → ${b.nextSeq}`);
    // Paused at half a ring of lag past the window; what was on its way then still fits in the ring (nothing lost).
    assert.ok(b.nextSeq <= PROC_OUTPUT_RING_BYTES, `output held: ${b.nextSeq}`);
    assert.equal(b.firstSeq, 0, 'nothing was dropped from the ring');
    assert.ok(received <= PROC_STREAM_WINDOW_BYTES, `the stream got ${received} bytes without an ack`);
    // The rest of the sandbox is not held up by the blocked process.
    const echo = await control.exec(jobId, ['echo', 'still here']);
    assert.equal(echo.stdout, 'still here\n');
    const agentGrowth = rssBytes(agentPid) - agentBefore;
    assert.ok(agentGrowth < 32 * MiB, `the agent grew by ${agentGrowth} bytes`);
    if (runtime === 'runc') {
      const name = `cr-${cluster.agentId}-${cellId}`;
      const init = new CellCgroup(name).pids().find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('/.cr/init\0'));
      assert.ok(init, 'cell init found in the cell cgroup');
      const initRss = rssBytes(init);
      console.log(`${runtime}: cell init RSS ${initRss} bytes, agent growth ${agentGrowth} bytes while flooded`);
      assert.ok(initRss < 4 * MiB, `cell init holds ${initRss} bytes`);
    }
    // Acks let the output go on.
    acking = true;
    control.send({ type: 'proc.ack', jobId, streamId, seq: received });
    await control.waitFor(() => received > 8 * MiB, 30_000);
    acking = false; // (a flood at full speed keeps both ends busy; the listing below need not wait behind it)
    const c = await listProc(jobId, procId);
    assert.ok(c.nextSeq > b.nextSeq, 'the process runs again once acked');
    stop();
    control.send({ type: 'proc.signal', jobId, procId, signal: 9 });
    const exited = await control.waitFor((m) => m.type === 'proc.exited' && m.procId === procId);
    assert.ok(exited.type === 'proc.exited' && exited.signal === 9);
    await control.end(jobId);
  });
}
