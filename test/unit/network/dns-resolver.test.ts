// The gateway DNS resolver, on loopback against a fake upstream: platform names, policy-filtered forwarding, refusals, failures.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import dnsPacket, { type Answer, type DecodedPacket } from 'dns-packet';
import { GatewayResolver, QUERIES_PER_SECOND, type ResolverClient } from '../../../src/agent/gateway/dns-resolver.js';
import type { EgressPolicy } from '../../../src/shared/net/egress-policy.js';

const GATEWAY = '127.0.0.1';
const TIMEOUT_MS = 300;
const policy: EgressPolicy = {
  allow: [
    { cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 443, to: 443 } },
    { cidr: '198.51.100.0/24', protocol: 'any' },
  ],
  dryRun: false,
};
const platformNames = { 'data.cleanroom.internal': '10.77.0.1' };
// Query sources (all loopback): the normal client, a dry-run client, an unknown one, one asking another workspace's gateway, the flooder.
const clients: Record<string, ResolverClient> = {
  '127.0.0.1': { gateway: GATEWAY, policy, platformNames },
  '127.0.0.2': { gateway: GATEWAY, policy: { allow: [], dryRun: true }, platformNames },
  '127.0.0.4': { gateway: '127.0.0.9', policy, platformNames },
  '127.0.0.5': { gateway: GATEWAY, policy, platformNames },
};

const a = (name: string, data: string, ttl = 120): Answer => ({ type: 'A', name, ttl, data });
const cname = (name: string, data: string, ttl = 120): Answer => ({ type: 'CNAME', name, ttl, data });
// The fake upstream's zone; silent.example.com gets no reply at all, anything unlisted is NXDOMAIN.
const zone: Record<string, Answer[]> = {
  'api.example.com': [
    cname('api.example.com', 'edge.example.net', 3600),
    cname('edge.example.net', 'lb.example.org', 3600),
    a('lb.example.org', '203.0.113.10', 3600),
    a('stray.example.com', '198.51.100.99'),
  ],
  'multi.example.com': [a('multi.example.com', '198.51.100.1', 30), a('multi.example.com', '192.0.2.7', 30), a('multi.example.com', '198.51.100.2', 30)],
  'blocked.example.com': [a('blocked.example.com', '192.0.2.50')],
};

let upstream: Socket;
let resolver: GatewayResolver;
let port: number;
const logs: string[] = [];

async function bound(address: string, bindPort = 0): Promise<Socket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(bindPort, address, resolve));
  return socket;
}

async function freePort(address: string): Promise<number> {
  const socket = await bound(address);
  const { port: free } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return free;
}

// Sends one packet from `from` to the resolver and returns the decoded reply, or undefined if none came within `waitMs`.
async function exchange(packet: Buffer, options: { from?: string; to?: number; waitMs?: number } = {}): Promise<(DecodedPacket & { rcode: string }) | undefined> {
  const socket = await bound(options.from ?? '127.0.0.1');
  try {
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), options.waitMs ?? 2000);
      socket.once('message', (msg) => {
        clearTimeout(timer);
        resolve(dnsPacket.decode(msg) as DecodedPacket & { rcode: string });
      });
      socket.send(packet, options.to ?? port, GATEWAY);
    });
  } finally {
    socket.close();
  }
}

function queryPacket(name: string, type: 'A' | 'AAAA' | 'MX' = 'A', id = 4242): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, class: 'IN', name }] });
}

async function ask(name: string, type: 'A' | 'AAAA' | 'MX' = 'A', from?: string): Promise<DecodedPacket & { rcode: string }> {
  const reply = await exchange(queryPacket(name, type), from === undefined ? {} : { from });
  assert.ok(reply, `no reply for ${type} ${name}`);
  assert.equal(reply.id, 4242);
  assert.deepEqual({ qr: reply.flag_qr, ra: reply.flag_ra, rd: reply.flag_rd }, { qr: true, ra: true, rd: true });
  assert.deepEqual(reply.questions, [{ name, type, class: 'IN' }]);
  return reply;
}

const summary = (reply: DecodedPacket): string[] => (reply.answers ?? []).map((r) => `${r.name} ${r.type} ${'ttl' in r ? r.ttl : ''} ${'data' in r ? String(r.data) : ''}`);

before(async () => {
  upstream = await bound('127.0.0.1');
  upstream.on('message', (msg, rinfo) => {
    const query = dnsPacket.decode(msg);
    const name = query.questions?.[0]?.name.toLowerCase() ?? '';
    if (name === 'silent.example.com') return;
    const answers = zone[name];
    const flags = dnsPacket.RECURSION_AVAILABLE | (answers ? 0 : 3);
    upstream.send(dnsPacket.encode({ type: 'response', id: query.id ?? 0, flags, questions: query.questions ?? [], answers: answers ?? [] }), rinfo.port, rinfo.address);
  });
  resolver = new GatewayResolver({
    clientOf: (source) => clients[source],
    upstream: { host: '127.0.0.1', port: upstream.address().port },
    timeoutMs: TIMEOUT_MS,
    log: (msg) => logs.push(msg),
  });
  port = await freePort(GATEWAY);
  await resolver.listen(GATEWAY, port);
  await resolver.listen(GATEWAY, port);
});

