// The web console in a real browser (Debian's chromium, driven by puppeteer-core): sign-in, a job and its live output, a
// sandbox's terminal,
// an invalid policy refused inline, an object uploaded and downloaded, a key revoked, the audit chain verified, the
// charts drawn; and workload-controlled text (argv, output, object keys, key names, sandbox metadata) rendered as text.
// Screenshots of every page are kept in artifacts/console/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { REPO_ROOT, TestCluster } from '../support/cluster.js';
import { cellWorkDir } from '../support/host.js';
import { Sandbox } from '../../src/sdk/sandbox.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(REPO_ROOT, 'artifacts/console');
const XSS = '<img src=x onerror="window.__xss=(window.__xss||0)+1">';

let cluster: TestCluster;
let browser: Browser;
let page: Page;
let scratch: string;
const dialogs: string[] = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  scratch = mkdtempSync('/var/tmp/cleanroom-console-');
  cluster = await TestCluster.start();
  // Trust exactly the control plane's certificate key (chromium has no flag for a private CA without an NSS database).
  const cert = readFileSync(join(cluster.dataDir, 'pki/server.pem'), 'utf8');
  const spki = createHash('sha256').update(createPublicKey(cert).export({ type: 'spki', format: 'der' })).digest('base64');
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--ignore-certificate-errors-spki-list=${spki}`],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: scratch });
});

after(async () => {
  await browser?.close().catch(() => {});
  await cluster?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * visit opens a console route and waits until the route has rendered anew. Going from one page of the console to another
 * only changes the hash: the old page stays on screen until the new one has asked /v1/whoami, and an element of the old
 * page (the jobs page's run form after sign-in) must not be mistaken for the new one's.
 */
async function visit(route: string): Promise<void> {
  const url = `${cluster.url}/console/#/${route}`;
  await page.evaluate(() => document.querySelectorAll('#main > *').forEach((e) => e.setAttribute('data-left', '')));
  if (page.url() === url) await page.reload();
  else await page.goto(url);
  await page.waitForFunction(() => document.querySelector('#main > *') !== null && document.querySelector('#main > [data-left]') === null);
}

async function textOf(selector: string): Promise<string> {
  return page.$eval(selector, (e) => e.textContent ?? '');
}

