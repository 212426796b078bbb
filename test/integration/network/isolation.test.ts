// Integration test (root): 3 workspaces x 3 cells on real netns/veth/nft; every pair probed over TCP, UDP and ICMP.
// Safety: all probe targets are cells, gateway addresses, or an "internet" netns this test creates; policy routing sends
// every packet from the test pool into that netns (or nowhere), so nothing a cell sends can leave the machine.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { existsSync, readdirSync } from 'node:fs';
import { connect, createServer, type Server, type Socket as NetSocket } from 'node:net';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { CellNetworkHost, type CellNetwork } from '../../../src/agent/network/cell-network.js';
import type { DeniedRecord } from '../../../src/agent/network/denied-log.js';
import type { EgressPolicy } from '../../../src/shared/net/egress-policy.js';
import { Ipam, type CellAddress } from '../../../src/agent/network/ipam.js';
import { hubNetnsName, isCellHostIf, uplinkIfName, uplinkNames } from '../../../src/agent/network/names.js';
import { reconcileNetworks } from '../../../src/agent/network/reconcile.js';
import { policyChainName } from '../../../src/agent/network/nft-ruleset.js';

const sh = promisify(execFile);
const tag = randomBytes(2).toString('hex');
const prefix = `cr${randomBytes(3).toString('hex')}`;
const pool = `10.${200 + (randomBytes(1)[0] ?? 0) % 50}.0.0/16`;
const inetNs = `crt${tag}-inet`;
const inetIf = `crt${tag}inet`;
const table = 7700 + (randomBytes(1)[0] ?? 0);
const GW_TCP = 9443;
const GW_TCP_DENIED = 9444;
const GW_UDP = 9053;
/** A gateway TCP port whose host-side listener keeps every connection open and records what arrives on it. */
const GW_HOLD = 9445;

const CELL_SERVER = `
import socket,threading,sys
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('0.0.0.0',7001))
def udp():
  while True:
    d,a=u.recvfrom(64);u.sendto(b'cell',a)
threading.Thread(target=udp,daemon=True).start()
t=socket.socket();t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);t.bind(('0.0.0.0',7000));t.listen(64)
while True:
  c,_=t.accept();c.sendall(b'cell');c.close()
`;
const INET_SERVER = `
import socket,threading
def tcp(p):
  t=socket.socket();t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);t.bind(('0.0.0.0',p));t.listen(64)
  while True:
    c,_=t.accept();c.sendall(b'inet');c.close()
for p in (80,8080,8081): threading.Thread(target=tcp,args=(p,),daemon=True).start()
def udp(h):
  u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind((h,5353))
  while True:
    d,a=u.recvfrom(64);u.sendto(b'inet',a)
threading.Thread(target=udp,args=('203.0.113.10',),daemon=True).start()
udp('203.0.113.20')
`;
// Probes run concurrently in one process per source cell; results: open:<reply> | refused | timeout | sent | error:<x>.
const PROBE = `
import json,socket,sys,threading,struct,os,time
T=json.loads(sys.argv[1]);R=[None]*len(T)
def ck(b):
  if len(b)%2:b+=b'\\0'
  s=sum(struct.unpack('!%dH'%(len(b)//2),b));s=(s>>16)+(s&0xffff);s+=s>>16;return ~s&0xffff
def iphdr(src,dst,plen):
  h=struct.pack('!BBHHHBBH4s4s',0x45,0,20+plen,0,0,64,17,0,socket.inet_aton(src),socket.inet_aton(dst));return h[:10]+struct.pack('!H',ck(h))+h[12:]
def udp(src,dst,port,data):
  u=struct.pack('!HHHH',40000,port,8+len(data),0)+data;return iphdr(src,dst,len(u))+u
def probe(i,t):
  k=t['kind'];h=t['host'];to=1.5
  try:
    if k=='tcp':
      s=socket.socket();s.settimeout(to);s.connect((h,t['port']));R[i]='open:'+s.recv(64).decode()
    elif k=='udp':
      s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(to);s.sendto(b'ping',(h,t['port']));R[i]='open:'+s.recvfrom(64)[0].decode()
    elif k=='icmp':
      s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP);s.settimeout(to);ident=(os.getpid()*64+i)&0xffff
      p=struct.pack('!BBHHH',8,0,0,ident,1)+b'probe';p=p[:2]+struct.pack('!H',ck(p))+p[4:];s.sendto(p,(h,0));end=time.time()+to
      while R[i] is None:
        s.settimeout(max(0.01,end-time.time()));d,a=s.recvfrom(256);l=(d[0]&15)*4
        if a[0]==h and d[l]==0 and struct.unpack('!H',d[l+4:l+6])[0]==ident:R[i]='open:echo'
    elif k=='spoofip':
      s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW);s.sendto(udp(t['src'],h,t['port'],t['data'].encode()),(h,0));R[i]='sent'
    elif k=='spoofmac':
      s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(('eth0',0))
      f=bytes.fromhex(t['dmac'].replace(':',''))+bytes.fromhex(t['smac'].replace(':',''))+b'\\x08\\x00'+udp(t['src'],h,t['port'],t['data'].encode())
      s.send(f);R[i]='sent'
  except ConnectionRefusedError:R[i]='refused'
  except (socket.timeout,TimeoutError):R[i]='timeout'
  except OSError as e:R[i]='error:%s'%e.errno
ts=[threading.Thread(target=probe,args=(i,t)) for i,t in enumerate(T)]
[x.start() for x in ts];[x.join() for x in ts];print(json.dumps(R))
`;

