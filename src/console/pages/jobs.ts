/** Jobs: a live list with a status filter and a run form; a job with its live output, timings and wipe receipt. */
import { call, decodeBase64, stream } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';

interface JobView {
  id: string;
  status: string;
  runtime: string;
  command: string[];
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  exitCode: number | null;
  message: string | null;
  timings: Record<string, number>;
  wipe: unknown;
}

const STATUSES = ['', 'queued', 'assigned', 'running', 'succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error'];

export const jobsPage: Page = (root, signal) => {
  const filter = h('select', { 'aria-label': 'status filter', id: 'job-filter' }, ...STATUSES.map((s) => h('option', { value: s }, s || 'any status')));
  const list = h('div', { id: 'job-list' });
  const command = h('input', { id: 'run-command', placeholder: "shell command, e.g. echo hello", size: 50 });
  const runtime = h('select', { id: 'run-runtime' }, h('option', { value: 'runc' }, 'runc'), h('option', { value: 'runsc' }, 'runsc (gVisor)'));
  const problem = h('p', { class: 'error', role: 'alert' });
  const form = h(
    'form',
    {
      id: 'run-form',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        problem.textContent = '';
        call<JobView>('POST', '/v1/jobs', { command: ['sh', '-c', command.value], runtime: runtime.value }).then(
          (job) => (location.hash = `#/jobs/${encodeURIComponent(job.id)}`),
          (e: Error) => (problem.textContent = e.message),
        );
      },
    },
    command,
    ' ',
    runtime,
    ' ',
    h('button', { type: 'submit' }, 'Run'),
  );
  replace(root, h('h2', {}, 'Jobs'), form, problem, h('p', {}, 'Show ', filter), list);
  const refresh = async () => {
    const { jobs } = await call<{ jobs: JobView[] }>('GET', '/v1/jobs?limit=100');
    const shown = jobs.filter((j) => !filter.value || j.status === filter.value);
    replace(
      list,
      table(
        ['job', 'status', 'runtime', 'command', 'created', 'exit'],
        shown.map((j) => [h('a', { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id), h('span', { class: `status ${j.status}` }, j.status), j.runtime, j.command.join(' '), when(j.createdAt), j.exitCode ?? '']),
        { id: 'jobs-table' },
      ),
    );
  };
  filter.addEventListener('change', () => void refresh());
  poll(refresh, 2000, signal);
};

export const jobPage: Page = (root, signal, id) => {
  const head = h('div', { id: 'job-head' });
  const out = h('pre', { id: 'job-output', class: 'output' });
  const details = h('div', { id: 'job-details' });
  replace(root, h('h2', {}, 'Job ', h('code', {}, id ?? '')), head, h('h3', {}, 'Output'), out, details);
  const show = (j: JobView) => {
    replace(
      head,
      h('p', {}, 'Status ', h('strong', { class: `status ${j.status}`, id: 'job-status' }, j.status), j.exitCode !== null ? ` (exit ${j.exitCode})` : '', j.message ? ` — ${j.message}` : ''),
      h('p', {}, 'Command ', h('code', { id: 'job-command' }, j.command.join(' ')), ` · ${j.runtime} · created ${when(j.createdAt)} · started ${when(j.startedAt)} · ended ${when(j.endedAt)}`),
      j.status === 'running' || j.status === 'queued' || j.status === 'assigned'
        ? h('button', { onclick: () => void call('POST', `/v1/jobs/${encodeURIComponent(j.id)}/cancel`).catch(() => {}) }, 'Cancel')
        : null,
    );
    replace(
      details,
      h('h3', {}, 'Timings (ms)'),
      table(['step', 'ms'], Object.entries(j.timings).map(([k, v]) => [k, Math.round(v * 10) / 10])),
      h('h3', {}, 'Wipe receipt'),
      h('pre', { id: 'job-receipt' }, j.wipe ? JSON.stringify(j.wipe, null, 2) : 'not yet'),
    );
  };
  let status = '';
  const load = async () => {
    const j = await call<JobView>('GET', `/v1/jobs/${encodeURIComponent(id ?? '')}`);
    status = j.status;
    show(j);
  };
  let refreshed = false;
  const onOutput = () => {
    // Output means the job runs: a status loaded before it started is refreshed at once, not at the next poll.
    if (refreshed || status === 'running') return;
    refreshed = true;
    void load().catch(() => {});
  };
  void load()
    .then(() => follow(id ?? '', out, onOutput, load, signal))
    .catch(() => {});
  // The receipt arrives after the end: keep the details fresh for a while.
  poll(load, 2000, signal);
};

/** FOLLOW_RETRY_MS: a live output stream that broke off before the job's end is opened again after this long. */
const FOLLOW_RETRY_MS = 1000;

/**
 * follow appends the job's output to `out` as it arrives, until its `end` event (then `onEnd`) or until the page is left.
 * A stream that breaks off (a restarted or failed-over control plane, a dropped connection) is opened again after the last
 * chunk shown, so nothing is lost or shown twice. `onOutput` runs on each chunk (the page refreshes a stale status).
 */
async function follow(id: string, out: HTMLElement, onOutput: () => void, onEnd: () => Promise<void>, signal: AbortSignal): Promise<void> {
  let after = 0;
  let ended = false;
  while (!ended && !signal.aborted) {
    try {
      await stream(
        `/v1/jobs/${encodeURIComponent(id)}/logs?follow=true&after=${after}`,
        (e) => {
          if (e.event === 'output') {
            const c = JSON.parse(e.data) as { seq: number; stream: string; data: string };
            if (c.seq <= after) return;
            after = c.seq;
            out.appendChild(h('span', { class: c.stream }, decodeBase64(c.data)));
            onOutput();
          } else if (e.event === 'end') ended = true;
        },
        signal,
      );
    } catch {
      // broken off or refused: tried again below, unless the page was left
    }
    if (ended) {
      await onEnd().catch(() => {});
      return;
    }
    await new Promise((r) => setTimeout(r, FOLLOW_RETRY_MS));
  }
}

/** poll runs `fn` now and every `ms` until the page is left. */
export function poll(fn: () => Promise<unknown>, ms: number, signal: AbortSignal): void {
  const tick = () => {
    if (signal.aborted) return;
    void fn()
      .catch(() => {})
      .finally(() => {
        if (!signal.aborted) setTimeout(tick, ms);
      });
  };
  tick();
}
