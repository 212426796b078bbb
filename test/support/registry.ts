/**
 * TestRegistry runs Debian's docker-registry (the reference distribution registry) on 127.0.0.1 with TLS (a server
 * certificate from a test CA made here) and htpasswd basic auth (bcrypt), in a temporary directory of its own, with
 * its own config: the package's system service is never started. stop() ends it by pid and removes the directory.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './cluster.js';

const run = promisify(execFile);

/** TestRegistry is one running registry. */
export class TestRegistry {
  private constructor(
    readonly dir: string,
    readonly host: string,
    readonly caPem: string,
    /** certDir holds ca.crt, for skopeo's --cert-dir when tests push. */
    readonly certDir: string,
    readonly username: string,
    readonly password: string,
    private readonly child: ChildProcess,
  ) {}

  /** start makes a CA, a certificate for 127.0.0.1, an htpasswd file and a config, and waits until the registry answers. */
  static async start(): Promise<TestRegistry> {
    const dir = mkdtempSync('/var/tmp/cleanroom-test-registry-');
    try {
      const port = await freePort();
      const certDir = join(dir, 'certs');
      await run('sh', [
        '-c',
        `set -e; mkdir -p "${certDir}"; cd "${dir}"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out "${certDir}/ca.crt" -days 2 -subj "/CN=cleanroom test registry CA" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
        openssl x509 -req -in server.csr -CA "${certDir}/ca.crt" -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null`,
      ]);
      const username = 'tester';
      const password = `pw-${Math.random().toString(36).slice(2)}`;
      await run('htpasswd', ['-Bbc', join(dir, 'htpasswd'), username, password]);
      writeFileSync(
        join(dir, 'config.yml'),
        [
          'version: 0.1',
          'log:',
          '  level: error',
          '  accesslog:',
          '    disabled: true',
          'storage:',
          '  filesystem:',
          `    rootdirectory: ${join(dir, 'data')}`,
          '  delete:',
          '    enabled: true',
          'http:',
          `  addr: 127.0.0.1:${port}`,
          '  tls:',
          `    certificate: ${join(dir, 'server.crt')}`,
          `    key: ${join(dir, 'server.key')}`,
          'auth:',
          '  htpasswd:',
          '    realm: cleanroom-test',
          `    path: ${join(dir, 'htpasswd')}`,
          '',
        ].join('\n'),
      );
      const log = openSync(join(dir, 'registry.log'), 'a');
      const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', log, log] });
      closeSync(log);
      const reg = new TestRegistry(dir, `127.0.0.1:${port}`, readFileSync(join(certDir, 'ca.crt'), 'utf8'), certDir, username, password, child);
      await reg.waitUp();
      return reg;
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  private async waitUp(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`docker-registry exited (${this.child.exitCode}): ${readFileSync(join(this.dir, 'registry.log'), 'utf8').slice(-2000)}`);
      const status = await new Promise<number>((resolve) => {
        const req = request({ host: '127.0.0.1', port: Number(this.host.split(':')[1]), path: '/v2/', ca: this.caPem, timeout: 1000 }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', () => resolve(0));
        req.end();
      });
      if (status === 401) return;
      if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${this.host}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** auth is what pushImage needs. */
  get auth(): { username: string; password: string; certDir: string } {
    return { username: this.username, password: this.password, certDir: this.certDir };
  }

  /** blobFile is where the registry keeps a blob on disk. */
  blobFile(digest: string): string {
    const hex = digest.slice('sha256:'.length);
    return join(this.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  /** corruptBlob flips a byte in the middle of a stored blob (same size, other digest). */
  corruptBlob(digest: string): void {
    const f = this.blobFile(digest);
    const at = Math.floor(statSync(f).size / 2);
    const fd = openSync(f, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
  }

  /** truncateBlob cuts a stored blob to half its size. */
  truncateBlob(digest: string): void {
    const f = this.blobFile(digest);
    truncateSync(f, Math.floor(statSync(f).size / 2));
  }

  /** stop ends the registry (its pid only) and removes its directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.pid !== undefined) {
      const exited = new Promise((r) => this.child.once('exit', r));
      process.kill(this.child.pid, 'SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (this.child.exitCode === null && this.child.signalCode === null) process.kill(this.child.pid, 'SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
