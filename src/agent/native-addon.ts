// Loads the agent's native addons (build/<name>.node, compiled by scripts/build-native.sh) from src/ or dist/src/.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cache = new Map<string, unknown>();

/** loadNativeAddon loads build/<name>.node once, found by walking up from this module to the repository root. */
export function loadNativeAddon<T>(name: string): T {
  let addon = cache.get(name);
  if (addon === undefined) {
    const relative = join('build', `${name}.node`);
    let dir = dirname(fileURLToPath(import.meta.url));
    while (!existsSync(join(dir, relative))) {
      const parent = dirname(dir);
      if (parent === dir) throw new Error(`${name} addon not found (${relative} above ${fileURLToPath(import.meta.url)}); run sh scripts/build-native.sh`);
      dir = parent;
    }
    addon = createRequire(import.meta.url)(join(dir, relative));
    cache.set(name, addon);
  }
  return addon as T;
}
