/** Where the CLI finds the API: env overrides, else the client config `cleanroom up` wrote (mode 0600). */
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** ClientConfig is what the CLI needs to call the API. */
export interface ClientConfig {
  url: string;
  apiKey: string;
  /** Path of the CA certificate (PEM). */
  caPath: string;
}

/** clientConfigPath is $CLEANROOM_CONFIG or ~/.config/cleanroom/config.json. */
export function clientConfigPath(): string {
  return process.env.CLEANROOM_CONFIG ?? join(homedir(), '.config', 'cleanroom', 'config.json');
}

/** readClientConfig merges the file with CLEANROOM_URL, CLEANROOM_API_KEY and CLEANROOM_CA; throws if incomplete. */
export function readClientConfig(): ClientConfig & { ca: string } {
  const path = clientConfigPath();
  const file: Partial<ClientConfig> = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Partial<ClientConfig>) : {};
  const url = process.env.CLEANROOM_URL ?? file.url;
  const apiKey = process.env.CLEANROOM_API_KEY ?? file.apiKey;
  const caPath = process.env.CLEANROOM_CA ?? file.caPath;
  if (!url || !apiKey || !caPath) {
    throw new Error(`no API configured: run "cleanroom up" first, or set CLEANROOM_URL, CLEANROOM_API_KEY and CLEANROOM_CA (looked in ${path})`);
  }
  return { url, apiKey, caPath, ca: readFileSync(caPath, 'utf8') };
}

/** writeClientConfig saves the config with mode 0600 (it holds an API key). */
export function writeClientConfig(c: ClientConfig): string {
  const path = clientConfigPath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, JSON.stringify(c, null, 2) + '\n', { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}