interface Probe { kind: 'tcp' | 'udp' | 'icmp' | 'spoofip' | 'spoofmac'; host: string; port?: number; src?: string; smac?: string; dmac?: string; data?: string; expect: 'open' | 'blocked' | 'sent'; what: string }
interface Cell { net: CellNetwork; ws: string; addr: CellAddress }

const WORKSPACES: Record<string, EgressPolicy> = {
  wsa: { allow: [{ cidr: '203.0.113.10/32', protocol: 'tcp', ports: { from: 8080, to: 8080 } }], dryRun: false },
  wsb: { allow: [{ cidr: '203.0.113.0/24', protocol: 'udp', ports: { from: 5353, to: 5353 } }, { cidr: '203.0.113.10/32', protocol: 'icmp' }], dryRun: false },
  wsc: { allow: [], dryRun: true },
};
const EGRESS: Array<{ kind: 'tcp' | 'udp' | 'icmp'; host: string; port?: number; open: string[] }> = [
  { kind: 'tcp', host: '203.0.113.10', port: 8080, open: ['wsa', 'wsc'] },
  { kind: 'tcp', host: '203.0.113.10', port: 8081, open: ['wsc'] },
  { kind: 'tcp', host: '203.0.113.20', port: 8080, open: ['wsc'] },
  { kind: 'udp', host: '203.0.113.20', port: 5353, open: ['wsb', 'wsc'] },
  { kind: 'icmp', host: '203.0.113.10', open: ['wsb', 'wsc'] },
  { kind: 'tcp', host: '169.254.169.254', port: 80, open: [] },
];

let host: CellNetworkHost | undefined;
const children: ChildProcess[] = [];
const servers: Server[] = [];
const udpSeen: string[] = [];
const udpServers: Socket[] = [];
const heldSockets: NetSocket[] = [];
const denied: DeniedRecord[] = [];
const cells: Cell[] = [];

async function ipBatch(lines: string[], allowFailure = false): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => (code === 0 || allowFailure ? resolve() : reject(new Error(err))));
    child.stdin.end(lines.join('\n') + '\n');
  });
}

function startIn(netns: string, script: string): void {
  children.push(spawn('ip', ['netns', 'exec', netns, '/usr/bin/python3', '-c', script], { stdio: 'ignore' }));
}

async function runProbes(netns: string, probes: Probe[]): Promise<string[]> {
  const { stdout } = await sh('ip', ['netns', 'exec', netns, '/usr/bin/python3', '-c', PROBE, JSON.stringify(probes)], { timeout: 20000 });
  return JSON.parse(stdout) as string[];
}

function tcpListen(address: string, port: number, reply: string): Promise<void> {
  const server = createServer((s) => s.end(reply));
  servers.push(server);
  return new Promise((resolve, reject) => server.once('error', reject).listen(port, address, resolve));
}

async function cleanup(): Promise<void> {
  for (const c of children) c.kill('SIGKILL');
  for (const s of heldSockets) s.destroy();
  for (const s of servers) s.close();
  for (const u of udpServers) u.close();
  await host?.close();
  await reconcileNetworks(prefix, []);
  await ipBatch([`link del ${inetIf}`, `netns del ${inetNs}`, ...[0, 1, 2].map((i) => `rule del pref ${table + i}`), `route flush table ${table}`], true);
}

let setUp = false;

before(async () => {
  // Root-only: it drives real netns, veth and nftables. CI runs as root; anywhere else it fails, never passes unrun.
  assert.equal(process.getuid?.(), 0, 'this test needs root (network namespaces, veth, nftables): run it as root, as CI does');
  setUp = true;
  await ipBatch([
    `netns add ${inetNs}`,
    `link add ${inetIf} type veth peer name eth0 netns ${inetNs}`,
    `address add 198.51.100.1/30 dev ${inetIf}`,
    `link set ${inetIf} up`,
    `rule add from ${pool} lookup ${table} pref ${table}`,
    `rule add from ${pool} lookup main suppress_prefixlength 0 pref ${table + 1}`,
    `rule add from ${pool} unreachable pref ${table + 2}`,
    `route add 203.0.113.0/24 via 198.51.100.2 dev ${inetIf} table ${table}`,
    `route add 169.254.0.0/16 via 198.51.100.2 dev ${inetIf} table ${table}`,
  ]);
  await sh('sysctl', ['-q', '-w', `net.ipv4.conf.${inetIf}.forwarding=1`]);
  await ipBatch(['link set lo up', 'link set eth0 up', 'address add 198.51.100.2/30 dev eth0', 'address add 203.0.113.10/32 dev lo', 'address add 203.0.113.20/32 dev lo', 'address add 169.254.169.254/32 dev lo'].map((l) => `netns exec ${inetNs} ip ${l}`));
  startIn(inetNs, INET_SERVER);
  // Records are delivered only by flushDenied, so a test decides when a late record is read.
  host = await CellNetworkHost.open({ prefix, pool, deniedPollMs: 3_600_000 });
  host.onDenied((r) => denied.push(r));
});

