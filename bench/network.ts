// bench/network.ts: cost of prepare, attach (the assignment hot path) and destroy of cell networks, sequential, as root.
// Run: npx tsc -p tsconfig.json && node dist/bench/network.js [count]   (default 40; a random agent prefix, cleaned up
// after; writes bench/results/network.json)
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeMachine } from './machine.js';
import { summarize } from './stats.js';
import { REPO_ROOT } from '../test/support/cluster.js';
import { CellNetworkHost, type CellNetwork } from '../src/agent/network/cell-network.js';
import { Ipam } from '../src/agent/network/ipam.js';
import { reconcileNetworks } from '../src/agent/network/reconcile.js';

const count = Math.max(30, Number(process.argv[2] ?? 40));
const prefix = `cr${randomBytes(3).toString('hex')}`;
const pool = '10.251.0.0/16';

function summary(name: string, samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return `${name.padEnd(8)} n=${sorted.length} median ${at(0.5).toFixed(2)} ms  p95 ${at(0.95).toFixed(2)} ms  max ${at(1).toFixed(2)} ms`;
}

async function timed<T>(samples: number[], fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await fn();
  samples.push(performance.now() - start);
  return result;
}

const host = await CellNetworkHost.open({ prefix, pool });
const ipam = new Ipam({ pool });
const prepare: number[] = [];
const attach: number[] = [];
const destroy: number[] = [];
try {
  const nets: CellNetwork[] = [];
  for (let i = 0; i < count; i++) nets.push(await timed(prepare, () => host.prepareCellNetwork(`b${i.toString(16).padStart(7, '0')}`)));
  for (const [i, net] of nets.entries()) {
    const ws = `ws${i % 3}`;
    const a = ipam.allocate(ws);
    const egress = { allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp' as const, ports: { from: 443, to: 443 } }], dryRun: i % 3 === 2 };
    await timed(attach, () => host.attachCellNetwork(net, { workspaceId: ws, address: a.address, gateway: a.gateway, gatewayPorts: [{ protocol: 'tcp', port: 8443 }], egress }));
  }
  for (const net of nets) await timed(destroy, () => host.destroyCellNetwork(net));
  console.log(summary('prepare', prepare));
  console.log(summary('attach', attach));
  console.log(summary('destroy', destroy));
  const out = { date: new Date().toISOString(), machine: describeMachine(), cells: count, prepare_ms: summarize(prepare), attach_ms: summarize(attach), destroy_ms: summarize(destroy) };
  writeFileSync(join(REPO_ROOT, 'bench/results/network.json'), JSON.stringify(out, null, 2) + '\n');
} finally {
  await host.close();
  await reconcileNetworks(prefix, []);
}
