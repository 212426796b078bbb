/** `cleanroom images import|ls|get|rm`: OCI images jobs run on, imported from a registry, an archive or an OCI layout. */
import { spawn } from 'node:child_process';
import { existsSync, createReadStream, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CleanroomError, type CleanroomClient, type Image } from '../../sdk/client.js';
import { connect, printJson, UsageError } from '../context.js';
import { Progress } from '../progress.js';
import { printTable } from './jobs.js';

interface ImportOptions {
  name?: string;
  public?: boolean;
  creds?: string;
  ca?: string;
  wait: boolean;
  json?: boolean;
}

/** registerImages adds the `images` command group. */
export function registerImages(program: Command): void {
  const images = program.command('images').description('OCI images jobs run on (`cleanroom run --image NAME`)');
  images
    .command('import')
    .description('import an image: docker://HOST[:PORT]/REPO[:TAG|@sha256:…], a tarball (docker save, OCI archive) or an OCI layout directory')
    .argument('<ref>', 'registry reference, archive file or OCI layout directory')
    .option('--name <name[:tag]>', 'name it in the workspace (default: the repository and tag; required for files)')
    .option('--public', 'publish it for every workspace (platform admins)')
    .option('--creds <user:password>', 'registry credentials (also CLEANROOM_REGISTRY_CREDS, which keeps them out of the process list)')
    .option('--ca <file>', "PEM file of the CA that signed the registry's certificate")
    .option('--no-wait', 'return once the import has started')
    .option('--json', 'print the image as JSON')
    .action(async (ref: string, opts: ImportOptions) => {
      const client = connect();
      try {
        const started = await startImport(client, ref, opts);
        const image = opts.wait ? await follow(client, started) : started;
        if (opts.json) printJson(image);
        else if (!opts.wait) process.stdout.write(`${image.id}  ${image.state}\n`);
        if (image.state === 'failed') throw new CleanroomError(image.error?.code ?? 'image_failed', 0, `import of ${image.id} failed: ${image.error?.message ?? 'no reason given'}`);
        if (opts.wait && !opts.json) process.stdout.write(`${image.id}  ${image.digest ?? ''}  ${image.state}\n`);
      } finally {
        client.close();
      }
    });
  images
    .command('ls')
    .description("list the workspace's images and the public ones")
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const all = await client.listImages();
      client.close();
      if (opts.json) return printJson(all);
      printTable(
        ['NAME', 'STATE', 'SIZE', 'DIGEST', 'VISIBILITY', 'CREATED'],
        all.map((i) => [i.id, i.state === 'failed' ? `failed (${i.error?.code ?? '?'})` : i.state, mib(i.bytes), (i.digest ?? '').slice(0, 19), i.public ? 'public' : 'workspace', i.createdAt]),
      );
    });
  images
    .command('get')
    .description('show an image (NAME[:TAG] or sha256:…)')
    .argument('<id>')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { json?: boolean }) => {
      const client = connect();
      const i = await client.getImage(id);
      client.close();
      if (opts.json) return printJson(i);
      const lines = [
        ['name', i.id],
        ['state', i.state + (i.error ? `: ${i.error.code}: ${i.error.message}` : '')],
        ['digest', i.digest ?? '-'],
        ['source', i.source],
        ['visibility', i.public ? 'public' : 'workspace'],
        ['stored', `${mib(i.bytes)} in ${i.layers} layers${i.unpackedBytes !== null ? `, ${mib(i.unpackedBytes)} unpacked` : ''}`],
        ['progress', i.bytesTotal ? `${mib(i.bytesDone)} / ${mib(i.bytesTotal)}` : mib(i.bytesDone)],
        ['entrypoint', JSON.stringify(i.config?.entrypoint ?? null)],
        ['cmd', JSON.stringify(i.config?.cmd ?? null)],
        ['workdir', i.config?.workingDir || '-'],
        ['user', i.config?.user || '-'],
        ['created', i.createdAt],
      ];
      for (const [k, v] of lines) process.stdout.write(`${k!.padEnd(11)} ${v}\n`);
    });
  images
    .command('rm')
    .description('remove an image (refused while jobs use it)')
    .argument('<id>', 'NAME[:TAG] or sha256:… (every name of that digest)')
    .action(async (id: string) => {
      const client = connect();
      const removed = await client.deleteImage(id);
      client.close();
      for (const r of removed) process.stdout.write(`removed ${r.id} ${r.digest ?? ''}\n`);
    });
}

/** startImport sends a registry reference as JSON, a file as an archive, and an OCI layout directory as a tar of it. */
async function startImport(client: CleanroomClient, ref: string, opts: ImportOptions): Promise<Image> {
  if (ref.startsWith('docker://')) {
    const creds = opts.creds ?? process.env.CLEANROOM_REGISTRY_CREDS;
    const i = creds?.indexOf(':') ?? -1;
    if (creds !== undefined && i <= 0) throw new UsageError('--creds wants USER:PASSWORD');
    return client.importImage({
      source: ref,
      ...(opts.name ? { name: opts.name } : {}),
      ...(creds ? { credentials: { username: creds.slice(0, i), password: creds.slice(i + 1) } } : {}),
      ...(opts.ca ? { caPem: readText(opts.ca) } : {}),
      ...(opts.public ? { public: true } : {}),
    });
  }
  if (!existsSync(ref)) throw new UsageError(`${ref}: no such file or directory (a registry reference starts with docker://)`);
  if (!opts.name) throw new UsageError('--name NAME[:TAG] is required when importing a file or directory');
  if (opts.creds || opts.ca) throw new UsageError('--creds and --ca apply to registry references only');
  if (statSync(ref).isDirectory()) {
    if (!existsSync(join(ref, 'oci-layout')) || !existsSync(join(ref, 'index.json'))) throw new UsageError(`${ref} is not an OCI layout (no oci-layout and index.json)`);
    // The layout goes up as an OCI archive: a tar of the directory, streamed.
    const tar = spawn('tar', ['-C', ref, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const failed = new Promise<never>((_, reject) => tar.on('close', (code) => code !== 0 && reject(new UsageError(`tar of ${ref} failed (exit ${code})`))));
    return Promise.race([client.importImageArchive(opts.name, tar.stdout, { public: opts.public === true }), failed]);
  }
  return client.importImageArchive(opts.name, createReadStream(ref), { size: statSync(ref).size, public: opts.public === true });
}

/** follow polls the import, with a progress bar on a TTY (plain lines otherwise), until it is ready or failed. */
async function follow(client: CleanroomClient, started: Image): Promise<Image> {
  const p = new Progress(`importing ${started.id}`);
  const image = await client.waitForImage(started.id, {
    onProgress: (i) => {
      if (i.state === 'pulling') p.update(`pulling ${mib(i.bytesDone)}${i.bytesTotal ? ` / ${mib(i.bytesTotal)}` : ''}`, i.bytesTotal ? Math.min(1, i.bytesDone / i.bytesTotal) : undefined);
      else if (i.state === 'unpacking') p.update('unpacking on the agents', 1);
    },
  });
  p.done(image.state === 'ready' ? `ready (${mib(image.bytes)} stored)` : `failed: ${image.error?.code ?? '?'}`);
  return image;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