after(async () => {
  if (setUp) await cleanup();
});

test('3 workspaces x 3 cells: isolation, gateway, anti-spoof, metadata, egress allow-list, dry run', async () => {
  const h = host!;
  const ipam = new Ipam({ pool });
  const prepared = await Promise.all(Array.from({ length: 9 }, (_, i) => h.prepareCellNetwork(`${tag}${i.toString(16).padStart(4, '0')}`)));
  for (const [i, net] of prepared.entries()) {
    const ws = Object.keys(WORKSPACES)[Math.floor(i / 3)]!;
    const addr = ipam.allocate(ws);
    await h.attachCellNetwork(net, { workspaceId: ws, address: addr.address, gateway: addr.gateway, gatewayPorts: [{ protocol: 'tcp', port: GW_TCP }, { protocol: 'udp', port: GW_UDP }], egress: WORKSPACES[ws]! });
    cells.push({ net, ws, addr });
    startIn(net.names.netns, CELL_SERVER);
  }
  const gateways = [...new Set(cells.map((c) => c.addr.gateway))];
  for (const gw of gateways) {
    await tcpListen(gw, GW_TCP, 'gw');
    await tcpListen(gw, GW_TCP_DENIED, 'gw-denied');
  }
  await tcpListen('198.51.100.1', GW_TCP, 'host');
  for (const gw of gateways) {
    const u = createSocket('udp4');
    udpServers.push(u);
    u.on('message', (msg, rinfo) => {
      udpSeen.push(msg.toString());
      u.send('gw', rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => u.bind(GW_UDP, gw, resolve));
  }
  for (const c of cells) {
    // Positive control: the host (not a cell) reaches each cell's listener, so a "blocked" below is the firewall. The
    // python listeners take a moment to start (longer on a busy host): retry until one answers, for up to 20 s.
    const ask = () =>
      new Promise<string>((resolve, reject) => {
        const s = connect(7000, c.addr.address);
        s.setTimeout(2000, () => (s.destroy(), reject(new Error('control timeout'))));
        s.once('error', reject).on('data', (d) => (s.destroy(), resolve(d.toString())));
      });
    let reply = '';
    for (let deadline = Date.now() + 20_000; ; ) {
      try {
        reply = await ask();
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`the host never reached cell ${c.addr.address}'s listener: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(reply, 'cell');
  }

  const plans = cells.map((src) => {
    const probes: Probe[] = [];
    const other = cells.find((c) => c.ws !== src.ws)!;
    for (const dst of cells.filter((c) => c !== src)) {
      const d = dst.addr.address;
      probes.push({ kind: 'tcp', host: d, port: 7000, expect: 'blocked', what: `tcp ${dst.ws}` }, { kind: 'udp', host: d, port: 7001, expect: 'blocked', what: `udp ${dst.ws}` }, { kind: 'icmp', host: d, expect: 'blocked', what: `icmp ${dst.ws}` });
    }
    const gw = src.addr.gateway;
    probes.push(
      { kind: 'tcp', host: gw, port: GW_TCP, expect: 'open', what: 'own gateway tcp' },
      { kind: 'udp', host: gw, port: GW_UDP, expect: 'open', what: 'own gateway udp' },
      { kind: 'tcp', host: gw, port: GW_TCP_DENIED, expect: 'blocked', what: 'own gateway, port not allowed' },
      { kind: 'icmp', host: gw, expect: 'blocked', what: 'own gateway icmp' },
      { kind: 'tcp', host: other.addr.gateway, port: GW_TCP, expect: 'blocked', what: 'other workspace gateway' },
      { kind: 'tcp', host: '198.51.100.1', port: GW_TCP, expect: 'blocked', what: 'other host address' },
      { kind: 'spoofip', host: gw, port: GW_UDP, src: other.addr.address, data: `spoofip-${src.net.cellId}`, expect: 'sent', what: 'spoofed source address' },
      { kind: 'spoofmac', host: gw, port: GW_UDP, src: src.addr.address, smac: '02:de:ad:be:ef:01', dmac: src.net.names.hostMac, data: `spoofmac-${src.net.cellId}`, expect: 'sent', what: 'spoofed source MAC' },
      { kind: 'spoofmac', host: gw, port: GW_UDP, src: src.addr.address, smac: src.net.names.cellMac, dmac: src.net.names.hostMac, data: `raw-${src.net.cellId}`, expect: 'sent', what: 'raw frame, genuine addresses (control)' },
      ...EGRESS.map((e): Probe => ({ kind: e.kind, host: e.host, ...(e.port ? { port: e.port } : {}), expect: e.open.includes(src.ws) ? 'open' : 'blocked', what: `egress ${e.kind} ${e.host}:${e.port ?? ''}` })),
    );
    return { src, probes };
  });
  try {
    // Every host side lives in the hub, none in the host's netns.
    const inHub = await hubLinks();
    for (const c of cells) {
      assert.ok(inHub.includes(c.net.names.hostIf), `${c.net.names.hostIf} in the hub`);
      assert.ok(!existsSync(`/sys/class/net/${c.net.names.hostIf}`), `${c.net.names.hostIf} is not in the host's netns`);
    }
    await checkMatrix(plans);
    // The cells used the network (through the host's stateful table), yet the hub tracked nothing: a veth going down
    // there schedules no walk of a conntrack table, and its ruleset has nothing that would make it track.
    assert.equal(await inHubNetns(['cat', '/proc/sys/net/netfilter/nf_conntrack_count']), '0', 'the hub tracks connections');
    const hubRules = await inHubNetns(['nft', 'list', 'ruleset']);
    assert.match(hubRules, /src_ok/);
    assert.doesNotMatch(hubRules, /\bct\b|\bnat\b|masquerade|snat|dnat|notrack|\blog\b/, 'the hub ruleset is not stateless');
  } finally {
    await Promise.all(cells.map((c) => h.destroyCellNetwork(c.net)));
  }
  await assertNothingOf(cells.map((c) => c.net));
  assert.equal(await inHubNetns(['cat', '/proc/sys/net/netfilter/nf_conntrack_count']), '0', 'the hub tracks connections after the wipes');
  const state = await tableState();
  assert.deepEqual(state.cellElements, [], 'no per-cell element after destroy');
  // Idle policy chains stay for the next cell of the same policy (nothing jumps to them any more): one per policy used.
  assert.deepEqual(state.policyChains.sort(), [...new Set(cells.map((c) => policyChainName(WORKSPACES[c.ws]!)))].sort(), 'one idle chain per policy used, kept for reuse');
});

// Runs a Python snippet in a netns and returns its stdout (trimmed).
async function py(netns: string, script: string, ...args: string[]): Promise<string> {
  const { stdout } = await sh('ip', ['netns', 'exec', netns, '/usr/bin/python3', '-c', script, ...args], { timeout: 20000 });
  return stdout.trim();
}

// Sends one UDP datagram with a source of its choice (raw socket): src sport dst dport data.
const RAW_UDP = `
import socket,struct,sys
src,sp,dst,dp,data=sys.argv[1],int(sys.argv[2]),sys.argv[3],int(sys.argv[4]),sys.argv[5].encode()
def ck(b):
  if len(b)%2:b+=b'\\0'
  s=sum(struct.unpack('!%dH'%(len(b)//2),b));s=(s>>16)+(s&0xffff);s+=s>>16;return ~s&0xffff
u=struct.pack('!HHHH',sp,dp,8+len(data),0)+data
h=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(u),0,0,64,17,0,socket.inet_aton(src),socket.inet_aton(dst));h=h[:10]+struct.pack('!H',ck(h))+h[12:]
socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW).sendto(h+u,(dst,0))
`;
// In a cell: UDP from port argv[1] to 203.0.113.10:5353 (one exchange, so the flow is established), then a TCP connect
// to 203.0.113.20:argv[2] (denied), then prints every datagram that reaches port argv[1] within argv[3] seconds.
const FLOW_THEN_LISTEN = `
import socket,sys,time
p,dport,wait=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3])
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('0.0.0.0',p));u.settimeout(2)
if sys.argv[4]=='flow':
  u.sendto(b'hi',('203.0.113.10',5353));print('reply:'+u.recvfrom(64)[0].decode(),flush=True)
t=socket.socket();t.settimeout(0.5)
try:t.connect(('203.0.113.20',dport))
except OSError:pass
print('ready',flush=True)
end=time.time()+wait
while time.time()<end:
  u.settimeout(max(0.01,end-time.time()))
  try:print('got:'+u.recvfrom(64)[0].decode(),flush=True)
  except (socket.timeout,TimeoutError):break
`;

// In a cell: one TCP connection to argv[1]:argv[2] per further argument, which it sends; once the host has acknowledged
// it, TCP_REPAIR (19) reads the connection's next sequence numbers (TCP_REPAIR_QUEUE 20: send 2, receive 1; TCP_QUEUE_SEQ
// 21) and makes the close silent (no FIN, no RST), so the host's side stays open, as it does when a cell's FIN is lost.
// Prints [[local port, next seq, next ack], ...].
const HOLD_OPEN = `
import socket,fcntl,struct,sys,time,json
gw,port=sys.argv[1],int(sys.argv[2]);out=[];keep=[]
for tag in sys.argv[3:]:
  s=socket.socket();s.settimeout(3);s.connect((gw,port));s.sendall(tag.encode());keep.append(s);end=time.time()+5
  while struct.unpack('i',fcntl.ioctl(s,0x5411,b'\\0'*4))[0] and time.time()<end:time.sleep(0.01)
  s.setsockopt(socket.IPPROTO_TCP,19,1)
  s.setsockopt(socket.IPPROTO_TCP,20,2);snd=s.getsockopt(socket.IPPROTO_TCP,21)&0xffffffff
  s.setsockopt(socket.IPPROTO_TCP,20,1);rcv=s.getsockopt(socket.IPPROTO_TCP,21)&0xffffffff
  out.append([s.getsockname()[1],snd,rcv])
print(json.dumps(out))
`;
// Sends one TCP segment (PSH+ACK, raw socket) along an existing connection: src sport dst dport seq ack data.
const RAW_TCP = `
import socket,struct,sys
src,sp,dst,dp,seq,ack,data=sys.argv[1],int(sys.argv[2]),sys.argv[3],int(sys.argv[4]),int(sys.argv[5]),int(sys.argv[6]),sys.argv[7].encode()
def ck(b):
  if len(b)%2:b+=b'\\0'
  s=sum(struct.unpack('!%dH'%(len(b)//2),b));s=(s>>16)+(s&0xffff);s+=s>>16;return ~s&0xffff
t=struct.pack('!HHIIBBHHH',sp,dp,seq,ack,5<<4,0x18,65535,0,0)+data
t=t[:16]+struct.pack('!H',ck(socket.inet_aton(src)+socket.inet_aton(dst)+struct.pack('!BBH',0,6,len(t))+t))+t[18:]
h=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(t),0,0,64,6,0,socket.inet_aton(src),socket.inet_aton(dst));h=h[:10]+struct.pack('!H',ck(h))+h[12:]
socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW).sendto(h+t,(dst,0))
`;

// Polls `done` every 20 ms for up to 10 s; false if it never held.
async function eventually(done: () => boolean): Promise<boolean> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 20));
  return done();
}

