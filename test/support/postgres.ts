/**
 * TestPostgres is a real PostgreSQL 15 (Debian's postgresql-15) started for a test: a fresh cluster in a temp dir under
 * /var/tmp, owned by an unprivileged account (initdb and the server refuse root), on 127.0.0.1 at a free port with
 * password (SCRAM) authentication. stop() kills it and removes the directory; a process exit does the same for any
 * the test did not stop.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './ports.js';

const run = promisify(execFile);

/** PG_BIN holds initdb and pg_ctl (scripts/install-deps.sh installs the postgresql package). */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
/** PG_ACCOUNT is the system account the test servers run as. */
export const PG_ACCOUNT = 'cleanroom-pg';
/** PG_SUPERUSER is the database superuser of a test cluster. */
const PG_SUPERUSER = 'cleanroom';

/** Servers started by this process and not yet stopped: stopped at exit if a test forgot or crashed. */
const live = new Set<TestPostgres>();
process.on('exit', () => {
  for (const p of live) p.stopSync();
});

/** TestPostgres is one running test server; `url` points at its `cleanroom` database. */
export class TestPostgres {
  private stopped = false;

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly password: string,
  ) {}

  /** start initialises and starts a server, creates the `cleanroom` database and returns once it accepts connections. */
  static async start(): Promise<TestPostgres> {
    if (!existsSync(join(PG_BIN, 'initdb'))) throw new Error(`${PG_BIN}/initdb is missing: apt-get install postgresql (scripts/install-deps.sh)`);
    ensureAccount();
    const dir = mkdtempSync('/var/tmp/cleanroom-pg-');
    const password = randomBytes(12).toString('hex');
    const pgUser = accountIds();
    chownSync(dir, pgUser.uid, pgUser.gid);
    chmodSync(dir, 0o700);
    let server: TestPostgres | undefined;
    try {
      const pwfile = join(dir, 'pwfile');
      writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
      chownSync(pwfile, pgUser.uid, pgUser.gid);
      await asAccount('initdb', ['-D', join(dir, 'data'), '-U', PG_SUPERUSER, `--pwfile=${pwfile}`, '--auth-host=scram-sha-256', '--auth-local=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
      rmSync(pwfile);
      // A port taken between freePort and the server's bind fails the start: try another.
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        server = new TestPostgres(dir, port, password);
        live.add(server);
        try {
          await server.pgCtl(['start', '-w', '-t', '60', '-l', join(dir, 'server.log'), '-o', serverOptions(dir, port)]);
          break;
        } catch (e) {
          live.delete(server);
          if (attempt >= 3) throw e;
        }
      }
      await server.admin(`CREATE DATABASE cleanroom`);
      return server;
    } catch (e) {
      const log = existsSync(join(dir, 'server.log')) ? readFileSync(join(dir, 'server.log'), 'utf8').slice(-2000) : '';
      if (server) server.stopSync();
      else rmSync(dir, { recursive: true, force: true });
      throw new Error(`starting a test PostgreSQL failed: ${(e as Error).message}\n${log}`);
    }
  }

  /** url of the `cleanroom` database (or another of this server). */
  url(database = 'cleanroom'): string {
    return `postgres://${PG_SUPERUSER}:${this.password}@127.0.0.1:${this.port}/${database}`;
  }

  /** createDatabase makes a new empty database (for a test that needs a fresh one) and returns its URL. */
  async createDatabase(name: string): Promise<string> {
    if (!/^[a-z][a-z0-9_]{0,40}$/.test(name)) throw new Error(`bad database name ${name}`);
    await this.admin(`CREATE DATABASE ${name}`);
    return this.url(name);
  }

  /** query runs one statement on a database of this server, on a connection of its own. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string, values: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: this.url(database) });
    await c.connect();
    try {
      return (await c.query<R>(text, values)).rows;
    } finally {
      await c.end();
    }
  }

  /** stop kills the server (immediate: a test database is thrown away) and removes its directory. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    await this.pgCtl(['stop', '-m', 'immediate', '-w', '-t', '30']).catch(() => {});
    this.finish();
  }

  /** stopSync is stop for an exiting process (no event loop left). */
  stopSync(): void {
    if (this.stopped) return;
    try {
      execFileSync('runuser', ['-u', PG_ACCOUNT, '--', join(PG_BIN, 'pg_ctl'), '-D', join(this.dir, 'data'), 'stop', '-m', 'immediate', '-w', '-t', '30'], { stdio: 'ignore' });
    } catch {
      // not running
    }
    this.finish();
  }

  private finish(): void {
    this.stopped = true;
    live.delete(this);
    // CLEANROOM_TEST_KEEP=1 keeps the directory (server.log, data) for a post-mortem.
    if (!process.env.CLEANROOM_TEST_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }

  private async pgCtl(args: string[]): Promise<void> {
    await asAccount('pg_ctl', ['-D', join(this.dir, 'data'), ...args]);
  }

  private async admin(sql: string): Promise<void> {
    await this.query('postgres', sql);
  }
}

/** serverOptions: loopback TCP only, the socket in the test's own dir, durability off (a test database is disposable). */
function serverOptions(dir: string, port: number): string {
  return [
    `-p ${port}`,
    '-c listen_addresses=127.0.0.1',
    `-c unix_socket_directories=${dir}`,
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
    '-c shared_buffers=32MB',
    '-c max_connections=200',
    // CLEANROOM_TEST_PG_LOG=1 logs every statement with its duration (server.log; with CLEANROOM_TEST_KEEP=1 to read it).
    ...(process.env.CLEANROOM_TEST_PG_LOG ? ['-c log_min_duration_statement=0', "-c log_line_prefix='%m [%p] '"] : []),
  ].join(' ');
}

async function asAccount(tool: string, args: string[]): Promise<void> {
  try {
    await run('runuser', ['-u', PG_ACCOUNT, '--', join(PG_BIN, tool), ...args], { timeout: 120_000, cwd: '/' });
  } catch (e) {
    const err = e as Error & { stderr?: string; stdout?: string };
    throw new Error(`${tool} ${args.join(' ')}: ${err.message}\n${err.stderr ?? ''}${err.stdout ?? ''}`);
  }
}

/** ensureAccount creates the unprivileged system account the servers run as, if it is missing. */
function ensureAccount(): void {
  try {
    accountIds();
  } catch {
    try {
      execFileSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', PG_ACCOUNT], { stdio: 'ignore' });
    } catch {
      // another test process created it first: the lookup below says
    }
    accountIds();
  }
}

function accountIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, PG_ACCOUNT], { stdio: ['ignore', 'pipe', 'ignore'] }).toString());
  return { uid: id('-u'), gid: id('-g') };
}
