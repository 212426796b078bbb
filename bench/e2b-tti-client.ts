// bench/e2b-tti-client.ts: the e2b SDK's side of "time to interactive", in its own process (the SDK's TLS trust comes
// from NODE_EXTRA_CA_CERTS, read at process start). `node e2b-tti-client.js seq N` or `burst N` prints a JSON array of
// milliseconds: Sandbox.create() until the first commands.run('node -v') returns, each sandbox killed afterwards.
import { Sandbox } from 'e2b';

async function once(): Promise<number> {
  const t0 = performance.now();
  const sbx = await Sandbox.create();
  const r = await sbx.commands.run('node -v');
  const ms = performance.now() - t0;
  if (!r.stdout.startsWith('v')) throw new Error(`node -v printed ${JSON.stringify(r.stdout)}`);
  await sbx.kill();
  return ms;
}

const [mode, count] = [process.argv[2], Number(process.argv[3] ?? '1')];
const samples: number[] = [];
if (mode === 'seq') for (let i = 0; i < count; i++) samples.push(await once());
else if (mode === 'burst') samples.push(...(await Promise.all(Array.from({ length: count }, once))));
else throw new Error('usage: e2b-tti-client.js seq|burst N');
process.stdout.write(`${JSON.stringify(samples)}\n`);
