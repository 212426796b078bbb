// gVisor cells get a private network too: probed from inside runsc cells (with node, which runs in gVisor) — only a
// private address, the gateway's resolver and data service (with the job's token) and nothing else of the host, no path
// to a runc cell and back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';

let cluster: TestCluster;

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }, { runtime: 'runsc', class: 'small', warm: 2 }] } } });
  await cluster.waitWarm();
});

after(async () => {
  await cluster?.stop();
});

/** LISTEN reports the cell's addresses and gateway, then serves TCP 8080 until killed. */
const LISTEN = String.raw`
const net = require('net'), fs = require('fs');
const addrs = Object.values(require('os').networkInterfaces()).flat().filter((a) => a.family === 'IPv4').map((a) => a.address);
const gw = /nameserver (\S+)/.exec(fs.readFileSync('/etc/resolv.conf', 'utf8'))[1];
net.createServer((c) => c.end('hi')).listen(8080, '0.0.0.0', () => console.log('INFO ' + JSON.stringify({ addrs, gw })));
setTimeout(() => process.exit(0), Number(process.env.LIFE_MS));
`;

/** PROBE connects to each target (TCP), resolves the data service's name and stores an object with its token; prints the results. */
const PROBE = String.raw`
const net = require('net'), fs = require('fs'), https = require('https'), dns = require('dns').promises;
const targets = JSON.parse(process.env.TARGETS);
const one = ([host, port]) => new Promise((res) => {
  const s = net.connect({ host, port, timeout: 2000 });
  s.on('connect', () => { s.destroy(); res('open'); });
  s.on('timeout', () => { s.destroy(); res('blocked'); });
  s.on('error', (e) => res('blocked:' + e.code));
});
const put = () => new Promise((res) => {
  const headers = { authorization: 'Bearer ' + fs.readFileSync(process.env.CLEANROOM_TOKEN_FILE, 'utf8') };
  const r = https.request(process.env.CLEANROOM_DATA_URL + '/v1/data/objects/out/' + process.env.CLEANROOM_JOB_ID, { method: 'PUT', ca: fs.readFileSync(process.env.CLEANROOM_CA_FILE), headers }, (s) => { s.resume(); s.on('end', () => res(s.statusCode)); });
  r.on('error', (e) => res(e.code));
  r.end('from ' + process.env.CLEANROOM_JOB_ID);
});
(async () => {
  const r = await Promise.all(targets.map(one));
  const out = Object.fromEntries(targets.map((t, i) => [t.join(':'), r[i]]));
  out.dns = await dns.resolve4('data.cleanroom.internal').then((a) => a.join(','), (e) => e.code);
  out.put = await put();
  console.log('RESULT ' + JSON.stringify(out));
})();
`;

async function listener(runtime: 'runc' | 'runsc', lifeMs: number): Promise<{ info: { addrs: string[]; gw: string }; ended: Promise<Job> }> {
  const job = await cluster.client.createJob({ command: ['node', '-e', LISTEN], env: { LIFE_MS: String(lifeMs) }, runtime, memoryMiB: 256, timeoutSeconds: 60 });
  let out = '';
  const ended = cluster.client.followLogs(job.id, (c) => (out += c.data.toString()));
  const deadline = Date.now() + 30_000;
  while (!/INFO (.*)/.test(out)) {
    if (Date.now() > deadline) throw new Error(`listener never reported: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { info: JSON.parse(/INFO (.*)/.exec(out)![1]!) as { addrs: string[]; gw: string }, ended };
}

async function probe(runtime: 'runc' | 'runsc', targets: Array<[string, number]>): Promise<{ jobId: string; reach: Record<string, string>; dns: string; put: number | string }> {
  const r = await cluster.runJob({ command: ['node', '-e', PROBE], env: { TARGETS: JSON.stringify(targets) }, runtime, memoryMiB: 256, timeoutSeconds: 60, data: [{ prefix: 'out/', access: 'read-write' }] });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  const { dns, put, ...reach } = JSON.parse(/RESULT (.*)/.exec(r.stdout)![1]!) as { dns: string; put: number | string; [target: string]: string | number };
  return { jobId: r.job.id, reach: reach as Record<string, string>, dns, put };
}

test('a gVisor cell has only a private address; it reaches its gateway data service and no other host socket, cell or metadata', async () => {
  const pool = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { network: { pool: string } }).network.pool;
  const poolPrefix = pool.split('.').slice(0, 2).join('.') + '.';
  const { control } = JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { apiPort: number; agentPort: number; dataPort: number } };
  const hostAddrs = Object.values(networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith(poolPrefix)).map((a) => a!.address);

  const runc = await listener('runc', 20_000);
  const gvisor = await listener('runsc', 20_000);
  for (const l of [runc, gvisor]) {
    const own = l.info.addrs.filter((a) => a !== '127.0.0.1');
    assert.equal(own.length, 1, `expected one private address, got ${l.info.addrs.join(', ')}`);
    assert.ok(own[0]!.startsWith(poolPrefix), `${own[0]} is outside the pool ${pool}`);
  }
  const gvisorIp = gvisor.info.addrs.find((a) => a !== '127.0.0.1')!;
  const runcIp = runc.info.addrs.find((a) => a !== '127.0.0.1')!;

  const { reach: fromGvisor, dns, put, jobId } = await probe('runsc', [
    [gvisor.info.gw, 443],
    [gvisor.info.gw, control.apiPort],
    [gvisor.info.gw, control.agentPort],
    [runcIp, 8080],
    [gvisorIp, 8080],
    ['169.254.169.254', 80],
    ...hostAddrs.map((h): [string, number] => [h, control.apiPort]),
  ]);
  const expectOpen = new Set([`${gvisor.info.gw}:443`]);
  for (const [target, got] of Object.entries(fromGvisor)) {
    if (expectOpen.has(target)) assert.equal(got, 'open', `gVisor cell → ${target}: ${got}`);
    else assert.ok(got.startsWith('blocked'), `gVisor cell reached ${target}`);
  }
  // Its resolver and its data service are its gateway's, reached with its token.
  assert.equal(dns, gvisor.info.gw);
  assert.equal(put, 201);
  const stored = await cluster.client.getObject(`out/${jobId}`);
  let text = '';
  for await (const c of stored) text += c;
  assert.equal(text, `from ${jobId}`);
  const { reach: fromRunc } = await probe('runc', [[gvisorIp, 8080], [runcIp, 8080]]);
  for (const [target, got] of Object.entries(fromRunc)) assert.ok(got.startsWith('blocked'), `runc cell reached ${target}`);
  await Promise.all([runc.ended, gvisor.ended]);
});
