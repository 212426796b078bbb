// Scenarios that drive the unmodified `e2b` SDK (from node_modules) against Cleanroom. Each runs in its own process
// (`node e2b-scenarios.js <name>`), configured only through E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and
// NODE_EXTRA_CA_CERTS (the platform CA), so that nothing the SDK caches at import leaks between scenarios.
// E2B_OTHER_KEY is an API key of another workspace. A scenario asserts itself and exits non-zero on failure.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { AuthenticationError, CommandExitError, InvalidArgumentError, NotFoundError, Sandbox, SandboxError, SandboxNotFoundError, FileType } from 'e2b';

const until = async (cond: () => boolean, ms: number, what: string) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** hostForm sends GET /health the way a client without E2B_SANDBOX_URL would: Host 49983-<id>.<domain>, no id header. */
const hostForm = (id: string, token: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const api = new URL(process.env.E2B_API_URL!);
    const r = request({ host: api.hostname, port: api.port, path: '/health', servername: 'localhost', headers: { host: `49983-${id}.sandbox.test`, 'x-access-token': token } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    r.on('error', reject);
    r.end();
  });

const rejects = async (p: Promise<unknown>): Promise<unknown> => {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
};

const scenarios: Record<string, () => Promise<void>> = {
  async lifecycle() {
    const tag = `s${Date.now()}`;
    const sbx = await Sandbox.create('base', { metadata: { suite: tag, n: '0' }, envs: { FOO: 'bar' }, timeoutMs: 120_000 });
    const echoed = await sbx.commands.run('echo $FOO');
    assert.equal(echoed.stdout, 'bar\n');
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { suite: tag, n: '0' });
    assert.ok(info.endAt.getTime() - Date.now() < 125_000);
    await sbx.setTimeout(600_000);
    assert.ok((await sbx.getInfo()).endAt.getTime() - Date.now() > 500_000);
    assert.equal(await sbx.isRunning(), true);
    const again = await Sandbox.connect(sbx.sandboxId);
    assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n');
    // list: metadata filter and paging
    const more = await Promise.all([1, 2].map((n) => Sandbox.create({ metadata: { suite: tag, n: String(n) } })));
    const pager = Sandbox.list({ query: { metadata: { suite: tag } }, limit: 2 });
    const first = await pager.nextItems();
    assert.equal(first.length, 2);
    assert.equal(pager.hasNext, true);
    const second = await pager.nextItems();
    assert.equal(second.length, 1);
    assert.deepEqual(new Set([...first, ...second].map((s) => s.sandboxId)), new Set([sbx.sandboxId, ...more.map((m) => m.sandboxId)]));
    const one = await Sandbox.list({ query: { metadata: { suite: tag, n: '2' } } }).nextItems();
    assert.deepEqual(one.map((s) => s.sandboxId), [more[1]!.sandboxId]);
    assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: tag }, state: ['paused'] } }).nextItems(), []);
    // kill
    await sbx.kill();
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
    assert.ok((await rejects(Sandbox.getInfo(sbx.sandboxId))) instanceof SandboxNotFoundError);
    assert.ok((await rejects(Sandbox.connect(sbx.sandboxId))) instanceof NotFoundError);
    for (const m of more) assert.equal(await Sandbox.kill(m.sandboxId), true);
  },

  async commands() {
    const sbx = await Sandbox.create();
    try {
      const out: string[] = [];
      const err: string[] = [];
      const r = await sbx.commands.run('for i in 1 2 3; do echo out$i; echo err$i >&2; done', { onStdout: (d) => void out.push(d), onStderr: (d) => void err.push(d) });
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, 'out1\nout2\nout3\n');
      assert.equal(r.stderr, 'err1\nerr2\nerr3\n');
      assert.equal(out.join(''), r.stdout);
      assert.equal(err.join(''), r.stderr);
      const failed = await rejects(sbx.commands.run('echo bad >&2; exit 3'));
      assert.ok(failed instanceof CommandExitError, String(failed));
      assert.equal(failed.exitCode, 3);
      assert.equal(failed.stderr, 'bad\n');
      // per-command cwd and env; the default cwd is the home (/work); a `user` is ignored (always the workload user)
      assert.equal((await sbx.commands.run('pwd; echo $X', { cwd: '/tmp', envs: { X: 'y' } })).stdout, '/tmp\ny\n');
      assert.equal((await sbx.commands.run('pwd')).stdout, '/work\n');
      assert.equal((await sbx.commands.run('id -u', { user: 'root' })).stdout, '1000\n');
      // what Cleanroom's own process route refuses is refused here too, at once (not after a start timeout)
      const t0 = Date.now();
      assert.ok((await rejects(sbx.commands.run('true', { envs: { '1BAD': 'x' } }))) instanceof InvalidArgumentError);
      assert.ok((await rejects(sbx.commands.run('true', { envs: { A: 'x\0y' } }))) instanceof InvalidArgumentError);
      assert.ok(Date.now() - t0 < 5000);
      // background with wait
      const bg = await sbx.commands.run('sleep 0.5; echo done', { background: true });
      assert.equal((await bg.wait()).stdout, 'done\n');
      // stdin
      const head = await sbx.commands.run('head -n 1', { background: true, stdin: true });
      await sbx.commands.sendStdin(head.pid, 'hello\n');
      assert.equal((await head.wait()).stdout, 'hello\n');
      const cat = await sbx.commands.run('cat', { background: true, stdin: true });
      await sbx.commands.sendStdin(cat.pid, 'abc');
      await sbx.commands.closeStdin(cat.pid);
      assert.equal((await cat.wait()).stdout, 'abc');
      // list, kill
      const sleeper = await sbx.commands.run('sleep 60', { background: true });
      const listed = await sbx.commands.list();
      assert.ok(listed.some((p) => p.pid === sleeper.pid), JSON.stringify(listed));
      assert.equal(await sbx.commands.kill(sleeper.pid), true);
      const killed = await rejects(sleeper.wait());
      assert.ok(killed instanceof CommandExitError, String(killed));
      assert.equal(await sbx.commands.kill(sleeper.pid), false);
      // connect to a running command
      const ticker = await sbx.commands.run('for i in 1 2 3; do sleep 0.3; echo tick$i; done', { background: true });
      await ticker.disconnect();
      const attached = await sbx.commands.connect(ticker.pid);
      const done = await attached.wait();
      assert.ok(done.stdout.includes('tick3'), done.stdout);
      // a disconnect never kills the process
      const survivor = await sbx.commands.run('sleep 1; echo survived > /work/survivor', { background: true });
      await survivor.disconnect();
      // It writes after a second of its own: polled, since a loaded host may take longer to get there.
      const read = () => sbx.files.read('/work/survivor').catch(() => '');
      const deadline = Date.now() + 20_000;
      while ((await read()) !== 'survived\n' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await sbx.files.read('/work/survivor'), 'survived\n');
    } finally {
      await sbx.kill();
    }
  },

  async pty() {
    const sbx = await Sandbox.create();
    try {
      let text = '';
      const dec = new TextDecoder();
      const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (text += dec.decode(d)) });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo hi-$((40+2))\n'));
      await until(() => text.includes('hi-42'), 10_000, 'pty output');
      await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size\n'));
      await until(() => text.includes('30 100'), 10_000, 'the new size');
      assert.equal(await sbx.pty.kill(term.pid), true);
      await rejects(term.wait());
    } finally {
      await sbx.kill();
    }
  },

  async files() {
    const sbx = await Sandbox.create();
    try {
      await sbx.files.write('/work/a.txt', 'hello text');
      assert.equal(await sbx.files.read('/work/a.txt'), 'hello text');
      const bytes = randomBytes(4096);
      await sbx.files.write('rel.bin', new Uint8Array(bytes).buffer);
      assert.ok(Buffer.from(await sbx.files.read('/work/rel.bin', { format: 'bytes' })).equals(bytes));
      const info = await sbx.files.getInfo('/work/rel.bin');
      assert.equal(info.type, FileType.FILE);
      assert.equal(info.size, 4096);
      assert.equal(info.name, 'rel.bin');
      assert.equal(await sbx.files.exists('/work/a.txt'), true);
      assert.equal(await sbx.files.exists('/work/nope'), false);
      assert.equal(await sbx.files.makeDir('/work/d/e'), true);
      assert.equal(await sbx.files.makeDir('/work/d/e'), false);
      await sbx.files.write('/work/d/e/f.txt', 'f');
      const listed = await sbx.files.list('/work');
      assert.ok(listed.some((e) => e.name === 'd' && e.type === FileType.DIR), JSON.stringify(listed));
      const deep = await sbx.files.list('/work', { depth: 3 });
      assert.ok(deep.some((e) => e.path === '/work/d/e/f.txt'), JSON.stringify(deep));
      const moved = await sbx.files.rename('/work/a.txt', '/work/d/b.txt');
      assert.equal(moved.path, '/work/d/b.txt');
      assert.equal(await sbx.files.read('/work/d/b.txt'), 'hello text');
      await sbx.files.remove('/work/d');
      assert.equal(await sbx.files.exists('/work/d'), false);
      assert.ok((await rejects(sbx.files.read('/work/missing'))) instanceof NotFoundError);
      // streams: 50 MB in and out, never whole in memory on the server
      const size = 50 * 1000 * 1000;
      const piece = randomBytes(1 << 20);
      const hashIn = createHash('sha256');
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= size) return c.close();
          const n = Math.min(piece.length, size - sent);
          const chunk = piece.subarray(0, n);
          hashIn.update(chunk);
          sent += n;
          c.enqueue(new Uint8Array(chunk));
        },
      });
      await sbx.files.write('/work/big.bin', body);
      assert.equal((await sbx.files.getInfo('/work/big.bin')).size, size);
      const stream = await sbx.files.read('/work/big.bin', { format: 'stream' });
      const hashOut = createHash('sha256');
      let got = 0;
      for await (const c of stream as unknown as AsyncIterable<Uint8Array>) {
        hashOut.update(c);
        got += c.length;
      }
      assert.equal(got, size);
      assert.equal(hashOut.digest('hex'), hashIn.digest('hex'));
      // multipart 50 MB too (the default upload form)
      await sbx.files.write('/work/big2.bin', new Blob([Buffer.alloc(size, 1)]));
      assert.equal((await sbx.files.getInfo('/work/big2.bin')).size, size);
      // signed URLs
      const up = await sbx.uploadUrl('/work/up.txt');
      const form = new FormData();
      form.append('file', new Blob(['via url']), '/work/up.txt');
      const put = await fetch(up, { method: 'POST', body: form });
      assert.equal(put.status, 200, await put.text());
      const down = await sbx.downloadUrl('/work/up.txt');
      assert.equal(await (await fetch(down)).text(), 'via url');
      const forged = new URL(down);
      forged.searchParams.set('path', '/work/big.bin');
      assert.equal((await fetch(forged)).status, 401);
      const expiring = await sbx.downloadUrl('/work/up.txt', { useSignatureExpiration: 60 });
      assert.equal(await (await fetch(expiring)).text(), 'via url');
      // watchDir (polled): create, write, a nested create when recursive, remove; entries when asked
      await sbx.files.makeDir('/work/w');
      const events: Array<{ name: string; type: string; entry?: { path: string } }> = [];
      const watcher = await sbx.files.watchDir('/work/w', (e) => void events.push(e as never), { recursive: true, includeEntry: true });
      const saw = (name: string, type: string) => until(() => events.some((e) => e.name === name && e.type === type), 10_000, `${type} ${name} in ${JSON.stringify(events)}`);
      await sbx.files.write('/work/w/new.txt', 'x');
      await saw('new.txt', 'create');
      assert.equal(events.find((e) => e.name === 'new.txt')?.entry?.path, '/work/w/new.txt');
      await new Promise((r) => setTimeout(r, 1100)); // past a second, so the mtime moves too
      await sbx.files.write('/work/w/new.txt', 'xyz');
      await saw('new.txt', 'write');
      await sbx.files.makeDir('/work/w/sub');
      await sbx.files.write('/work/w/sub/deep.txt', 'd');
      await saw('sub/deep.txt', 'create');
      await sbx.files.remove('/work/w/new.txt');
      await saw('new.txt', 'remove');
      await watcher.stop();
      assert.ok((await rejects(sbx.files.watchDir('/work/nope', () => {}))) instanceof Error);
    } finally {
      await sbx.kill();
    }
  },

  async errors() {
    const wrong = await rejects(Sandbox.create({ apiKey: 'crk_nope_nope' }));
    assert.ok(wrong instanceof AuthenticationError, String(wrong));
    assert.ok((await rejects(Sandbox.list({ apiKey: 'wrong' }).nextItems())) instanceof AuthenticationError);
    assert.ok((await rejects(Sandbox.connect('sbx_does_not_exist'))) instanceof NotFoundError);
    assert.ok((await rejects(Sandbox.getInfo('sbx_does_not_exist'))) instanceof SandboxNotFoundError);
    assert.equal(await Sandbox.kill('sbx_does_not_exist'), false);
    // another workspace's sandbox is not found, and its envd refuses a token that is not its own
    const mine = await Sandbox.create();
    try {
      const other = { apiKey: process.env.E2B_OTHER_KEY! };
      assert.ok((await rejects(Sandbox.connect(mine.sandboxId, other))) instanceof NotFoundError);
      assert.ok((await rejects(Sandbox.getInfo(mine.sandboxId, other))) instanceof SandboxNotFoundError);
      assert.equal(await Sandbox.kill(mine.sandboxId, other), false);
      assert.equal(await Sandbox.list({ ...other, query: { metadata: {} } }).nextItems().then((l) => l.some((s) => s.sandboxId === mine.sandboxId)), false);
      const theirs = await Sandbox.create(other);
      const forged = await Sandbox.connect(mine.sandboxId);
      (forged as unknown as { envdAccessToken: string }).envdAccessToken = 'forged';
      const refused = await rejects(new Sandbox({ sandboxId: mine.sandboxId, envdVersion: '0.6.4', envdAccessToken: (await Sandbox.connect(theirs.sandboxId, other) as unknown as { envdAccessToken: string }).envdAccessToken } as never).commands.run('id'));
      assert.ok(refused instanceof AuthenticationError, String(refused));
      await theirs.kill();
    } finally {
      await mine.kill();
    }
    // envd routed by Host (49983-<id>.<domain>) instead of the E2b-Sandbox-Id header; a wrong token is refused
    const byHost = await Sandbox.create();
    const token = (byHost as unknown as { envdAccessToken: string }).envdAccessToken;
    assert.equal(await hostForm(byHost.sandboxId, token), 204);
    assert.equal(await hostForm(byHost.sandboxId, token.slice(1) + 'x'), 401);
    assert.equal((await byHost.getInfo()).sandboxId, byHost.sandboxId);
    await byHost.kill();
    assert.equal(await hostForm(byHost.sandboxId, token), 502);
    // envd of an ended sandbox refuses work
    const gone = await Sandbox.create();
    await gone.kill();
    assert.ok((await rejects(gone.commands.run('true'))) instanceof Error);
    // pause is not supported: a clear error
    const p = await rejects(Sandbox.create({ lifecycle: { onTimeout: 'pause' } }));
    assert.ok(p instanceof SandboxError && /pause/.test(p.message), String(p));
  },

  async unsupported() {
    // What the README promises an application sees for what Cleanroom does not do.
    const sbx = await Sandbox.create();
    try {
      const show = (e: unknown) => `${(e as Error).constructor.name}: ${(e as Error).message}`;
      const seen: Record<string, string> = {
        pauseOnTimeout: show(await rejects(Sandbox.create({ lifecycle: { onTimeout: 'pause' } }))),
        pause: show(await rejects(sbx.pause())),
        metrics: show(await rejects(sbx.getMetrics())),
        snapshot: show(await rejects(sbx.createSnapshot())),
        template: show(await rejects(Sandbox.create('my-template'))),
        metadata: show(await rejects(sbx.files.write('/work/m.txt', 'x', { metadata: { k: 'v' } } as never))),
      };
      process.stdout.write(`${JSON.stringify(seen, null, 1)}\n`);
      assert.match(seen.pauseOnTimeout!, /^SandboxError: .*pause and resume are not supported/);
      assert.match(seen.pause!, /^SandboxError: 501: .*not supported/);
      assert.match(seen.metrics!, /^SandboxError: 501: .*not supported/);
      assert.match(seen.snapshot!, /^SandboxError: 501: .*not supported/);
      assert.match(seen.template!, /^SandboxError: 404: template "my-template" not found: .*cleanroom images import/);
      assert.match(seen.metadata!, /^InvalidArgumentError: .*metadata/);
      assert.equal(await sbx.isRunning(), true);
    } finally {
      await sbx.kill();
    }
  },

  async restart() {
    // Prints READY, waits for a line on stdin (the parent SIGKILLs the control plane and starts it again meanwhile), then
    // goes on with the same Sandbox object: its access token is derived, not stored, so it is still good.
    const sbx = await Sandbox.create();
    await sbx.files.write('/work/before.txt', 'before');
    const bg = await sbx.commands.run('sleep 3; echo after-restart > /work/bg.txt', { background: true });
    await bg.disconnect();
    process.stdout.write('READY\n');
    await new Promise((r) => process.stdin.once('data', r));
    process.stdin.pause();
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        assert.equal((await sbx.commands.run('cat /work/before.txt')).stdout, 'before');
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 250)); // the control plane is still coming up
      }
    }
    // Its content, not only the file: the shell creates the file before it writes to it.
    const waited = Date.now() + 20_000;
    while ((await sbx.files.read('/work/bg.txt').catch(() => '')) !== 'after-restart\n') {
      if (Date.now() > waited) throw new Error('the background process did not finish after the restart');
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal((await sbx.getInfo()).state, 'running');
    await sbx.kill();
  },

  async timeToInteractive() {
    const n = Number(process.env.E2B_TTI_N ?? '5');
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const sbx = await Sandbox.create();
      await sbx.commands.run('node -v');
      ms.push(performance.now() - t0);
      await sbx.kill();
    }
    ms.sort((a, b) => a - b);
    process.stdout.write(JSON.stringify({ n, p50: ms[Math.floor(n / 2)], min: ms[0], max: ms.at(-1) }) + '\n');
  },
};

const name = process.argv[2] ?? '';
const scenario = scenarios[name];
if (!scenario) {
  process.stderr.write(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}\n`);
  process.exit(2);
}
scenario().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
