// The gateway DNS resolver, on loopback against a fake upstream: platform names, policy-filtered forwarding, refusals, failures.
// Every test starts its own resolver and upstream (nothing carries over between tests), and the rate limit runs on a clock the
// test moves by hand, so no assertion depends on how fast this machine is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import dnsPacket, { type Answer, type DecodedPacket } from 'dns-packet';
import { GatewayResolver, QUERIES_PER_SECOND, type ResolverClient } from '../../../src/agent/gateway/dns-resolver.js';
import type { EgressPolicy } from '../../../src/shared/net/egress-policy.js';

const GATEWAY = '127.0.0.1';
const UPSTREAM_TIMEOUT_MS = 300;
/** How long a test waits for a reply that must come: generous, since only a failing test ever waits this long. */
const REPLY_WAIT_MS = 10_000;
const policy: EgressPolicy = {
  allow: [
    { cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 443, to: 443 } },
    { cidr: '198.51.100.0/24', protocol: 'any' },
  ],
  dryRun: false,
};
const platformNames = { 'data.cleanroom.internal': '10.77.0.1' };
// Query sources (all loopback): the normal client, a dry-run client, an unknown one, one asking another workspace's gateway, the flooder.
// Tests that hand an address to another cell replace its entry and put it back.
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

type Reply = DecodedPacket & { rcode: string };

/** Fixture is one resolver on a free loopback port, its fake upstream, what it logged, what the upstream was asked, and its clock. */
interface Fixture {
  port: number;
  logs: string[];
  upstreamAsked: string[];
  clock: { ms: number };
  resolver: GatewayResolver;
  close(): Promise<void>;
}

async function bound(address: string, bindPort = 0): Promise<Socket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(bindPort, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return socket;
}

async function freePort(address: string): Promise<number> {
  const socket = await bound(address);
  const { port: free } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return free;
}

// start gives a test its own resolver (and upstream, unless `upstream: false`); the caller closes it in `finally`.
async function start(opts: { upstream?: boolean } = {}): Promise<Fixture> {
  const upstreamAsked: string[] = [];
  const upstream = opts.upstream === false ? undefined : await bound('127.0.0.1');
  upstream?.on('message', (msg, rinfo) => {
    const query = dnsPacket.decode(msg);
    const name = query.questions?.[0]?.name.toLowerCase() ?? '';
    upstreamAsked.push(name);
    if (name === 'silent.example.com') return;
    const answers = zone[name];
    const flags = dnsPacket.RECURSION_AVAILABLE | (answers ? 0 : 3);
    upstream.send(dnsPacket.encode({ type: 'response', id: query.id ?? 0, flags, questions: query.questions ?? [], answers: answers ?? [] }), rinfo.port, rinfo.address);
  });
  const logs: string[] = [];
  const clock = { ms: 10_000 };
  const resolver = new GatewayResolver({
    clientOf: (source) => clients[source],
    upstream: upstream ? { host: '127.0.0.1', port: upstream.address().port } : null,
    timeoutMs: UPSTREAM_TIMEOUT_MS,
    log: (msg) => logs.push(msg),
    now: () => clock.ms,
  });
  const port = await freePort(GATEWAY);
  await resolver.listen(GATEWAY, port);
  await resolver.listen(GATEWAY, port); // listening again on the same pair is a no-op
  return {
    port,
    logs,
    upstreamAsked,
    clock,
    resolver,
    close: async () => {
      await resolver.close();
      upstream?.close();
    },
  };
}

async function withResolver(fn: (f: Fixture) => Promise<void>, opts: { upstream?: boolean } = {}): Promise<void> {
  const f = await start(opts);
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

function queryPacket(name: string, type: 'A' | 'AAAA' | 'MX' = 'A', id = 4242): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, class: 'IN', name }] });
}

