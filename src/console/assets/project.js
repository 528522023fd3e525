// A project: its workflow phases (each phase's task and gate), its approvals, a task board by
// status with each working task's latest progress, its artifacts (formatted, downloadable) and
// its event timeline.

import { get, all, ApiError } from './api.js';
import { h, ago, short, pretty, badge, num, fill } from './dom.js';
import { approvalCard } from './approvals.js';

const COLUMNS = ['pending', 'working', 'completed', 'failed', 'cancelled'];
/** Events the timeline keeps. */
const TIMELINE = 100;

export async function project(id, refresh) {
  const p = await get(`/api/v1/projects/${encodeURIComponent(id)}`);
  const since = Math.max(0, (p.latest_seq || 0) - 2000);
  const [tasks, workflow, requests, artifacts, events] = await Promise.all([
    all(`/api/v1/projects/${id}/tasks?limit=500`, 2000),
    get(`/api/v1/projects/${id}/workflow`).catch((e) => {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }),
    all(`/api/v1/hitl/project/${id}/requests`, 500),
    all(`/api/v1/context/project/${id}/artifacts?include=content`, 500),
    all(`/api/v1/events?project_id=${id}&since=${since}&limit=500`, 2000),
  ]);
  const byId = new Map(tasks.map((t) => [t.task_id, t]));
  const pending = requests.filter((r) => r.status === 'pending').reverse();
  const answered = requests.filter((r) => r.status !== 'pending').slice(0, 20);
  return [
    h('section', { class: 'project-head' },
      h('h2', {}, p.name, ' ', badge(p.status)),
      p.description ? h('p', { class: 'description', text: p.description }) : null,
      h('p', { class: 'muted', text: `oversight ${p.oversight_level} · ${p.total_tasks} tasks · ${p.artifact_count} artifacts · created ${ago(p.created_at)}` })),
    workflow ? phases(workflow, byId, requests) : null,
    h('section', { id: 'project-approvals' },
      h('h3', {}, 'Approvals ', h('span', { class: 'count', text: pending.length })),
      pending.length
        ? h('div', { class: 'cards' }, pending.map((r) => approvalCard(r, p.name, refresh)))
        : h('p', { class: 'muted', text: 'No approval waits.' }),
      answered.length
        ? h('details', {}, h('summary', {}, `Answered (${answered.length} most recent)`),
          h('div', { class: 'cards' }, answered.map((r) => approvalCard(r, p.name, refresh))))
        : null),
    board(tasks),
    artifactList(artifacts),
    timeline(events.slice(-TIMELINE).reverse()),
  ];
}

function phases(run, byId, requests) {
  const gates = new Map(requests.map((r) => [r.request_id, r]));
  return h('section', { id: 'workflow' },
    h('h3', {}, `Workflow ${run.workflow} `, badge(run.status)),
    h('ol', { class: 'phases' }, run.phases.map((ph) => {
      const task = ph.task_id ? byId.get(ph.task_id) : null;
      const gate = ph.gate_request_id ? gates.get(ph.gate_request_id) : null;
      return h('li', { class: `phase status-${ph.status}`, 'data-phase': ph.index },
        h('div', { class: 'phase-name' }, h('strong', { text: ph.agent_type }), ' ', badge(ph.status)),
        h('div', { class: 'muted small', text: `produces ${ph.produces.join(', ') || '—'}${ph.gated ? ' · gated' : ''}` }),
        task ? h('div', { class: 'small' }, 'task ', h('span', { class: 'mono', text: short(task.task_id) }), ' ', badge(task.status)) : null,
        gate ? h('div', { class: 'small' }, 'gate ', badge(gate.status), gate.responded_by ? ` by ${gate.responded_by}` : '') : null);
    })));
}

function board(tasks) {
  return h('section', { id: 'board' },
    h('h3', {}, 'Tasks ', h('span', { class: 'count', text: tasks.length })),
    h('div', { class: 'board' }, COLUMNS.map((status) => {
      const column = tasks.filter((t) => t.status === status);
      return h('div', { class: 'column', 'data-column': status },
        h('h4', {}, status, ' ', h('span', { class: 'count', text: column.length })),
        column.slice(0, 200).map(taskCard),
        column.length > 200 ? h('p', { class: 'muted small', text: `and ${column.length - 200} more` }) : null);
    })));
}

