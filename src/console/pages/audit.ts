/** The audit log, newest first, with the hash chain's verification (platform admins). */
import { call } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';

interface AuditEvent {
  seq: number;
  time: string;
  type: string;
  actor: string;
  workspaceId: string | null;
  subject: string | null;
  details?: unknown;
}

export const auditPage: Page = (root) => {
  const list = h('div', { id: 'audit-list' });
  const verdict = h('p', { id: 'audit-verdict', role: 'status' });
  const verify = async () => {
    verdict.textContent = 'verifying…';
    try {
      const v = await call<{ ok: boolean; events: number; brokenAt?: number; reason?: string }>('GET', '/v1/audit/verify');
      verdict.className = v.ok ? 'ok' : 'error';
      verdict.textContent = v.ok ? `The chain holds: ${v.events} events verified.` : `Broken at event ${v.brokenAt}: ${v.reason}`;
    } catch (e) {
      verdict.className = 'error';
      verdict.textContent = (e as Error).message;
    }
  };
  replace(root, h('h2', {}, 'Audit log'), h('p', {}, h('button', { id: 'audit-verify', onclick: () => void verify() }, 'Verify the chain')), verdict, list);
  void call<{ events: AuditEvent[] }>('GET', '/v1/audit?limit=200').then(
    ({ events }) => replace(list, table(['#', 'time', 'type', 'actor', 'workspace', 'subject', 'details'], events.map((e) => [e.seq, when(e.time), e.type, e.actor, e.workspaceId ?? '', e.subject ?? '', h('code', {}, e.details ? JSON.stringify(e.details) : '')]))),
    (e: Error) => replace(list, h('p', { class: 'error' }, e.message)),
  );
};