async function waitText(selector: string, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const t = await page.$eval(selector, (e) => e.textContent ?? '').catch(() => '');
    if (pattern.test(t)) return t;
    if (Date.now() > deadline) throw new Error(`${selector} never matched ${pattern}; it says ${JSON.stringify(t.slice(0, 500))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function readAll(s: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function xssRan(): Promise<unknown> {
  return page.evaluate(() => (window as unknown as { __xss?: number }).__xss);
}

test('the page is served with a strict CSP and versioned assets', async () => {
  const res = await page.goto(`${cluster.url}/console/`);
  assert.equal(res?.status(), 200);
  const csp = res?.headers()['content-security-policy'] ?? '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/, 'scripts only from this origin: no inline script, no eval');
  assert.doesNotMatch(csp, /unsafe-eval/);
  assert.equal(res?.headers()['x-frame-options'], 'DENY');
  const scripts = await page.$$eval('script', (s) => s.map((x) => x.getAttribute('src')));
  assert.match(scripts[0] ?? '', /^\/console\/assets\/[0-9a-f]{16}\/app\.js$/);
});

test('sign-in refuses a wrong key and accepts a real one', async () => {
  await page.goto(`${cluster.url}/console/`);
  await page.waitForSelector('#api-key');
  await page.type('#api-key', 'crk_nope_nope');
  await page.click('#sign-in button');
  await waitText('#sign-in-error', /not accepted/);
  await page.type('#api-key', cluster.apiKey);
  await page.click('#sign-in button');
  await page.waitForSelector('#nav-jobs');
  assert.match(await textOf('#who'), /platform-admin/);
  // The key is kept for this tab only.
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  await shot('signed-in');
});

test('a job run from the console shows its output as it arrives, then its end and wipe receipt', async () => {
  await visit('jobs');
  // The job prints its second line only when the test says so (a file in its /work): the first line must be on screen while
  // it still runs, however long the page takes to open its stream.
  await page.type('#run-command', 'echo console-$((40+2)); until [ -e /work/go ]; do sleep 0.05; done; echo second-line');
  await page.click('#run-form button');
  await page.waitForSelector('#job-output');
  await waitText('#job-output', /console-42/);
  await waitText('#job-status', /running/);
  const id = decodeURIComponent(new URL(page.url()).hash.split('/')[2] ?? '');
  const job = await cluster.client.getJob(id);
  assert.equal(job.status, 'running');
  assert.doesNotMatch(await textOf('#job-output'), /second-line/);
  writeFileSync(join(cellWorkDir(cluster.dataDir, job.cellId!), 'go'), '');
  await waitText('#job-output', /console-42\nsecond-line/);
  await waitText('#job-status', /succeeded/);
  await waitText('#job-receipt', /volumeId/);
  await shot('job');
});

test('a job page whose stream breaks (the control plane restarts) picks its output up again, nothing lost or shown twice', async () => {
  const created = await cluster.client.createJob({ command: ['sh', '-c', 'echo before-restart; until [ -e /work/go ]; do sleep 0.05; done; echo after-restart'] });
  await visit(`jobs/${created.id}`);
  await waitText('#job-output', /before-restart/);
  const job = await cluster.client.getJob(created.id);
  assert.equal(job.status, 'running');
  process.kill(cluster.controlPid(), 'SIGKILL');
  assert.equal((await cluster.cli(['up', '--detach', '--data-dir', cluster.dataDir])).code, 0);
  writeFileSync(join(cellWorkDir(cluster.dataDir, job.cellId!), 'go'), '');
  await waitText('#job-output', /after-restart/);
  assert.equal(await textOf('#job-output'), 'before-restart\nafter-restart\n');
  await waitText('#job-status', /succeeded/);
});

test('workload-controlled text is rendered as text and never executes', async () => {
  const job = await cluster.runJob({ command: ['sh', '-c', `printf '%s\\n' '<script>window.__xss=99</script>' '${XSS}'`, XSS] });
  assert.equal(job.job.status, 'succeeded', job.stderr);
  const key = `xss/${XSS}.txt`;
  await cluster.client.putObject(key, Buffer.from('payload'));
  assert.equal((await cluster.cli(['workspaces', 'create', 'console-team'])).code, 0);
  assert.equal((await cluster.cli(['keys', 'create', '--workspace', 'console-team', '--name', XSS])).code, 0);
  const sandbox = await Sandbox.create({ metadata: { note: XSS } }, cluster.client);
  await visit('sandboxes');
  await waitText('#sandboxes-table', /note=<img src=x onerror/);
  await sandbox.kill();

  await visit('jobs');
  await waitText('#jobs-table', /onerror/);
  await visit(`jobs/${job.job.id}`);
  await waitText('#job-output', /<script>window.__xss=99<\/script>/);
  assert.match(await textOf('#job-command'), /onerror=/);
  await visit('data');
  await waitText('#objects-table', /xss\/<img src=x onerror/);
  await visit('admin');
  await waitText('#keys-table', /<img src=x onerror/);
  await visit('audit');
  await page.waitForSelector('#audit-list table');
  await shot('xss-as-text');
  assert.equal(await xssRan(), undefined, 'a payload ran');
  assert.deepEqual(dialogs, []);
  assert.equal(await page.$$eval('img', (i) => i.length), 0, 'a payload became an element');
});

test('a sandbox created in the console opens an interactive terminal, and ends with a wipe receipt', async () => {
  await visit('sandboxes');
  await page.waitForSelector('#sandbox-create');
  await page.click('#sandbox-create');
  await page.waitForSelector('#sandbox-state');
  await waitText('#sandbox-state', /running/, 60_000);
  await page.waitForSelector('#terminal-open');
  await page.click('#terminal-open');
  await waitText('#terminal-status', /connected/);
  await page.waitForSelector('#terminal .xterm-rows');
  await page.focus('#terminal .xterm-helper-textarea');
  await page.keyboard.type('echo term-$((6*7)); tty\n');
  await waitText('#terminal .xterm-rows', /term-42.*\/dev\/pts\/\d+/s);
  await shot('terminal');
  await page.click('#sandbox-kill');
  await waitText('#sandbox-state', /ended/, 30_000);
  await waitText('#sandbox-receipt', /volumeId/, 30_000);
});

test('an invalid policy is refused inline and the old one stays', async () => {
  const before = await cluster.client.getNetworkPolicy();
  await visit('network');
  await page.waitForFunction(() => (document.querySelector('#policy-editor') as HTMLTextAreaElement | null)?.value.includes('allow'));
  await page.$eval('#policy-editor', (e) => ((e as HTMLTextAreaElement).value = JSON.stringify({ allow: [{ cidr: '127.0.0.0/8', protocol: 'tcp' }] })));
  await page.click('#policy-save');
  await waitText('#policy-status', /invalid_policy/);
  assert.match(await page.$eval('#policy-status', (e) => e.className), /error/);
  await shot('policy-invalid');
  assert.deepEqual(await cluster.client.getNetworkPolicy(), before);

  await page.$eval('#policy-editor', (e) => ((e as HTMLTextAreaElement).value = JSON.stringify({ allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 }], dryRun: true })));
  await page.click('#policy-save');
  await waitText('#policy-status', /Saved/);
  const now = await cluster.client.getNetworkPolicy();
  assert.equal(now.dryRun, true);
  assert.equal(now.allow[0]?.cidr, '203.0.113.0/24');
});

test('an object uploaded in the console is stored, listed and downloaded intact', async () => {
  const content = `uploaded from the console ${Date.now()}\n`;
  const file = join(scratch, 'upload.txt');
  writeFileSync(file, content);
  await visit('data');
  await page.waitForSelector('#upload-file');
  await page.type('#upload-key', 'console/upload.txt');
  const input = await page.$('#upload-file');
  await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(file);
  await page.click('#upload');
  await waitText('#data-status', /Uploaded console\/upload.txt/);
  assert.equal(await readAll(await cluster.client.getObject('console/upload.txt')), content);
  await waitText('#objects-table', /console\/upload.txt/);
  rmSync(file);
  await page.click('button.download[data-key="console/upload.txt"]');
  const deadline = Date.now() + 15_000;
  while (!existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(existsSync(file), 'the download arrived');
  assert.equal(readFileSync(file, 'utf8'), content);
  await shot('objects');
});

test('a key revoked in the console stops working', async () => {
  await visit('admin');
  await page.waitForSelector('#key-create');
  await page.type('#key-workspace', 'console-team');
  await page.type('#key-name', 'to-revoke');
  await page.click('#key-create');
  const secret = (await waitText('#new-key', /^crk_/)).trim();
  const id = secret.split('_')[1]!;
  assert.equal((await cluster.cli(['jobs', 'ls'], { CLEANROOM_API_KEY: secret })).code, 0);
  await page.waitForSelector(`button.revoke[data-key="${id}"]`);
  await page.click(`button.revoke[data-key="${id}"]`);
  await page.waitForFunction((k) => !document.querySelector(`button.revoke[data-key="${k}"]`), {}, id);
  await shot('keys');
  const refused = await cluster.cli(['jobs', 'ls'], { CLEANROOM_API_KEY: secret });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /revoked|not valid|unauthenticated/i);
});

test('the audit chain verifies, the pool shows the agent, and the charts draw from the metrics', async () => {
  await visit('audit');
  await page.waitForSelector('#audit-verify');
  await page.click('#audit-verify');
  await waitText('#audit-verdict', /The chain holds: \d+ events/);
  await shot('audit');
  await visit('pool');
  await waitText('#pool', new RegExp(`Agent ${cluster.agentId}[\\s\\S]*runc/small`));
  await shot('pool');
  // The history's intervals close every 10 s: the jobs of the tests above are in it by now or within one interval.
  await visit('charts');
  await page.waitForSelector('#chart-throughput');
  await waitText('#charts', /[1-9]\d* jobs ended/, 25_000);
  const drawn = await page.$$eval('#chart-latency polyline.series', (l) => l.map((x) => x.getAttribute('points') ?? ''));
  assert.ok(drawn.some((p) => p.length > 0), 'the latency chart has points');
  await shot('charts');
});
