/** openStore is the one place the Store adapter is chosen, from the `store` config. */
import type { StoreConfig } from '../../shared/config.js';
import { PostgresStore } from './postgres-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

/** openStore opens (and migrates) the configured store: SQLite at `sqlitePath`, or the PostgreSQL database of the URL. */
export async function openStore(config: StoreConfig, sqlitePath: string, onError?: (e: Error) => void): Promise<Store> {
  switch (config.kind) {
    case 'sqlite':
      return new SqliteStore(sqlitePath);
    case 'postgres':
      return PostgresStore.open({ url: config.url, poolSize: config.poolSize, onError });
    default:
      return assertNever(config);
  }
}

function assertNever(x: never): never {
  throw new Error(`unknown store kind ${JSON.stringify(x)}`);
}
