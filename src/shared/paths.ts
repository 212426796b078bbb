/** Where everything lives under the data directory: one place, so processes agree. */
import { join } from 'node:path';

/** DEFAULT_DATA_DIR is where state lives unless --data-dir or CLEANROOM_DATA_DIR says otherwise. */
export const DEFAULT_DATA_DIR = '/var/lib/cleanroom';

/** DataPaths lists every well-known path under a data directory. */
export function dataPaths(dataDir: string) {
  const pki = join(dataDir, 'pki');
  const agent = join(dataDir, 'agent');
  return {
    dataDir,
    config: join(dataDir, 'config.json'),
    clientConfig: join(dataDir, 'client.json'),
    pki: {
      dir: pki,
      caCert: join(pki, 'ca.pem'),
      caKey: join(pki, 'ca-key.pem'),
      serverCert: join(pki, 'server.pem'),
      serverKey: join(pki, 'server-key.pem'),
      agentCert: join(pki, 'agent.pem'),
      agentKey: join(pki, 'agent-key.pem'),
    },
    control: { dir: join(dataDir, 'control'), db: join(dataDir, 'control', 'cleanroom.db'), kek: join(dataDir, 'control', 'kek'), objects: join(dataDir, 'control', 'objects') },
    agent: {
      dir: agent,
      id: join(agent, 'agent-id'),
      cells: join(agent, 'cells'),
      volumes: join(agent, 'volumes'),
      receipts: join(agent, 'receipts'),
      rootfs: join(agent, 'rootfs'),
      runcRoot: join(agent, 'runc'),
      runscRoot: join(agent, 'runsc'),
    },
    /** The image store (Contract A): blobs written by the control plane, unpacked layers by the agent. */
    images: join(dataDir, 'images'),
    run: { dir: join(dataDir, 'run'), log: join(dataDir, 'run', 'cleanroom.log') },
  };
}

/** DataPathSet is the shape dataPaths returns. */
export type DataPathSet = ReturnType<typeof dataPaths>;