// Sends the packets in order from a socket bound to `from`, then a valid marker query (id 4343) from `markerFrom`, and returns the
// replies that reached `from` by the time the marker was answered. The resolver handles its socket's datagrams in arrival order
// and loopback delivers each one during its send, so once the marker is answered every packet sent before it has been
// answered or dropped: "no reply" is decided without a timing window.
async function exchangeThenMarker(f: Fixture, packets: Buffer[], from = '127.0.0.1', markerFrom = from): Promise<Reply[]> {
  const socket = await bound(from);
  const markerSocket = markerFrom === from ? socket : await bound(markerFrom);
  try {
    const replies: Reply[] = [];
    socket.on('message', (msg) => replies.push(dnsPacket.decode(msg) as Reply));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to the marker query from ${markerFrom} within ${REPLY_WAIT_MS} ms`)), REPLY_WAIT_MS);
      markerSocket.on('message', (msg) => {
        if (dnsPacket.decode(msg).id !== 4343) return;
        clearTimeout(timer);
        resolve();
      });
      for (const p of packets) socket.send(p, f.port, GATEWAY);
      markerSocket.send(queryPacket('data.cleanroom.internal', 'A', 4343), f.port, GATEWAY);
    });
    // A reply sent before the marker's is already queued on `from`: one turn of the event loop delivers it.
    await new Promise((resolve) => setImmediate(resolve));
    return replies.filter((r) => markerSocket !== socket || r.id !== 4343);
  } finally {
    socket.close();
    if (markerSocket !== socket) markerSocket.close();
  }
}

async function ask(f: Fixture, name: string, type: 'A' | 'AAAA' | 'MX' = 'A', from = '127.0.0.1'): Promise<Reply> {
  const socket = await bound(from);
  try {
    const reply = await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply for ${type} ${name} within ${REPLY_WAIT_MS} ms`)), REPLY_WAIT_MS);
      socket.once('message', (msg) => {
        clearTimeout(timer);
        resolve(dnsPacket.decode(msg) as Reply);
      });
      socket.send(queryPacket(name, type), f.port, GATEWAY);
    });
    assert.equal(reply.id, 4242);
    assert.ok(reply.flag_qr && reply.flag_ra && reply.flag_rd);
    assert.deepEqual(reply.questions, [{ name, type, class: 'IN' }]);
    return reply;
  } finally {
    socket.close();
  }
}

const summary = (reply: DecodedPacket): string[] => (reply.answers ?? []).map((r) => `${r.name} ${r.type} ${'ttl' in r ? r.ttl : ''} ${'data' in r ? String(r.data) : ''}`);

test('platform names are answered locally, case-insensitively, with TTL 60', () =>
  withResolver(async (f) => {
    const reply = await ask(f, 'Data.Cleanroom.Internal');
    assert.equal(reply.rcode, 'NOERROR');
    assert.deepEqual(summary(reply), ['Data.Cleanroom.Internal A 60 10.77.0.1']);
    assert.deepEqual(f.upstreamAsked, [], 'a platform name went upstream');
  }));

test('other names in cleanroom.internal do not exist', () =>
  withResolver(async (f) => {
    assert.equal((await ask(f, 'secrets.cleanroom.internal')).rcode, 'NXDOMAIN');
    assert.equal((await ask(f, 'cleanroom.internal')).rcode, 'NXDOMAIN');
    assert.deepEqual(f.upstreamAsked, [], 'a platform-zone name went upstream');
  }));

test('a CNAME chain is followed and kept; stray records are dropped; TTL is capped at 300', () =>
  withResolver(async (f) => {
    const reply = await ask(f, 'api.example.com');
    assert.equal(reply.rcode, 'NOERROR');
    assert.deepEqual(summary(reply), ['api.example.com CNAME 300 edge.example.net', 'edge.example.net CNAME 300 lb.example.org', 'lb.example.org A 300 203.0.113.10']);
  }));

