// bench/noisy-neighbour.ts: one workspace floods the plane while another runs jobs one after another; the calm
// workspace's start latency under the flood is reported beside its quiet figure (goal: p99 ≤ 2× quiet), and every one
// of its jobs must succeed. The flood, all at once: near-limit job bodies (refused or run), hundreds of gVisor jobs
// (beyond the noisy workspace's running quota they wait in its queue), an output firehose followed by a client that
// reads slowly, and an audit flood (requests with a wrong key, each a refusal the audit log counts within its budget).
import { request } from 'node:https';
import { CleanroomClient } from '../src/sdk/client.js';
import type { TestCluster } from '../test/support/cluster.js';
import { COMMAND } from './baselines.js';
import { summarize, type Stats } from './stats.js';
import { runTimedJob } from './timed-job.js';

/** NoisyNeighbour is the result of the run. */
export interface NoisyNeighbour {
  quiet_ms: Stats;
  flooded_ms: Stats;
  /** flooded p99 / quiet p99 (goal ≤ 2). */
  ratio_p99: number;
  /** Jobs of the calm workspace that did not succeed (must be 0). */
  calm_failures: string[];
  /** What the noisy workspace sent, and how the plane answered (status → count). */
  flood: { requests: number; answers: Record<string, number>; gvisor_jobs: number; firehose_mib: number };
}

/** NOISY_QUOTAS are the noisy workspace's quotas: the defaults a production workspace gets. */
export const NOISY_QUOTAS = { maxRunningJobs: 8, maxQueuedJobs: 256, requestsPerSecond: 200, requestBurst: 400 };

/** measureNoisyNeighbour runs `samples` calm jobs quietly, then `samples` more during the flood. */
export async function measureNoisyNeighbour(cluster: TestCluster, samples: number, noisyName: string, size = { gvisorJobs: 200, firehoseMiB: 256 }): Promise<NoisyNeighbour> {
  const keyOf = async (name: string) => {
    await cluster.client.createWorkspace({ name });
    return (await cluster.client.createApiKey({ workspace: name, name: 'bench' })).key;
  };
  const calmKey = await keyOf(`calm-${Date.now()}`);
  const noisyKey = await keyOf(noisyName);
  const calm = new CleanroomClient({ url: cluster.url, apiKey: calmKey, ca: cluster.ca });
  const noisy = new CleanroomClient({ url: cluster.url, apiKey: noisyKey, ca: cluster.ca });
  const failures: string[] = [];
  const series = async (): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      try {
        out.push((await runTimedJob(calm, { command: COMMAND, runtime: 'runc' }, 'hi\n')).firstByteMs);
      } catch (e) {
        failures.push((e as Error).message);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return out;
  };
  try {
    await cluster.waitWarm(120_000);
    const quiet = await series();
    const answers: Record<string, number> = {};
    let requests = 0;
    const count = (status: number | string) => {
      requests++;
      answers[String(status)] = (answers[String(status)] ?? 0) + 1;
    };
    let flooding = true;
    const floods: Promise<void>[] = [];
    // Near-limit bodies: just under the 1 MiB body limit, just over what a cell accepts (413).
    const bigEnv = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`V${i}`, 'B'.repeat(65_300)]));
    floods.push(
      (async () => {
        while (flooding) count(await noisy.createJob({ command: ['true'], env: bigEnv }).then(() => 201, (e: { status?: number }) => e.status ?? 'error'));
      })(),
    );
    // Hundreds of gVisor jobs at once.
    const { gvisorJobs } = size;
    floods.push(
      (async () => {
        const made = await Promise.allSettled(Array.from({ length: gvisorJobs }, () => noisy.createJob({ command: ['sleep', '1'], runtime: 'runsc' })));
        for (const m of made) count(m.status === 'fulfilled' ? 201 : ((m.reason as { status?: number }).status ?? 'error'));
      })(),
    );
    // An output firehose, followed by a client that reads one small piece every 100 ms.
    const { firehoseMiB } = size;
    floods.push(
      (async () => {
        const job = await noisy.createJob({ command: ['sh', '-c', `head -c ${firehoseMiB * 1024 * 1024} /dev/zero`] });
        count(201);
        await new Promise<void>((resolve) => {
          const req = request(`${cluster.url}/v1/jobs/${job.id}/logs?follow=true`, { ca: cluster.ca, headers: { authorization: `Bearer ${noisyKey}` } }, (res) => {
            count(res.statusCode ?? 'error');
            res.pause();
            const tick = setInterval(() => {
              res.read(4096);
              if (!flooding) {
                clearInterval(tick);
                res.destroy();
                resolve();
              }
            }, 100);
          });
          req.on('error', () => resolve());
          req.end();
        });
      })(),
    );
    // An audit flood: requests with a wrong key, each refused and accounted for in the audit log's budget.
    floods.push(
      (async () => {
        const wrong = new CleanroomClient({ url: cluster.url, apiKey: `crk_${'0'.repeat(40)}`, ca: cluster.ca });
        try {
          while (flooding) count(await wrong.listJobs().then(() => 200, (e: { status?: number }) => e.status ?? 'error'));
        } finally {
          wrong.close();
        }
      })(),
    );
    await new Promise((r) => setTimeout(r, 1000)); // let the flood build up
    const flooded = await series();
    flooding = false;
    await Promise.allSettled(floods);
    const q = summarize(quiet);
    const f = summarize(flooded);
    return { quiet_ms: q, flooded_ms: f, ratio_p99: Math.round((f.p99 / q.p99) * 100) / 100, calm_failures: failures, flood: { requests, answers, gvisor_jobs: gvisorJobs, firehose_mib: firehoseMiB } };
  } finally {
    calm.close();
    noisy.close();
  }
}