// Starts FLOW_THEN_LISTEN in a cell; resolves with its output lines once it printed 'ready', and with all of them at the end.
function flowThenListen(netns: string, port: number, deniedPort: number, seconds: number, flow: boolean): { ready: Promise<void>; done: Promise<string[]> } {
  const child = spawn('ip', ['netns', 'exec', netns, '/usr/bin/python3', '-c', FLOW_THEN_LISTEN, `${port}`, `${deniedPort}`, `${seconds}`, flow ? 'flow' : 'none'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('ready')) markReady();
  });
  const done = new Promise<string[]>((resolve) => child.on('close', () => (markReady(), resolve(out.trim().split('\n')))));
  return { ready, done };
}

test('a cell on an ended cell’s address inherits none of its flows or denial records; cell sources from elsewhere are dropped; the host answers cells from the uplink', async () => {
  const h = host!;
  const ipam = new Ipam({ pool });
  const [oldNet, newNet] = (await Promise.all(['a1', 'a2'].map((id) => h.prepareCellNetwork(`${tag}${id}`)))) as [CellNetwork, CellNetwork];
  const nets = [oldNet, newNet];
  try {
    const first = ipam.allocate('wsx');
    const ports = [{ protocol: 'udp' as const, port: GW_UDP }, { protocol: 'tcp' as const, port: GW_HOLD }];
    await h.attachCellNetwork(oldNet, { workspaceId: 'wsx', address: first.address, gateway: first.gateway, gatewayPorts: ports, egress: WORKSPACES.wsb! });
    // The host's side of the gateway TCP port: every connection stays open, keyed by the cell's port.
    const held = new Map<number, { data: string; closed: boolean }>();
    const hold = createServer((s) => {
      const entry = { data: '', closed: false };
      held.set(s.remotePort ?? 0, entry);
      heldSockets.push(s);
      s.on('data', (d: Buffer) => (entry.data += d.toString())).on('error', () => {}).on('close', () => (entry.closed = true));
    });
    servers.push(hold);
    await new Promise<void>((resolve, reject) => hold.once('error', reject).listen(GW_HOLD, first.gateway, resolve));
    // The old cell opens two connections to its gateway and leaves both open on the host's side. With the numbers of
    // the first, a forged segment from the old cell is taken as part of that connection: the control for the forgery
    // the next cell tries on the second below.
    const [ctlConn, leftConn] = JSON.parse(await py(oldNet.names.netns, HOLD_OPEN, first.gateway, `${GW_HOLD}`, 'ctl', 'old')) as Array<[number, number, number]>;
    assert.ok(await eventually(() => held.get(ctlConn![0])?.data === 'ctl' && held.get(leftConn![0])?.data === 'old'), 'the old cell’s gateway connections');
    await py(oldNet.names.netns, RAW_TCP, first.address, `${ctlConn![0]}`, first.gateway, `${GW_HOLD}`, `${ctlConn![1]}`, `${ctlConn![2]}`, '+forged');
    assert.ok(await eventually(() => held.get(ctlConn![0])?.data === 'ctl+forged'), `a forged segment of the cell's own connection arrives (control): ${JSON.stringify([...held])}`);
    // And one UDP exchange with the gateway (as with the resolver) from a port the next cell uses again below.
    const udpPort = 42000 + (randomBytes(2).readUInt16BE(0) % 2000);
    const udpAsk = `import socket,sys;u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('0.0.0.0',${udpPort}));u.settimeout(3);u.sendto(sys.argv[2].encode(),(sys.argv[1],${GW_UDP}));print(u.recvfrom(64)[0].decode())`;
    assert.equal(await py(oldNet.names.netns, udpAsk, first.gateway, `old-udp-${tag}`), 'gw');
    const port = 41000 + (randomBytes(2).readUInt16BE(0) % 2000);
    // The old cell: one UDP exchange with the internet (allowed: the flow is established, masqueraded as the host's
    // address on the lab link, port kept), a denied TCP attempt to :8081, then it listens on its port.
    const oldRun = flowThenListen(oldNet.names.netns, port, 8081, 3, true);
    await oldRun.ready;
    // Positive control: a datagram along the flow's reply direction reaches the old cell.
    await py(inetNs, RAW_UDP, '203.0.113.10', '5353', '198.51.100.1', `${port}`, 'late-old');
    const oldOut = await oldRun.done;
    assert.ok(oldOut.includes('reply:inet') && oldOut.includes('got:late-old'), `the old cell's flow works: ${oldOut.join(' | ')}`);

    // The old cell ends; the next workspace gets the same address at once (its flow's conntrack entry is still there).
    await h.destroyCellNetwork(oldNet);
    ipam.release('wsx', first.address);
    const reused = ipam.claim('wsy', first.address);
    await h.attachCellNetwork(newNet, { workspaceId: 'wsy', address: reused.address, gateway: reused.gateway, gatewayPorts: ports, egress: WORKSPACES.wsa! });
    const newRun = flowThenListen(newNet.names.netns, port, 8080, 2, false);
    await newRun.ready;
    await py(inetNs, RAW_UDP, '203.0.113.10', '5353', '198.51.100.1', `${port}`, 'late-new');
    // A LAN host spoofing the (bound) cell's address towards the host is dropped before conntrack; a genuine source passes.
    const lanSeen: string[] = [];
    const lan = createSocket('udp4');
    udpServers.push(lan);
    lan.on('message', (m) => lanSeen.push(m.toString()));
    await new Promise<void>((resolve) => lan.bind(GW_UDP + 1, '198.51.100.1', resolve));
    await py(inetNs, RAW_UDP, reused.address, '40000', '198.51.100.1', `${GW_UDP + 1}`, 'spoofed-cell');
    await py(inetNs, RAW_UDP, '198.51.100.2', '40000', '198.51.100.1', `${GW_UDP + 1}`, 'genuine');
    const newOut = await newRun.done;
    assert.ok(!newOut.some((l) => l.startsWith('got:')), `the new cell got the old cell's flow: ${newOut.join(' | ')}`);
    // The old cell's second gateway connection is still open on the host's side; the new cell, on the same address,
    // forges a segment of it (it knows the numbers, as a colluding old workload could tell it): the host must not take it.
    assert.equal(held.get(leftConn![0])?.closed, false, 'the old cell’s connection is open on the host’s side');
    await py(newNet.names.netns, RAW_TCP, reused.address, `${leftConn![0]}`, reused.gateway, `${GW_HOLD}`, `${leftConn![1]}`, `${leftConn![2]}`, '+inherited');
    // The new cell's own connection to the same port works, and arrives after the forged segment would have.
    await py(newNet.names.netns, `import socket,sys;s=socket.create_connection((sys.argv[1],${GW_HOLD}),3);s.sendall(b'new');s.close()`, reused.gateway);
    assert.ok(await eventually(() => [...held.values()].some((e) => e.data === 'new')), 'the new cell reaches its gateway port');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(held.get(leftConn![0])?.data, 'old', 'the new cell used a connection the old cell left open to the gateway');
    // A datagram to the gateway on the old cell's UDP flow (same ports) is the new cell's like any other: it carries no
    // state of the old cell, and refusing it would fail a query whose random port the old cell happened to use.
    assert.equal(await py(newNet.names.netns, udpAsk, reused.gateway, `new-udp-${tag}`), 'gw');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(lanSeen, ['genuine'], 'a cell source from another interface is dropped (control: a genuine one arrives)');

    // What the host itself sends a cell (here: TTL exceeded for a datagram it would forward) comes from the uplink's
    // link-local address, not from the host's LAN address or a gateway.
    const icmpFrom = await py(
      newNet.names.netns,
      `
import socket,time
r=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP);r.settimeout(2)
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,2);u.sendto(b'x',('203.0.113.10',5353))
try:
  while True:
    d,a=r.recvfrom(512)
    if d[(d[0]&15)*4]==11:print(a[0]);break
except (socket.timeout,TimeoutError):print('none')
`,
    );
    assert.equal(icmpFrom, uplinkNames(prefix).hostHop, 'source of the host’s TTL-exceeded to a cell');

    // Records are read only now, after the address went to the new cell: each names the cell that sent it.
    h.flushDenied();
    const mine = denied.filter((r) => r.source === first.address && r.destination === '203.0.113.20');
    assert.ok(mine.some((r) => r.cellId === oldNet.cellId && r.port === 8081), `the old cell's late record names it: ${JSON.stringify(mine)}`);
    assert.ok(mine.some((r) => r.cellId === newNet.cellId && r.port === 8080), `the new cell's record names it: ${JSON.stringify(mine)}`);
    assert.deepEqual(mine.filter((r) => r.cellId === newNet.cellId && r.port !== 8080), [], 'a record of the old cell named the new one');
    const forged = denied.filter((r) => r.source === first.address && r.destination === first.gateway && r.port === GW_HOLD);
    assert.ok(forged.length > 0 && forged.every((r) => r.cellId === newNet.cellId), `the forged segment is denied as the new cell's: ${JSON.stringify(forged)}`);

    // A gVisor-style cell, addressed at prepare: nothing it sends arrives before attach; after attach it does.
    const pre = ipam.allocate('wsy');
    const preNet2 = await h.prepareCellNetwork(`${tag}a4`, { address: pre.address, gateway: pre.gateway });
    nets.push(preNet2);
    const sendGw = (data: string): Promise<string> => py(preNet2.names.netns, `import socket;socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'${data}',('${pre.gateway}',${GW_UDP}))`);
    await sendGw(`pre-${tag}`);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!udpSeen.includes(`pre-${tag}`), 'a pre-addressed cell reached its gateway before attach');
    await h.attachCellNetwork(preNet2, { workspaceId: 'wsy', address: pre.address, gateway: pre.gateway, gatewayPorts: ports, egress: WORKSPACES.wsa! });
    await sendGw(`post-${tag}`);
    for (let i = 0; i < 20 && !udpSeen.includes(`post-${tag}`); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(udpSeen.includes(`post-${tag}`), 'a pre-addressed cell reaches its gateway after attach');
  } finally {
    await Promise.all(nets.map((n) => h.destroyCellNetwork(n)));
  }
});

