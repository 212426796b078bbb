/** Where everything lives under the data directory: one place, so processes agree. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
      crunRoot: join(agent, 'crun'),
    },
    run: { dir: join(dataDir, 'run'), log: join(dataDir, 'run', 'cleanroom.log') },
    /** The image store's default root (config images.dir overrides it). */
    images: join(dataDir, 'images'),
  };
}

/** REPO_DEFAULT_IMAGE_SOURCE is the OCI layout the install step builds for the default image (`<repository>/build/images/base`). */
export const REPO_DEFAULT_IMAGE_SOURCE = join(dirname(fileURLToPath(import.meta.url)), '../../../build/images/base');

/** imageDirs resolves the image store's root and the default image's source from the config (null: the defaults). */
export function imageDirs(paths: DataPathSet, images: { dir: string | null; defaultSource: string | null }): { root: string; defaultSource: string } {
  return { root: images.dir ?? paths.images, defaultSource: images.defaultSource ?? REPO_DEFAULT_IMAGE_SOURCE };
}

/** DataPathSet is the shape dataPaths returns. */
export type DataPathSet = ReturnType<typeof dataPaths>;
