// Background work's helper processes (a refill's runtime create, a wipe's delete, runsc's start: runtime/background.ts)
// are moved into the agent's low-weight cgroup as they start; a start's helpers are not. Root, cgroup v1 cpu.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { backgroundCgroupName, useBackgroundCgroup } from '../../src/agent/runtime/background.js';
import { spawnHelper, spawnHelperAsync, type Helper } from '../../src/agent/runtime/host-calls.js';

const CPU_ROOT = '/sys/fs/cgroup/cpu';

// The cpu controller's cgroup of a process, from /proc/<pid>/cgroup (v1: "<n>:cpu,cpuacct:/path").
function cpuCgroup(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1]?.split(',').includes('cpu'));
  return line?.split(':')[2] ?? '';
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if (check()) return true;
  return check();
}

test('a background helper is adopted into the background cgroup, by either spawn path; a foreground one is not', { skip: !existsSync(join(CPU_ROOT, 'cpu.shares')) && 'no cgroup v1 cpu controller' }, async (t) => {
  const agentId = `t${randomBytes(4).toString('hex')}`;
  const dir = join(CPU_ROOT, backgroundCgroupName(agentId));
  const helpers: Helper[] = [];
  t.after(async () => {
    for (const h of helpers) {
      try {
        process.kill(h.pid, 'SIGKILL');
      } catch {
        // ended already
      }
      h.stdout.destroy();
      h.stderr.destroy();
      await h.exited;
    }
    // Its tasks leave it as they are reaped: retry the removal for a moment.
    await waitFor(() => {
      try {
        rmdirSync(dir);
        return true;
      } catch {
        return !existsSync(dir);
      }
    }, 5_000);
  });
  useBackgroundCgroup(agentId);
  const sync = spawnHelper(['/bin/sleep', '30'], -1, { background: true });
  helpers.push(sync);
  const async = await spawnHelperAsync(['/bin/sleep', '30'], -1, { background: true });
  helpers.push(async);
  const foreground = spawnHelper(['/bin/sleep', '30']);
  helpers.push(foreground);
  const inBackground = (pid: number) => cpuCgroup(pid) === `/${backgroundCgroupName(agentId)}`;
  assert.ok(await waitFor(() => inBackground(sync.pid), 2_000), `spawnHelper's background helper is in ${cpuCgroup(sync.pid)}`);
  assert.ok(await waitFor(() => inBackground(async.pid), 2_000), `spawnHelperAsync's background helper is in ${cpuCgroup(async.pid)}`);
  assert.equal(readFileSync(join(dir, 'cpu.shares'), 'utf8').trim(), '64');
  assert.notEqual(cpuCgroup(foreground.pid), `/${backgroundCgroupName(agentId)}`, 'a foreground helper stays where the agent is');
});
