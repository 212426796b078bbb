/** `cleanroom pki`: make a fleet's CA, certificates and KEK once, then install them on each host or into Kubernetes. */
import type { Command } from 'commander';
import { ensureAccount } from '../../supervisor/bootstrap.js';
import { initPkiHome, installRole, issueAgent, kubernetesSecrets, reissueServer, type Role } from '../../supervisor/pki-home.js';
import { UsageError } from '../context.js';

const collect = (v: string, all: string[]) => [...all, v];

/** registerPki adds `pki init|issue-server|issue-agent|export`. */
export function registerPki(program: Command): void {
  const pki = program.command('pki').description("a fleet's CA, certificates and key-encryption key: made once, installed on every host");
  pki
    .command('init')
    .description('create the CA, the control plane\'s server certificate, the agents\' client certificate and the KEK in --dir (keep it safe: it holds the CA key)')
    .requiredOption('--dir <dir>', 'PKI home directory (created, mode 0700)')
    .option('--server-name <name>', 'a DNS name, wildcard or IP the control plane is reached by (repeat it); localhost, 127.0.0.1 and the data service name are always included', collect, [])
    .action(async (opts: { dir: string; serverName: string[] }) => {
      const names = await initPkiHome(opts.dir, opts.serverName);
      process.stdout.write(`PKI created in ${opts.dir}; the server certificate names: ${names.join(', ')}\n`);
    });
  pki
    .command('issue-server')
    .description('replace the server certificate (e.g. to add a name or address); install it on every control plane again')
    .requiredOption('--dir <dir>', 'PKI home directory')
    .option('--server-name <name>', 'a DNS name, wildcard or IP (repeat it)', collect, [])
    .action(async (opts: { dir: string; serverName: string[] }) => {
      const names = await reissueServer(opts.dir, opts.serverName);
      process.stdout.write(`server certificate reissued; it names: ${names.join(', ')}\n`);
    });
  pki
    .command('issue-agent')
    .description('issue a fresh agent key pair into --out (ca.pem, agent.pem, agent-key.pem), for a host of its own')
    .requiredOption('--dir <dir>', 'PKI home directory')
    .requiredOption('--out <dir>', 'directory to write the agent\'s files to')
    .action(async (opts: { dir: string; out: string }) => {
      await issueAgent(opts.dir, opts.out);
      process.stdout.write(`agent certificate written to ${opts.out}; copy it to <data dir>/pki on the agent's host\n`);
    });
  pki
    .command('export')
    .description('install one role\'s files into a data directory (never the CA key), or print the Kubernetes Secrets deploy/kubernetes mounts')
    .requiredOption('--dir <dir>', 'PKI home directory')
    .option('--role <role>', 'control or agent')
    .option('--data-dir <dir>', 'data directory to install into')
    .option('--owner <account>', 'control: the unprivileged account the control plane runs as (owns its data directory)')
    .option('--without-kek', 'control: leave the KEK out (systemd LoadCredential= or data.kekFile supplies it)')
    .option('--kubernetes', 'print the Secrets (cleanroom-control-pki, cleanroom-kek, cleanroom-agent-pki) as JSON for `kubectl apply -f -`')
    .option('--namespace <ns>', 'namespace of the control plane\'s Secrets', 'cleanroom')
    .option('--agent-namespace <ns>', 'namespace of the agents\' Secret', 'cleanroom-agents')
    .action((opts: { dir: string; role?: string; dataDir?: string; owner?: string; withoutKek?: boolean; kubernetes?: boolean; namespace: string; agentNamespace: string }) => {
      if (opts.kubernetes) {
        process.stdout.write(JSON.stringify(kubernetesSecrets(opts.dir, { control: opts.namespace, agent: opts.agentNamespace }), null, 2) + '\n');
        return;
      }
      if (opts.role !== 'control' && opts.role !== 'agent') throw new UsageError('--role must be control or agent (or use --kubernetes)');
      if (!opts.dataDir) throw new UsageError('--data-dir is required with --role');
      if (opts.role === 'agent' && opts.owner) throw new UsageError('--owner is for the control plane; an agent\'s files stay root\'s');
      if (opts.owner && process.getuid?.() !== 0) throw new UsageError('--owner needs root (it changes the owner of the installed files)');
      const owner = opts.owner ? ensureAccount(opts.owner) : null;
      const installed = installRole(opts.dir, opts.role as Role, opts.dataDir, owner, !opts.withoutKek);
      process.stdout.write(installed.map((f) => `installed ${f}\n`).join(''));
    });
}