// tableState lists the per-cell sets/maps of the host's table and the hub's that still hold elements, and the policy
// chains (rate-limit sets expire alone).
async function tableState(): Promise<{ cellElements: unknown[]; policyChains: string[] }> {
  type Items = { nftables: Array<Record<string, { name?: string; elem?: unknown[] }>> };
  const items = (JSON.parse((await sh('nft', ['-j', 'list', 'table', 'inet', prefix])).stdout) as Items).nftables;
  const hubItems = (JSON.parse(await inHubNetns(['nft', '-j', 'list', 'table', 'inet', prefix])) as Items).nftables;
  const perCell = ['src_ok', 'gw_allow', 'cell_egress', 'cell_mark', 'cell_flow'];
  return {
    cellElements: [...items, ...hubItems].flatMap((i) => [i.set, i.map]).filter((x) => x && perCell.includes(x.name ?? '') && x.elem?.length),
    policyChains: items.flatMap((i) => (i.chain?.name?.startsWith('eg_') ? [i.chain.name] : [])),
  };
}

// Runs a command inside the agent's hub netns (nsenter: no mount namespace of its own) and returns its trimmed output.
async function inHubNetns(argv: string[]): Promise<string> {
  return (await sh('nsenter', [`--net=/run/netns/${hubNetnsName(prefix)}`, ...argv])).stdout.trim();
}

