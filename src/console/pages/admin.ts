/** Workspaces (platform admins) and API keys (workspace and platform admins): create, list, revoke. */
import { call } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';

interface Workspace {
  id: string;
  name: string;
  createdAt: string;
}
interface ApiKey {
  id: string;
  workspaceId: string;
  name: string;
  role: string;
  createdAt: string;
  revokedAt: string | null;
}

export const adminPage: Page = (root) => {
  const workspaces = h('div', { id: 'workspaces' });
  const keys = h('div', { id: 'keys' });
  const status = h('p', { id: 'admin-status', role: 'alert' });
  const wsName = h('input', { id: 'ws-name', placeholder: 'workspace name' });
  const keyWs = h('input', { id: 'key-workspace', placeholder: 'workspace name or id' });
  const keyName = h('input', { id: 'key-name', placeholder: 'key name' });
  const keyRole = h('select', { id: 'key-role' }, ...['member', 'workspace-admin', 'platform-admin'].map((r) => h('option', { value: r }, r)));
  const fail = (e: Error) => {
    status.className = 'error';
    status.textContent = e.message;
  };
  const loadWorkspaces = async () => {
    const { workspaces: all } = await call<{ workspaces: Workspace[] }>('GET', '/v1/workspaces');
    replace(workspaces, table(['workspace', 'id', 'created'], all.map((w) => [w.name, h('code', {}, w.id), when(w.createdAt)])));
  };
  const loadKeys = async () => {
    const { keys: all } = await call<{ keys: ApiKey[] }>('GET', '/v1/api-keys');
    replace(
      keys,
      table(
        ['key', 'name', 'workspace', 'role', 'created', 'revoked', ''],
        all.map((k) => [
          h('code', {}, k.id),
          k.name,
          k.workspaceId,
          k.role,
          when(k.createdAt),
          k.revokedAt ? when(k.revokedAt) : '—',
          k.revokedAt ? '' : h('button', { class: 'revoke', 'data-key': k.id, onclick: () => void call('DELETE', `/v1/api-keys/${encodeURIComponent(k.id)}`).then(loadKeys, fail) }, 'Revoke'),
        ]),
        { id: 'keys-table' },
      ),
    );
  };
  const createKey = async () => {
    const k = await call<{ id: string; key: string }>('POST', '/v1/api-keys', { workspace: keyWs.value, name: keyName.value, role: keyRole.value });
    status.className = '';
    replace(status, 'New key (shown once): ', h('code', { id: 'new-key' }, k.key));
    await loadKeys();
  };
  replace(
    root,
    h('h2', {}, 'Workspaces and API keys'),
    status,
    h('h3', {}, 'Workspaces'),
    h('p', {}, wsName, ' ', h('button', { onclick: () => void call('POST', '/v1/workspaces', { name: wsName.value }).then(loadWorkspaces, fail) }, 'Create')),
    workspaces,
    h('h3', {}, 'API keys'),
    h('p', {}, keyWs, ' ', keyName, ' ', keyRole, ' ', h('button', { id: 'key-create', onclick: () => void createKey().catch(fail) }, 'Create key')),
    keys,
  );
  void loadWorkspaces().catch(() => replace(workspaces, h('p', {}, 'Workspaces are for platform admins.')));
  void loadKeys().catch(fail);
};