after(async () => {
  await resolver.close();
  upstream.close();
});

test('platform names are answered locally, case-insensitively, with TTL 60', async () => {
  const reply = await ask('Data.Cleanroom.Internal');
  assert.equal(reply.rcode, 'NOERROR');
  assert.deepEqual(summary(reply), ['Data.Cleanroom.Internal A 60 10.77.0.1']);
});

test('other names in cleanroom.internal do not exist', async () => {
  assert.equal((await ask('secrets.cleanroom.internal')).rcode, 'NXDOMAIN');
  assert.equal((await ask('cleanroom.internal')).rcode, 'NXDOMAIN');
});

test('a CNAME chain is followed and kept; stray records are dropped; TTL is capped at 300', async () => {
  const reply = await ask('api.example.com');
  assert.equal(reply.rcode, 'NOERROR');
  assert.deepEqual(summary(reply), ['api.example.com CNAME 300 edge.example.net', 'edge.example.net CNAME 300 lb.example.org', 'lb.example.org A 300 203.0.113.10']);
});

test('only the addresses the policy allows are answered, with the upstream TTL', async () => {
  const reply = await ask('multi.example.com');
  assert.equal(reply.rcode, 'NOERROR');
  assert.deepEqual(summary(reply), ['multi.example.com A 30 198.51.100.1', 'multi.example.com A 30 198.51.100.2']);
  assert.ok(logs.includes('dns answer filtered by egress policy'));
});

test('a name whose addresses are all disallowed does not exist for the cell', async () => {
  assert.equal((await ask('blocked.example.com')).rcode, 'NXDOMAIN');
  assert.equal((await ask('missing.example.com')).rcode, 'NXDOMAIN');
});

test('dry-run answers every address', async () => {
  const reply = await ask('multi.example.com', 'A', '127.0.0.2');
  assert.equal(reply.rcode, 'NOERROR');
  assert.deepEqual((reply.answers ?? []).map((r) => ('data' in r ? r.data : '')), ['198.51.100.1', '192.0.2.7', '198.51.100.2']);
});

test('AAAA is empty NOERROR and other types are refused', async () => {
  for (const name of ['api.example.com', 'data.cleanroom.internal']) {
    const reply = await ask(name, 'AAAA');
    assert.equal(reply.rcode, 'NOERROR');
    assert.deepEqual(reply.answers, []);
  }
  assert.equal((await ask('api.example.com', 'MX')).rcode, 'REFUSED');
});

test('unknown sources and queries to another workspace gateway are refused', async () => {
  assert.equal((await ask('data.cleanroom.internal', 'A', '127.0.0.3')).rcode, 'REFUSED');
  assert.equal((await ask('data.cleanroom.internal', 'A', '127.0.0.4')).rcode, 'REFUSED');
});

test('without an upstream only platform names resolve', async () => {
  const local = new GatewayResolver({ clientOf: (source) => clients[source], upstream: null });
  const localPort = await freePort(GATEWAY);
  await local.listen(GATEWAY, localPort);
  try {
    assert.equal((await exchange(queryPacket('api.example.com'), { to: localPort }))?.rcode, 'REFUSED');
    assert.equal((await exchange(queryPacket('data.cleanroom.internal'), { to: localPort }))?.rcode, 'NOERROR');
  } finally {
    await local.close();
  }
});

test('a silent upstream yields SERVFAIL within the timeout', async () => {
  const started = Date.now();
  const reply = await ask('silent.example.com');
  const elapsed = Date.now() - started;
  assert.equal(reply.rcode, 'SERVFAIL');
  assert.ok(elapsed >= TIMEOUT_MS - 50, `SERVFAIL after ${elapsed} ms, before the ${TIMEOUT_MS} ms timeout`);
  assert.ok(elapsed < TIMEOUT_MS + 1000, `SERVFAIL after ${elapsed} ms, long after the ${TIMEOUT_MS} ms timeout`);
});

test('malformed packets and responses are dropped without a reply', async () => {
  const response = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', class: 'IN', name: 'api.example.com' }] });
  for (const junk of [Buffer.from('definitely not dns'), Buffer.alloc(5), queryPacket('api.example.com').subarray(0, 20), response]) {
    assert.equal(await exchange(junk, { waitMs: 200 }), undefined);
  }
  assert.equal((await ask('data.cleanroom.internal')).rcode, 'NOERROR');
});

test('a source flooding the resolver is cut off at its rate', async () => {
  const socket = await bound('127.0.0.5');
  let answered = 0;
  socket.on('message', () => answered++);
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  // Batches of 100 stay within the default socket buffers; the short pauses refill only a few tokens.
  for (let batch = 0; batch < 3; batch++) {
    for (let i = 0; i < 100; i++) socket.send(queryPacket('data.cleanroom.internal', 'A', batch * 100 + i), port, GATEWAY);
    await sleep(25);
  }
  await sleep(300);
  socket.close();
  assert.ok(answered >= QUERIES_PER_SECOND, `answered ${answered} of 300: fewer than the allowed ${QUERIES_PER_SECOND}`);
  assert.ok(answered <= QUERIES_PER_SECOND + 50, `answered ${answered} of 300: the flood was not cut off at ${QUERIES_PER_SECOND}`);
});