// The interfaces in the agent's hub.
async function hubLinks(): Promise<string[]> {
  if (!existsSync(`/run/netns/${hubNetnsName(prefix)}`)) return [];
  return (JSON.parse((await sh('ip', ['-n', hubNetnsName(prefix), '-j', 'link', 'show'])).stdout) as Array<{ ifname: string }>).map((l) => l.ifname);
}

async function checkMatrix(plans: Array<{ src: Cell; probes: Probe[] }>): Promise<void> {
  const results = await Promise.all(plans.map((p) => runProbes(p.src.net.names.netns, p.probes)));
  const failures: string[] = [];
  let total = 0;
  for (const [i, plan] of plans.entries()) {
    for (const [j, probe] of plan.probes.entries()) {
      total++;
      const got = results[i]?.[j] ?? 'missing';
      const ok = probe.expect === 'open' ? got.startsWith('open:') : probe.expect === 'sent' ? got === 'sent' : got === 'timeout';
      if (!ok) failures.push(`${plan.src.ws}/${plan.src.net.cellId} ${probe.what} ${probe.host}:${probe.port ?? ''}: expected ${probe.expect}, got ${got}`);
    }
  }
  await new Promise((r) => setTimeout(r, 300));
  for (const c of cells) {
    if (!udpSeen.includes(`raw-${c.net.cellId}`)) failures.push(`${c.net.cellId}: raw control frame not received`);
    if (udpSeen.includes(`spoofip-${c.net.cellId}`)) failures.push(`${c.net.cellId}: spoofed source address accepted`);
    if (udpSeen.includes(`spoofmac-${c.net.cellId}`)) failures.push(`${c.net.cellId}: spoofed MAC accepted`);
  }
  host!.flushDenied();
  for (const c of cells.filter((x) => x.ws !== 'wsb')) {
    const action = c.ws === 'wsc' ? 'dry-run' : 'denied';
    const rec = denied.find((r) => r.cellId === c.net.cellId && r.action === action && r.destination === '203.0.113.20' && r.port === 8080 && r.protocol === 'tcp');
    if (!rec) failures.push(`${c.net.cellId}: no ${action} record for 203.0.113.20:8080/tcp`);
    else if (Math.abs(rec.time.getTime() - Date.now()) > 30000) failures.push(`${c.net.cellId}: record time off: ${rec.time.toISOString()}`);
  }
  for (const c of cells) {
    if (!denied.some((r) => r.cellId === c.net.cellId && r.action === 'denied' && r.destination === '169.254.169.254')) failures.push(`${c.net.cellId}: metadata probe not recorded`);
  }
  console.log(`probes: ${total}, failures: ${failures.length}, denial records: ${denied.length}`);
  assert.deepEqual(failures, []);
}

