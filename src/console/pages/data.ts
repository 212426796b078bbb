/** The object store: browse by prefix, upload a file, download an object. */
import { call } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';

interface ObjectView {
  key: string;
  size: number;
  sha256: string;
  createdAt: string;
}

const objectPath = (key: string) => `/v1/data/objects/${key.split('/').map(encodeURIComponent).join('/')}`;

export const dataPage: Page = (root) => {
  const prefix = h('input', { id: 'data-prefix', placeholder: 'prefix' });
  const list = h('div', { id: 'data-list' });
  const file = h('input', { type: 'file', id: 'upload-file' });
  const key = h('input', { id: 'upload-key', placeholder: 'key, e.g. in/data.csv' });
  const status = h('p', { id: 'data-status', role: 'alert' });
  const refresh = async () => {
    const { objects } = await call<{ objects: ObjectView[] }>('GET', `/v1/data/objects?prefix=${encodeURIComponent(prefix.value)}&limit=1000`);
    replace(
      list,
      table(
        ['key', 'bytes', 'sha256', 'created', ''],
        objects.map((o) => [h('span', { class: 'object-key' }, o.key), o.size, h('code', {}, o.sha256.slice(0, 16)), when(o.createdAt), h('button', { class: 'download', 'data-key': o.key, onclick: () => void download(o.key) }, 'Download')]),
        { id: 'objects-table' },
      ),
    );
  };
  const download = async (k: string) => {
    const res = await call<Response>('GET', objectPath(k), undefined, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: k.split('/').pop() ?? 'object' });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  const upload = async () => {
    status.className = '';
    const f = file.files?.[0];
    if (!f || !key.value) {
      status.className = 'error';
      status.textContent = 'choose a file and a key';
      return;
    }
    try {
      await call('PUT', objectPath(key.value), f);
      status.textContent = `Uploaded ${key.value} (${f.size} bytes).`;
      await refresh();
    } catch (e) {
      status.className = 'error';
      status.textContent = (e as Error).message;
    }
  };
  replace(
    root,
    h('h2', {}, 'Objects'),
    h('p', {}, prefix, ' ', h('button', { onclick: () => void refresh() }, 'List')),
    h('p', {}, key, ' ', file, ' ', h('button', { id: 'upload', onclick: () => void upload() }, 'Upload')),
    status,
    list,
  );
  void refresh().catch((e: Error) => (status.textContent = e.message));
};
