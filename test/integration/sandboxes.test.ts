// Sandboxes end to end through the public API, the SDK and the CLI, against a real cluster (real agent, real cells).
// Needs the agent's sandbox side (branch h-sbx-agent); written against Contract C in src/shared/wire.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Readable } from 'node:stream';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import { CleanroomClient, CleanroomError } from '../../src/sdk/client.js';
import { Sandbox } from '../../src/sdk/sandbox.js';
import { CLI, TestCluster } from '../support/cluster.js';

const run = promisify(execFile);
let cluster: TestCluster;
let client: CleanroomClient;
before(async () => {
  cluster = await TestCluster.start({ config: { limits: { maxTimeoutSeconds: 86_400 } } });
  client = cluster.client;
});
after(async () => {
  await cluster?.stop();
});

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof CleanroomError ? e.code : String(e);
  }
};

test('lifecycle: create answers ready, get, list by metadata with paging, timeout change, delete with a receipt', async () => {
  const tag = `t${Date.now()}`;
  const boxes = await Promise.all([1, 2, 3].map((i) => Sandbox.create({ metadata: { suite: tag, n: String(i) } }, client)));
  for (const b of boxes) assert.equal(b.info.state, 'running');
  const page1 = await Sandbox.list({ metadata: { suite: tag }, limit: 2 }, client);
  assert.equal(page1.sandboxes.length, 2);
  assert.ok(page1.next);
  const page2 = await Sandbox.list({ metadata: { suite: tag }, limit: 2, next: page1.next }, client);
  assert.equal(page2.sandboxes.length, 1);
  const one = await Sandbox.list({ metadata: { suite: tag, n: '2' } }, client);
  assert.deepEqual(one.sandboxes.map((s) => s.id), [boxes[1]!.id]);
  const moved = await boxes[0]!.setTimeout(3600);
  assert.ok(Date.parse(moved.endsAt!) > Date.now() + 3500_000);
  for (const b of boxes) {
    const ended = await b.kill();
    assert.equal(ended.state, 'ended');
    assert.equal(ended.endReason, 'deleted');
  }
  const deadline = Date.now() + 20_000;
  while (!(await boxes[0]!.refresh()).wipe && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(boxes[0]!.info.wipe?.keyStateAfterRemoval, 'absent');
});

test('a timeout ends a sandbox; an idle timeout ends it, but a background process keeps it alive', async () => {
  const short = await Sandbox.create({ timeoutSeconds: 2 }, client);
  const idle = await Sandbox.create({ idleTimeoutSeconds: 2 }, client);
  const busy = await Sandbox.create({ idleTimeoutSeconds: 2 }, client);
  // The busy one's process outlives the test (a loaded host may take seconds to get through the checks below).
  await busy.start(['sleep', '120']);
  const started = Date.now();
  // The ended ones are polled (their timers run out at 2 s; a loaded host may take longer to record it).
  const deadline = started + 30_000;
  while ((await short.refresh()).state !== 'ended' || (await idle.refresh()).state !== 'ended') {
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(short.info.endReason, 'timeout');
  assert.equal(idle.info.endReason, 'idle');
  // Well past its idle timeout, the busy one still runs.
  await new Promise((r) => setTimeout(r, Math.max(0, started + 4500 - Date.now())));
  assert.equal((await busy.refresh()).state, 'running');
  await busy.kill();
});

test('exec streams stdout and stderr in order with exit codes; resume from a seq; stdin; signals', async () => {
  const sb = await Sandbox.create({}, client);
  const r = await sb.exec('for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 3');
  assert.equal(r.exitCode, 3);
  assert.equal(r.stdout, 'out1\nout2\nout3\n');
  assert.equal(r.stderr, 'err1\nerr2\nerr3\n');
  // Resume: read from offset 5 of a finished process.
  const seqs: number[] = [];
  let tail = '';
  await sb.attach(r.procId, { onStdout: (d, seq) => (seqs.push(seq), (tail += d.toString())), onStderr: (d) => (tail += d.toString()) }, 5);
  assert.ok(seqs[0]! >= 5);
  // stdin
  const cat = await sb.start(['cat'], { stdin: true });
  await sb.sendStdin(cat.procId, 'hello\n', true);
  let echoed = '';
  await sb.attach(cat.procId, { onStdout: (d) => (echoed += d.toString()) });
  assert.equal(echoed, 'hello\n');
  assert.equal(await code(sb.sendStdin(cat.procId, 'late')), 'process_ended');
  // signal
  const sleeper = await sb.start(['sleep', '60']);
  await sb.signal(sleeper.procId, 'SIGTERM');
  const exit = await sb.attach(sleeper.procId, {});
  assert.equal(exit.signal, 15);
  await sb.kill();
  // exec into an ended sandbox: 409 at once
  const t0 = Date.now();
  assert.equal(await code(sb.exec(['true'])), 'sandbox_not_running');
  assert.ok(Date.now() - t0 < 2000);
});

test('a client that goes away never stops its process, nor holds it back', async () => {
  const sb = await Sandbox.create({}, client);
  // A run-and-wait stream dropped after its first bytes: 20 MB follow, far past the agent's ring and the stream's window.
  await new Promise<void>((resolve) => {
    const req = httpsRequest(new URL(sb.path('/processes?wait=true'), cluster.url), { method: 'POST', headers: { ...client.headers(), 'content-type': 'application/json' }, ca: cluster.ca }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => resolve());
    req.end(JSON.stringify({ shell: 'head -c 20000000 /dev/zero; echo done > /work/done' }));
  });
  const deadline = Date.now() + 20_000;
  while (!(await sb.files.exists('/work/done'))) {
    assert.ok(Date.now() < deadline, 'the process did not finish after its client went away');
    await new Promise((r) => setTimeout(r, 200));
  }
  await sb.kill();
});

test('a gVisor (runsc) sandbox: exec, stdin, a file round trip', async () => {
  const sb = await Sandbox.create({ runtime: 'runsc' }, client);
  assert.equal(sb.info.runtime, 'runsc');
  const r = await sb.exec('echo in-gvisor; exit 2');
  assert.deepEqual([r.stdout, r.exitCode], ['in-gvisor\n', 2]);
  const cat = await sb.start(['cat'], { stdin: true });
  await sb.sendStdin(cat.procId, 'piped\n', true);
  let echoed = '';
  await sb.attach(cat.procId, { onStdout: (d) => (echoed += d.toString()) });
  assert.equal(echoed, 'piped\n');
  const data = Buffer.alloc(300_000, 3);
  await sb.files.write('/work/g.bin', data);
  assert.ok((await sb.files.read('/work/g.bin')).equals(data));
  await sb.kill();
});

test('another workspace sees none of it', async () => {
  const sb = await Sandbox.create({}, client);
  const ws = await client.createWorkspace({ name: `other-${Date.now()}` });
  const key = await client.createApiKey({ workspace: ws.name, name: 'k' });
  const other = new CleanroomClient({ url: cluster.url, apiKey: key.key, ca: cluster.ca });
  assert.equal(await code(Sandbox.connect(sb.id, other)), 'not_found');
  assert.equal(await code(other.call('POST', `/v1/sandboxes/${sb.id}/processes`, { cmd: ['id'] })), 'not_found');
  assert.equal(await code(other.call('GET', `/v1/sandboxes/${sb.id}/files/list?path=/work`)), 'not_found');
  other.close();
  await sb.kill();
});

test('files: 1 MiB and 50 MB round trips, list, stat, mkdir, rename, remove; a full volume is no_space and the sandbox survives', async () => {
  const sb = await Sandbox.create({ diskMiB: 256 }, client);
  const small = Buffer.alloc(1024 * 1024, 7);
  await sb.files.write('/work/a.bin', small);
  assert.ok((await sb.files.read('/work/a.bin')).equals(small));
  const big = Buffer.alloc(50 * 1000 * 1000);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  await sb.files.write('/work/big.bin', Readable.from([big]));
  assert.ok((await sb.files.read('/work/big.bin')).equals(big));
  await sb.files.mkdir('/work/d/e/f');
  await sb.files.rename('/work/a.bin', '/work/d/a.bin');
  assert.equal((await sb.files.stat('/work/d/a.bin')).size, small.length);
  assert.ok((await sb.files.list('/work/d')).some((e) => e.name === 'a.bin'));
  await sb.files.remove('/work/d', true);
  assert.equal(await sb.files.exists('/work/d'), false);
  const oneGiB = Readable.from((function* () {
    for (let i = 0; i < 1024; i++) yield Buffer.alloc(1024 * 1024, i);
  })());
  assert.equal(await code(sb.files.write('/work/huge.bin', oneGiB)), 'no_space');
  const after = await sb.exec(['echo', 'alive']);
  assert.equal(after.stdout, 'alive\n');
  await sb.kill();
});

test('a process writing faster than its client reads is slowed by backpressure, not buffered by the control plane', async () => {
  const sb = await Sandbox.create({}, client);
  const p = await sb.start(['sh', '-c', 'head -c 2000000000 /dev/zero']);
  const controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
  const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${controlPid}/status`, 'utf8'))?.[1] ?? 0);
  const before = rssKiB();
  // A client that attaches and then does not read: its socket fills, the control plane stops acknowledging, the agent's
  // window closes, the supervisor stops reading the pipe, and the process blocks in write().
  const u = new URL(sb.path(`/processes/${p.procId}/output?fromSeq=0`), cluster.url);
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = httpsRequest(u, { headers: client.headers(), ca: cluster.ca }, resolve);
    req.on('error', reject);
    req.end();
  });
  res.pause();
  await new Promise((r) => setTimeout(r, 3000));
  const a = (await sb.processes()).find((x) => x.procId === p.procId)!;
  await new Promise((r) => setTimeout(r, 2000));
  const b = (await sb.processes()).find((x) => x.procId === p.procId)!;
  assert.ok(b.running, 'the writer is still running (blocked, not finished)');
  assert.ok(b.nextSeq - a.nextSeq < 4 * 1024 * 1024, `the writer went on: ${a.nextSeq} → ${b.nextSeq} bytes`);
  assert.ok(b.nextSeq < 200 * 1024 * 1024, `the writer wrote ${b.nextSeq} bytes with nobody reading`);
  const grown = rssKiB() - before;
  assert.ok(grown < 64 * 1024, `the control plane grew by ${grown} KiB`);
  res.destroy();
  await sb.signal(p.procId, 'SIGKILL');
  await sb.kill();
});

test('a control-plane restart leaves the sandbox running, and the client resumes its stream where it was', async () => {
  // Its idle limit is shorter than the process: the process, started before the restart, still counts as activity after it.
  const sb = await Sandbox.create({ idleTimeoutSeconds: 3 }, client);
  const p = await sb.start(['sh', '-c', 'for i in $(seq 1 60); do echo line$i; sleep 0.1; done']);
  let text = '';
  let killed = false;
  const done = sb.attach(p.procId, {
    onStdout: (d) => {
      text += d.toString();
      if (!killed && text.includes('line5\n')) {
        killed = true;
        process.kill(Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8')), 'SIGKILL');
        void run(process.execPath, [CLI, 'up', '--detach', '--data-dir', cluster.dataDir], { env: cluster.env, timeout: 120_000 });
      }
    },
  }, 0, 30);
  const exit = await done;
  assert.ok(killed);
  assert.equal(exit.exitCode, 0);
  assert.equal(text, Array.from({ length: 60 }, (_, i) => `line${i + 1}\n`).join(''));
  assert.equal((await sb.refresh()).state, 'running');
  await sb.kill();
});

test('an agent restart ends its sandboxes as error with receipts', async () => {
  const sb = await Sandbox.create({}, client);
  await cluster.killAgent();
  await run(process.execPath, [CLI, 'up', '--detach', '--data-dir', cluster.dataDir], { env: cluster.env, timeout: 120_000 });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && !((await sb.refresh()).state === 'ended' && sb.info.wipe)) await new Promise((r) => setTimeout(r, 200));
  assert.equal(sb.info.endReason, 'error');
  assert.ok(sb.info.wipe);
});

test('the CLI: sandbox create, ls, get, exec (output and exit code), cp both ways, kill; jobs ls does not list sandboxes', async () => {
  const created = await cluster.cli(['sandbox', 'create', '-m', 'cli=yes', '--timeout', '2m']);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  assert.match(id, /^sbx_[0-9a-f]+$/);
  const ls = await cluster.cli(['sandbox', 'ls', '-m', 'cli=yes', '--json']);
  assert.deepEqual((JSON.parse(ls.stdout) as Array<{ id: string }>).map((s) => s.id), [id]);
  assert.match((await cluster.cli(['sandbox', 'get', id])).stdout, /state\s+running/);
  const ex = await cluster.cli(['sandbox', 'exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 4']);
  assert.deepEqual([ex.code, ex.stdout, ex.stderr], [4, 'out\n', 'err\n']);
  const local = join(cluster.dataDir, 'cp-test.txt');
  writeFileSync(local, 'copied in\n');
  assert.equal((await cluster.cli(['sandbox', 'cp', local, `${id}:/work/in.txt`])).code, 0);
  const back = await cluster.cli(['sandbox', 'cp', `${id}:/work/in.txt`, '-']);
  assert.equal(back.stdout, 'copied in\n');
  const jobs = await cluster.cli(['jobs', 'ls', '--json']);
  assert.ok(!(JSON.parse(jobs.stdout) as Array<{ id: string }>).some((j) => j.id === id));
  const killed = await cluster.cli(['sandbox', 'kill', id]);
  assert.match(killed.stdout, /ended \(deleted\)/);
  const after = await cluster.cli(['sandbox', 'exec', id, '--', 'true']);
  assert.equal(after.code, 1);
  assert.match(after.stderr, /sandbox_not_running/);
});

test('cleanroom sandbox shell is a real terminal in tmux: typed command, resize, exit', async () => {
  const sb = await Sandbox.create({}, client);
  const session = `cr-sbx-${process.pid}`;
  const env = Object.entries(cluster.env).filter(([k]) => k.startsWith('CLEANROOM_')).map(([k, v]) => `${k}=${v}`);
  await run('tmux', ['new-session', '-d', '-s', session, '-x', '100', '-y', '30', 'env', ...env, process.execPath, CLI, 'sandbox', 'shell', sb.id]);
  const screen = async () => (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout;
  const waitFor = async (re: RegExp) => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const s = await screen();
      if (re.test(s)) return s;
      if (Date.now() > deadline) throw new Error(`not on screen: ${re}\n${s}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    await run('tmux', ['send-keys', '-t', session, 'echo hi-$((6*7))', 'Enter']);
    await waitFor(/hi-42/);
    await run('tmux', ['send-keys', '-t', session, 'stty size', 'Enter']);
    await waitFor(/30 100/);
    await run('tmux', ['resize-window', '-t', session, '-x', '120', '-y', '40']);
    await new Promise((r) => setTimeout(r, 500));
    await run('tmux', ['send-keys', '-t', session, 'stty size', 'Enter']);
    await waitFor(/40 120/);
    await run('tmux', ['send-keys', '-t', session, 'exit', 'Enter']);
  } finally {
    await run('tmux', ['kill-session', '-t', session]).catch(() => {});
    await sb.kill();
  }
});