test('only the addresses the policy allows are answered, with the upstream TTL', () =>
  withResolver(async (f) => {
    const reply = await ask(f, 'multi.example.com');
    assert.equal(reply.rcode, 'NOERROR');
    assert.deepEqual(summary(reply), ['multi.example.com A 30 198.51.100.1', 'multi.example.com A 30 198.51.100.2']);
    assert.deepEqual(f.logs, ['dns answer filtered by egress policy']);
  }));

test('a name whose addresses are all disallowed does not exist for the cell', () =>
  withResolver(async (f) => {
    assert.equal((await ask(f, 'blocked.example.com')).rcode, 'NXDOMAIN');
    assert.equal((await ask(f, 'missing.example.com')).rcode, 'NXDOMAIN');
  }));

test('dry-run answers every address', () =>
  withResolver(async (f) => {
    const reply = await ask(f, 'multi.example.com', 'A', '127.0.0.2');
    assert.equal(reply.rcode, 'NOERROR');
    assert.deepEqual((reply.answers ?? []).map((r) => ('data' in r ? r.data : '')), ['198.51.100.1', '192.0.2.7', '198.51.100.2']);
  }));

test('AAAA is empty NOERROR and other types are refused', () =>
  withResolver(async (f) => {
    for (const name of ['api.example.com', 'data.cleanroom.internal']) {
      const reply = await ask(f, name, 'AAAA');
      assert.equal(reply.rcode, 'NOERROR');
      assert.deepEqual(reply.answers, []);
    }
    assert.equal((await ask(f, 'api.example.com', 'MX')).rcode, 'REFUSED');
  }));

test('unknown sources and queries to another workspace gateway are refused', () =>
  withResolver(async (f) => {
    assert.equal((await ask(f, 'data.cleanroom.internal', 'A', '127.0.0.3')).rcode, 'REFUSED');
    assert.equal((await ask(f, 'data.cleanroom.internal', 'A', '127.0.0.4')).rcode, 'REFUSED');
  }));

test('without an upstream only platform names resolve', () =>
  withResolver(
    async (f) => {
      assert.equal((await ask(f, 'api.example.com')).rcode, 'REFUSED');
      assert.equal((await ask(f, 'data.cleanroom.internal')).rcode, 'NOERROR');
    },
    { upstream: false },
  ));

test('a silent upstream yields SERVFAIL, after the upstream timeout and not before', () =>
  withResolver(async (f) => {
    const started = performance.now();
    const reply = await ask(f, 'silent.example.com');
    const elapsed = performance.now() - started;
    assert.equal(reply.rcode, 'SERVFAIL');
    assert.deepEqual(f.upstreamAsked, ['silent.example.com'], 'the question did not reach the upstream');
    assert.ok(f.logs.includes('dns upstream timed out'), JSON.stringify(f.logs));
    // Only a lower bound: a timer never fires early, but a loaded machine may fire it arbitrarily late.
    assert.ok(elapsed >= UPSTREAM_TIMEOUT_MS - 5, `answered after ${elapsed.toFixed(1)} ms, before the ${UPSTREAM_TIMEOUT_MS} ms timeout`);
  }));

test('malformed packets and responses are dropped without a reply', () =>
  withResolver(async (f) => {
    const response = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', class: 'IN', name: 'api.example.com' }] });
    const junk = [Buffer.from('definitely not dns'), Buffer.alloc(5), queryPacket('api.example.com', 'A', 77).subarray(0, 20), response];
    assert.deepEqual((await exchangeThenMarker(f, junk)).map((r) => r.id), [], 'junk was answered');
  }));

