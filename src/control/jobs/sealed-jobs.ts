/**
 * sealJobs keeps what a tenant put in or got out of a job sealed at rest: its command, env, cwd, its output, and its
 * message (which can carry workload text). Each job has its own data key, wrapped under its workspace's key (itself
 * under the KEK, as objects are); records are unsealed only when read through the store, by the services that serve
 * authorised readers. At the end of retention a job's output is deleted and its key destroyed (crypto-shred): what
 * stays in clear is ids, statuses, times, resources, runtime, egress policy, data grants, timings and wipe receipts.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { pooledRandomBytes } from '../data/random-pool.js';
import type { Job, OutputChunk, TokenRecord } from '../model.js';
import type { Keyring } from '../data/keyring.js';
import { newDataKey, unwrapKey, wrapKey } from '../data/envelope.js';
import type { Store } from '../store/store.js';

const encrypt = (key: Buffer, plain: Buffer, context: string): string => seal(key, plain, context).toString('base64');
const decrypt = (key: Buffer, sealed: string, context: string): Buffer => unseal(key, Buffer.from(sealed, 'base64'), context);

/** SealedFields is the sealed part of a job as stored in its record. */
interface SealedFields {
  /** The job's data key, wrapped under its workspace key (base64); absent once retention destroyed it. */
  key?: string;
  /** {command, env, cwd} sealed under the job key (base64). */
  spec?: string;
  /** The job's message sealed under the job key (base64), or null. */
  message?: string | null;
}

type StoredJob = Job & { sealed?: SealedFields };

