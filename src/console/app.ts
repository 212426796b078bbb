/** The console: sign-in with an API key (kept in this tab's sessionStorage only), a hash router and the pages. */
import { ApiError, apiKey, call, signIn, signOut } from './api.js';
import { h, replace } from './dom.js';
import type { Page } from './page.js';
import { adminPage } from './pages/admin.js';
import { auditPage } from './pages/audit.js';
import { chartsPage } from './pages/charts.js';
import { dataPage } from './pages/data.js';
import { jobPage, jobsPage } from './pages/jobs.js';
import { networkPage } from './pages/network.js';
import { poolPage } from './pages/pool.js';
import { sandboxesPage, sandboxPage } from './pages/sandboxes.js';

const ROUTES: Array<{ path: string; label: string; page: Page }> = [
  { path: 'jobs', label: 'Jobs', page: jobsPage },
  { path: 'sandboxes', label: 'Sandboxes', page: sandboxesPage },
  { path: 'pool', label: 'Pool & agents', page: poolPage },
  { path: 'network', label: 'Network', page: networkPage },
  { path: 'data', label: 'Objects', page: dataPage },
  { path: 'audit', label: 'Audit', page: auditPage },
  { path: 'admin', label: 'Workspaces & keys', page: adminPage },
  { path: 'charts', label: 'Charts', page: chartsPage },
];

const main = document.getElementById('main')!;
const nav = document.getElementById('nav')!;
const who = document.getElementById('who')!;
let leave = new AbortController();

function signInForm(problem = ''): void {
  nav.hidden = true;
  replace(who);
  const key = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', size: 50, placeholder: 'crk_…', 'aria-label': 'API key' });
  replace(
    main,
    h('h2', {}, 'Sign in'),
    h(
      'form',
      {
        id: 'sign-in',
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          signIn(key.value.trim());
          void route();
        },
      },
      h('p', {}, 'API key ', key, ' ', h('button', { type: 'submit' }, 'Sign in')),
      h('p', { class: 'hint' }, 'The key stays in this browser tab (sessionStorage) until you sign out or close it.'),
    ),
    problem ? h('p', { class: 'error', role: 'alert', id: 'sign-in-error' }, problem) : null,
  );
  key.focus();
}

/**
 * route renders the page the hash names. Only the latest navigation renders: one that a later navigation overtook while
 * it waited for /v1/whoami stops there, or it would replace the newer page (and whatever the user began to type in it).
 */
async function route(): Promise<void> {
  leave.abort();
  const here = new AbortController();
  leave = here;
  if (!apiKey()) return signInForm();
  let me: { keyId: string; role: string; workspace: { name: string } };
  try {
    me = await call('GET', '/v1/whoami', undefined, { signal: here.signal });
  } catch (e) {
    if (here.signal.aborted) return;
    signOut();
    return signInForm(e instanceof ApiError && e.status === 401 ? 'That key was not accepted.' : (e as Error).message);
  }
  nav.hidden = false;
  replace(
    nav,
    ...ROUTES.map((r) => h('a', { href: `#/${r.path}`, id: `nav-${r.path}` }, r.label)),
    h('button', { id: 'sign-out', onclick: () => (signOut(), void route()) }, 'Sign out'),
  );
  replace(who, `${me.workspace.name} · ${me.role} · key ${me.keyId}`);
  const [, path = 'jobs', param] = location.hash.split('/').map(decodeURIComponent);
  const detail: Record<string, Page> = { jobs: jobPage, sandboxes: sandboxPage };
  const page = param && detail[path] ? detail[path] : (ROUTES.find((r) => r.path === path) ?? ROUTES[0]!).page;
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.getAttribute('href') === `#/${path}`);
  page(main, here.signal, param);
}

window.addEventListener('hashchange', () => void route());
void route();
