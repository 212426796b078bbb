/**
 * The web console: static assets shipped with the plane (no CDN), served under a content-hashed path, and one HTML page
 * with a strict Content-Security-Policy (scripts and styles from this origin only, no inline code, no framing). The
 * console calls the same API as every client, with a key the user types in.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiError } from '../../../shared/errors.js';
import type { RouteTable } from '../route-table.js';

/** REPO_ROOT from dist/src/control/api/routes. */
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../../../..');

const CSP = ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self' data: blob:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"].join('; ');
const SECURITY_HEADERS = { 'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' };
const TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** ConsoleAssets are the files of one build, by path under the assets root, and the version that names them. */
interface ConsoleAssets {
  version: string;
  files: Map<string, Buffer>;
}

/** loadAssets reads the compiled console (dist/console) and its stylesheet once; a missing build serves a clear page. */
function loadAssets(): ConsoleAssets {
  const files = new Map<string, Buffer>();
  const built = join(REPO_ROOT, 'dist/console');
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.js')) files.set(relative(built, p), readFileSync(p));
    }
  };
  walk(built);
  const css = join(REPO_ROOT, 'src/console/style.css');
  if (existsSync(css)) files.set('style.css', readFileSync(css));
  const hash = createHash('sha256');
  for (const [k, v] of [...files].sort(([a], [b]) => a.localeCompare(b))) hash.update(k).update('\0').update(v);
  return { version: hash.digest('hex').slice(0, 16), files };
}

function page(version: string): string {
  const base = `/console/assets/${version}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cleanroom</title>
<link rel="stylesheet" href="${base}/style.css">
<script type="module" src="${base}/app.js"></script>
</head>
<body>
<header><h1>Cleanroom</h1><nav id="nav" hidden></nav><span id="who"></span></header>
<main id="main"><noscript>The console needs JavaScript.</noscript></main>
</body>
</html>
`;
}

/** registerConsoleRoutes serves the console at /console/. */
export function registerConsoleRoutes(t: RouteTable): void {
  const assets = loadAssets();
  const html = page(assets.version);
  t.add({
    method: 'GET',
    path: '/console',
    operationId: 'consoleRedirect',
    summary: 'Redirects to /console/',
    auth: 'none',
    status: 302,
    response: { contentType: 'text/plain', description: 'a redirect to /console/' },
    handler: async ({ reply }) => reply.redirect('/console/', 302),
  });
  t.add({
    method: 'GET',
    path: '/console/',
    operationId: 'console',
    summary: 'The web console (sign in with an API key)',
    auth: 'none',
    response: { contentType: 'text/html', description: 'the console page' },
    handler: async ({ reply }) => reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'no-store' }).type('text/html; charset=utf-8').send(html),
  });
  t.add({
    method: 'GET',
    path: '/console/assets/:version/*',
    operationId: 'consoleAsset',
    summary: "The console's scripts and stylesheet, under the version (content hash) of this build; cached for good",
    auth: 'none',
    response: { contentType: 'text/javascript', description: 'a console asset' },
    errors: ['not_found'],
    handler: async ({ params, reply }) => {
      const file = params['*'] ?? '';
      const body = params.version === assets.version ? assets.files.get(file) : undefined;
      if (!body) throw new ApiError('not_found', `no console asset ${file} in version ${params.version}; reload the console`);
      const type = TYPES[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream';
      return reply.headers({ ...SECURITY_HEADERS, 'cache-control': 'public, max-age=31536000, immutable' }).type(type).send(body);
    },
  });
}