// The latest progress frame of each task seen on this page (frames come faster than reloads).
const reported = new Map();

function taskCard(t) {
  const progress = h('div', { class: 'progress' });
  showProgress(progress, t.status === 'working' && reported.has(t.task_id) ? reported.get(t.task_id) : t.progress);
  return h('div', { class: 'task', 'data-task': t.task_id },
    h('div', {}, h('strong', { text: t.agent_type }), ' ', h('span', { class: 'mono muted', text: short(t.task_id) }),
      t.priority !== 3 ? h('span', { class: 'small muted', text: ` · p${t.priority}` }) : null),
    h('div', { class: 'small instructions', text: t.instructions.length > 160 ? `${t.instructions.slice(0, 160)}…` : t.instructions }),
    h('div', { class: 'small muted', text: `${t.attempts} attempt${t.attempts === 1 ? '' : 's'}${t.worker_id ? ` · ${t.worker_id}` : ''} · ${ago(t.updated_at)}` }),
    t.error_message ? h('div', { class: 'small error', text: t.error_message }) : null,
    progress);
}

function showProgress(el, report) {
  if (!report) return fill(el);
  const percent = typeof report.percent === 'number' ? Math.max(0, Math.min(100, report.percent)) : null;
  return fill(el,
    percent !== null ? h('progress', { max: 100, value: percent }) : null,
    h('span', { class: 'small', text: `${report.message || ''}${percent !== null ? ` ${num(percent, 0)} %` : ''}` }));
}

/** A `task_progress` frame: the task's card shows it at once, without a reload. */
export function applyProgress(frame) {
  if (frame.task_id) {
    reported.set(frame.task_id, frame.data);
    if (reported.size > 5000) reported.delete(reported.keys().next().value);
  }
  const card = document.querySelector(`[data-task="${CSS.escape(frame.task_id || '')}"] .progress`);
  if (card) showProgress(card, frame.data);
}

function artifactList(artifacts) {
  return h('section', { id: 'artifacts' },
    h('h3', {}, 'Artifacts ', h('span', { class: 'count', text: artifacts.length })),
    artifacts.length
      ? artifacts.map((a) => {
        const text = pretty(a.content);
        const download = h('a', { href: '#', class: 'small', text: 'download', 'data-download': a.context_id });
        download.addEventListener('click', (e) => {
          e.preventDefault();
          const url = URL.createObjectURL(new Blob([typeof a.content === 'string' ? a.content : JSON.stringify(a.content, null, 2)], { type: 'application/json' }));
          const link = h('a', { href: url, download: `${a.artifact_type}-${short(a.context_id)}.json` });
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 1000);
        });
        return h('details', { class: 'artifact', 'data-artifact': a.context_id },
          h('summary', {}, h('strong', { text: a.artifact_type }), ` from ${a.source_agent} · v${a.version ?? 1} · ${ago(a.updated_at)} `, download),
          h('pre', { class: 'content', text }));
      })
      : h('p', { class: 'muted', text: 'No artifacts yet.' }));
}

function timeline(events) {
  return h('section', { id: 'timeline' },
    h('h3', {}, 'Events'),
    events.length
      ? h('ol', { class: 'timeline' }, events.map((e) => h('li', { 'data-seq': e.seq },
        h('span', { class: 'mono muted', text: `#${e.seq}` }), ' ',
        h('strong', { text: e.event_type }),
        e.agent_type ? h('span', { class: 'muted', text: ` · ${e.agent_type}` }) : null,
        e.task_id ? h('span', { class: 'mono muted', text: ` · ${short(e.task_id)}` }) : null,
        h('span', { class: 'muted small', text: ` · ${ago(e.timestamp)}` }))))
      : h('p', { class: 'muted', text: 'No events.' }));
}