test('reconcile removes every network object of cells that are not live', async () => {
  const h = host!;
  const ipam = new Ipam({ pool });
  const nets = await Promise.all(['r1', 'r2', 'r3'].map((id) => h.prepareCellNetwork(`${tag}${id}`)));
  for (const net of nets.slice(1)) {
    const a = ipam.allocate('wsr');
    await h.attachCellNetwork(net, { workspaceId: 'wsr', address: a.address, gateway: a.gateway, gatewayPorts: [{ protocol: 'tcp', port: GW_TCP }], egress: WORKSPACES.wsa! });
  }
  const [dead1, dead2, live] = nets as [CellNetwork, CellNetwork, CellNetwork];
  const report = await reconcileNetworks(prefix, [live.cellId]);
  assert.deepEqual(report.netns.sort(), [dead1.names.netns, dead2.names.netns].sort());
  await assertNothingOf([dead1, dead2]);
  assert.ok(existsSync(live.netnsPath) && (await hubLinks()).includes(live.names.hostIf), 'live cell kept');
  assert.ok(existsSync(`/run/netns/${hubNetnsName(prefix)}`) && existsSync(`/sys/class/net/${uplinkIfName(prefix)}`), 'hub and uplink kept while a cell lives');
  const state = JSON.stringify(await tableState());
  assert.ok(!state.includes(dead2.names.hostIf) && !state.includes(`"${dead2.attached!.address}"`), 'dead elements removed');
  assert.ok(state.includes(live.names.hostIf) && state.includes(`"${live.attached!.address}"`) && state.includes('eg_'), 'live elements and policy chain kept');
  const all = await reconcileNetworks(prefix, []);
  assert.ok(all.tableRemoved);
  assert.ok(all.netns.includes(hubNetnsName(prefix)) && all.links.includes(uplinkIfName(prefix)), JSON.stringify(all));
  await assertNothingOf([live]);
  assert.deepEqual(readdirSync('/sys/class/net').filter((n) => n.startsWith(prefix)), []);
  assert.deepEqual(readdirSync('/run/netns').filter((n) => n.startsWith(prefix)), []);
});

// A destroyed cell's netns and veth pair (host side in the hub) are gone, even while a process still holds the netns.
async function assertNothingOf(nets: CellNetwork[]): Promise<void> {
  for (const net of nets) assert.ok(!existsSync(net.netnsPath), `netns ${net.names.netns} removed`);
  const left = (await hubLinks()).filter((n) => isCellHostIf(prefix, n) && nets.some((x) => x.names.hostIf === n));
  assert.deepEqual(left, [], 'veths of destroyed cells left in the hub');
  assert.deepEqual(readdirSync('/sys/class/net').filter((n) => isCellHostIf(prefix, n)), [], 'cell veths in the host netns');
}