test('a source flooding the resolver is cut off at its rate, and only that source', () =>
  withResolver(async (f) => {
    const FLOODER = '127.0.0.5';
    const OTHER = '127.0.0.1';
    const BATCH = 49; // plus the marker: 50 datagrams at a time, well within the default socket buffers
    const ids = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
    const flood = async (first: number, n: number, markerFrom = FLOODER): Promise<number[]> =>
      (await exchangeThenMarker(f, ids(first, n).map((id) => queryPacket('data.cleanroom.internal', 'A', id)), FLOODER, markerFrom)).map((r) => r.id ?? -1);
    // The clock stands still. A full bucket answers exactly QUERIES_PER_SECOND queries from the source (its markers included).
    assert.equal(QUERIES_PER_SECOND % (BATCH + 1), 0);
    for (let round = 0; round < QUERIES_PER_SECOND / (BATCH + 1); round++) {
      assert.deepEqual(await flood(round * 100, BATCH), ids(round * 100, BATCH), `round ${round}: a query within the burst went unanswered`);
    }
    // The bucket is empty: nothing more from the flooder is answered, while another source still is (it sends the marker).
    assert.deepEqual(await flood(5000, BATCH, OTHER), [], 'queries beyond the rate were answered');
    // A quarter of a second refills a quarter of the rate: exactly 50 tokens (49 queries and the marker), then nothing.
    f.clock.ms += 250;
    assert.equal(QUERIES_PER_SECOND / 4, BATCH + 1);
    assert.deepEqual(await flood(6000, BATCH), ids(6000, BATCH), 'the refill answered fewer queries than the rate allows');
    assert.deepEqual(await flood(7000, 10, OTHER), [], 'the refill answered more queries than the rate allows');
  }));

test('a source forgotten when its cell goes starts with a full bucket for the next cell on its address', () =>
  withResolver(async (f) => {
    const SOURCE = '127.0.0.5';
    const BATCH = 49;
    const ids = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
    const flood = async (first: number, n: number, markerFrom = SOURCE): Promise<number[]> =>
      (await exchangeThenMarker(f, ids(first, n).map((id) => queryPacket('data.cleanroom.internal', 'A', id)), SOURCE, markerFrom)).map((r) => r.id ?? -1);
    for (let round = 0; round < QUERIES_PER_SECOND / (BATCH + 1); round++) await flood(round * 100, BATCH);
    assert.deepEqual(await flood(5000, BATCH, '127.0.0.1'), [], 'the old cell used up its bucket (control)');
    f.resolver.forget(SOURCE);
    assert.deepEqual(await flood(6000, BATCH), ids(6000, BATCH), 'the next cell on the address inherited an empty bucket');
  }));

test('an answer still in flight when the address goes to another cell is not delivered to it', () =>
  withResolver(async (f) => {
    const SOURCE = '127.0.0.6';
    const socket = await bound(SOURCE);
    const replies: Reply[] = [];
    socket.on('message', (msg) => replies.push(dnsPacket.decode(msg) as Reply));
    clients[SOURCE] = { gateway: GATEWAY, policy: { allow: [], dryRun: true }, platformNames };
    try {
      socket.send(queryPacket('silent.example.com'), f.port, GATEWAY);
      for (let i = 0; i < 100 && !f.upstreamAsked.includes('silent.example.com'); i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(f.upstreamAsked, ['silent.example.com'], 'the question did not reach the upstream');
      // The cell ends and its address goes to another cell (another policy) while the upstream has not answered.
      clients[SOURCE] = { gateway: GATEWAY, policy, platformNames };
      // The SERVFAIL would be sent right after the timeout is logged (same turn), so before a later marker's reply.
      for (let i = 0; i < REPLY_WAIT_MS / 10 && !f.logs.includes('dns upstream timed out'); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(f.logs.includes('dns upstream timed out'), JSON.stringify(f.logs));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to the marker within ${REPLY_WAIT_MS} ms`)), REPLY_WAIT_MS);
        socket.on('message', (msg) => dnsPacket.decode(msg).id === 4343 && (clearTimeout(timer), resolve()));
        socket.send(queryPacket('data.cleanroom.internal', 'A', 4343), f.port, GATEWAY);
      });
      assert.deepEqual(replies.map((r) => r.id), [4343], 'the old cell\'s answer reached the new cell');
    } finally {
      delete clients[SOURCE];
      socket.close();
    }
  }));
