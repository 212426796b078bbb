/** Network policy: an editor that validates on the server before saving (an invalid policy keeps the old one), and the
 *  connections the policy denied or, in dry-run, would have denied. */
import { ApiError, call } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';

interface Denied {
  jobId: string;
  action: string;
  destination: string;
  protocol: string;
  port: number | null;
  time: string;
}

export const networkPage: Page = (root) => {
  const editor = h('textarea', { id: 'policy-editor', rows: 12, cols: 70, spellcheck: false, 'aria-label': 'policy JSON' });
  const status = h('p', { id: 'policy-status', role: 'alert' });
  const denied = h('div', { id: 'denied' });
  const load = async () => {
    const policy = await call('GET', '/v1/network/policy');
    editor.value = JSON.stringify(policy, null, 2);
  };
  const save = async () => {
    status.className = '';
    status.textContent = '';
    let body: unknown;
    try {
      body = JSON.parse(editor.value);
    } catch (e) {
      status.className = 'error';
      status.textContent = `not valid JSON: ${(e as Error).message}`;
      return;
    }
    try {
      await call('PUT', '/v1/network/policy', body);
      status.textContent = 'Saved. It applies to jobs created from now on.';
      await load();
    } catch (e) {
      status.className = 'error';
      status.textContent = e instanceof ApiError ? `${e.code}: ${e.message} (the policy in force is unchanged)` : String(e);
    }
  };
  const loadDenied = async () => {
    const { denied: rows } = await call<{ denied: Denied[] }>('GET', '/v1/network/denied?limit=100');
    replace(denied, rows.length === 0 ? h('p', {}, 'Nothing denied recently.') : table(['time', 'job', 'action', 'destination', 'protocol', 'port'], rows.map((d) => [when(d.time), d.jobId, d.action, d.destination, d.protocol, d.port ?? ''])));
  };
  replace(
    root,
    h('h2', {}, 'Network policy'),
    h('p', {}, 'Egress allow-list of this workspace: {"allow": [{"cidr", "protocol", "port"}], "dryRun"}. With dryRun true everything is allowed and what the list would deny is recorded below.'),
    editor,
    h('p', {}, h('button', { id: 'policy-save', onclick: () => void save() }, 'Validate and save'), ' ', h('button', { onclick: () => void load() }, 'Revert')),
    status,
    h('h3', {}, 'Denied (or, in dry-run, would be denied)'),
    denied,
  );
  void load().catch((e: Error) => (status.textContent = e.message));
  void loadDenied().catch(() => {});
};