/** JOB_KEYS_CACHED bounds the unwrapped job keys kept in memory. */
const JOB_KEYS_CACHED = 10_000;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** sealJobs returns a Store whose job records and output are sealed at rest; every other call passes through. */
export function sealJobs(store: Store, keyring: Keyring): Store {
  const keys = new Map<string, Buffer>();
  const remember = (jobId: string, key: Buffer) => {
    keys.set(jobId, key);
    if (keys.size > JOB_KEYS_CACHED) keys.delete(keys.keys().next().value!);
  };

  const jobKey = async (job: StoredJob): Promise<Buffer | null> => {
    const cached = keys.get(job.id);
    if (cached) return cached;
    if (!job.sealed?.key) return null;
    const key = unwrapKey(await keyring.workspaceKey(job.workspaceId), Buffer.from(job.sealed.key, 'base64'), `job:${job.id}`);
    remember(job.id, key);
    return key;
  };

  const keyOfId = async (jobId: string): Promise<Buffer | null> => {
    const cached = keys.get(jobId);
    if (cached) return cached;
    const job = (await store.getJob(jobId)) as StoredJob | null;
    return job ? jobKey(job) : null;
  };

  const open = async (stored: StoredJob | null): Promise<Job | null> => {
    if (!stored) return null;
    const { sealed, ...job } = stored;
    if (!sealed) return job; // a record from before sealing
    const key = await jobKey(stored);
    if (!key || !sealed.spec) return { ...job, command: [], env: {}, cwd: '', message: null }; // retention ended: shredded
    const spec = JSON.parse(decrypt(key, sealed.spec, `${job.id}:spec`).toString('utf8')) as Pick<Job, 'command' | 'env' | 'cwd'>;
    const message = sealed.message ? decrypt(key, sealed.message, `${job.id}:message`).toString('utf8') : null;
    return { ...job, ...spec, message };
  };

  /** sealedRow makes the stored form of a new job: its command, env, cwd and message under a fresh job key. */
  const sealedRow = async (j: Job): Promise<StoredJob> => {
    const key = newDataKey();
    remember(j.id, key);
    const wrapped = wrapKey(await keyring.workspaceKey(j.workspaceId), key, `job:${j.id}`);
    const sealed: SealedFields = {
      key: wrapped.toString('base64'),
      spec: encrypt(key, Buffer.from(JSON.stringify({ command: j.command, env: j.env, cwd: j.cwd })), `${j.id}:spec`),
      message: j.message === null ? null : encrypt(key, Buffer.from(j.message), `${j.id}:message`),
    };
    return { ...j, command: [], env: {}, cwd: '', message: null, sealed } as StoredJob;
  };

  const overrides: Partial<Store> = {
    async createJob(j: Job): Promise<void> {
      await store.createJob(await sealedRow(j));
    },
    async createPlacedJob(j: Job, token?: TokenRecord): Promise<number> {
      return store.createPlacedJob(await sealedRow(j), token);
    },
    async getJob(id: string): Promise<Job | null> {
      return open((await store.getJob(id)) as StoredJob | null);
    },
    async listJobs(workspaceId: string, limit: number): Promise<Job[]> {
      return (await Promise.all((await store.listJobs(workspaceId, limit)).map((j) => open(j as StoredJob)))).filter((j): j is Job => j !== null);
    },
    async listSandboxes(workspaceId: string, q: Parameters<Store['listSandboxes']>[1]): Promise<Job[]> {
      return (await Promise.all((await store.listSandboxes(workspaceId, q)).map((j) => open(j as StoredJob)))).filter((j): j is Job => j !== null);
    },
    async jobsWithStatus(statuses: readonly string[]): Promise<Job[]> {
      return (await Promise.all((await store.jobsWithStatus(statuses)).map((j) => open(j as StoredJob)))).filter((j): j is Job => j !== null);
    },
    async updateJob(id: string, patch: Partial<Job>): Promise<void> {
      const clear: Partial<StoredJob> = { ...patch };
      delete clear.command;
      delete clear.env;
      delete clear.cwd;
      if ('message' in patch) {
        const current = (await store.getJob(id)) as StoredJob | null;
        if (!current) return;
        const key = await jobKey(current);
        clear.message = null;
        const message = patch.message == null || !key ? null : encrypt(key, Buffer.from(patch.message), `${id}:message`);
        clear.sealed = { ...current.sealed, message };
      }
      await store.updateJob(id, clear);
    },
    async transitionJob(id: string, change: (job: Job) => Partial<Job> | null): Promise<Job | null> {
      // `change` judges the record's clear fields (command, env and cwd read as empty, the message as null); a message in
      // its patch is sealed under the job key, which is fetched (and the change made again) only if none is at hand.
      let key = keys.get(id) ?? null;
      let keyRead = false;
      for (;;) {
        let needKey = false;
        const stored = (await store.transitionJob(id, (current) => {
          const { sealed, ...clear } = current as StoredJob;
          const patch = change({ ...clear, command: [], env: {}, cwd: '', message: null });
          if (!patch) return null;
          const out: Partial<StoredJob> = { ...patch };
          delete out.command;
          delete out.env;
          delete out.cwd;
          if ('message' in patch) {
            if (patch.message != null && !key && !keyRead) {
              needKey = true;
              return null;
            }
            out.message = null;
            out.sealed = { ...sealed, message: patch.message == null || !key ? null : encrypt(key, Buffer.from(patch.message), `${id}:message`) };
          }
          return out;
        })) as StoredJob | null;
        if (!needKey) return open(stored);
        key = await keyOfId(id);
        keyRead = true;
      }
    },
    async appendOutput(jobId: string, chunk: OutputChunk): Promise<void> {
      const key = await keyOfId(jobId);
      if (!key) return; // no such job, or its retention ended
      await store.appendOutput(jobId, { ...chunk, data: seal(key, chunk.data, `${jobId}:${chunk.seq}:${chunk.stream}`) });
    },
    async output(jobId: string, afterSeq: number, limit?: number): Promise<OutputChunk[]> {
      const key = await keyOfId(jobId);
      if (!key) return [];
      const chunks = await store.output(jobId, afterSeq, limit);
      return chunks.map((c) => ({ ...c, data: unseal(key, c.data, `${jobId}:${c.seq}:${c.stream}`) }));
    },
    async expireJob(jobId: string, at: string): Promise<void> {
      keys.get(jobId)?.fill(0);
      keys.delete(jobId);
      await store.expireJob(jobId, at);
      // Destroying the wrapped key shreds whatever sealed bytes of the job remain anywhere (backups, WAL, free pages).
      await store.updateJob(jobId, { sealed: undefined } as Partial<StoredJob>);
    },
    async createJobs(jobs: readonly Job[]): Promise<void> {
      // Sealed as createJob seals one (each job its own key), then stored in the one write.
      await store.createJobs(await Promise.all(jobs.map(sealedRow)));
    },
  };
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && prop in overrides) return overrides[prop as keyof Store];
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** seal encrypts bytes with AES-256-GCM under `key`, bound to `context`: nonce | ciphertext | tag. */
function seal(key: Buffer, plain: Buffer, context: string): Buffer {
  const nonce = pooledRandomBytes(NONCE_BYTES);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(context));
  return Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()]);
}

function unseal(key: Buffer, raw: Buffer, context: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE_BYTES));
  d.setAAD(Buffer.from(context));
  d.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
  return Buffer.concat([d.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), d.final()]);
}
