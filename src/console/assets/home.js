// Home: the pending approvals across projects (oldest first), the projects with their task counts,
// the agents and the queues.

import { get, all } from './api.js';
import { h, ago, duration, num, badge, short } from './dom.js';
import { approvalCard } from './approvals.js';

const STATUSES = ['pending', 'working', 'completed', 'failed', 'cancelled'];

export async function home(refresh) {
  const [pending, projects, agents, queues] = await Promise.all([
    all('/api/v1/hitl/pending', 500),
    all('/api/v1/projects?limit=200', 200),
    get('/api/v1/agents/status'),
    get('/api/v1/queues'),
  ]);
  const names = new Map(projects.map((p) => [p.id, p.name]));
  pending.sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  return [
    h('section', { id: 'inbox' },
      h('h2', {}, 'Approvals waiting ', h('span', { class: 'count', text: pending.length })),
      pending.length
        ? h('div', { class: 'cards' }, pending.map((r) => approvalCard(r, names.get(r.project_id), refresh)))
        : h('p', { class: 'muted', text: 'Nothing waits for a human.' })),
    h('section', { id: 'projects' },
      h('h2', {}, 'Projects ', h('span', { class: 'count', text: projects.length })),
      projects.length
        ? h('table', {},
          h('thead', {}, h('tr', {}, h('th', {}, 'project'), h('th', {}, 'status'),
            STATUSES.map((s) => h('th', { class: 'n', text: s })), h('th', { class: 'n' }, 'approvals'),
            h('th', {}, 'updated'))),
          h('tbody', {}, projects.map((p) => h('tr', { 'data-project': p.id },
            h('td', {}, h('a', { href: `#/project/${p.id}`, text: p.name })),
            h('td', {}, badge(p.status)),
            STATUSES.map((s) => h('td', { class: 'n', text: p.task_counts[s] })),
            h('td', { class: 'n', text: p.pending_hitl_requests }),
            h('td', { class: 'muted', text: ago(p.updated_at) })))))
        : h('p', { class: 'muted', text: 'No projects yet.' })),
    h('div', { class: 'columns' },
      h('section', { id: 'agents' },
        h('h2', {}, 'Agents'),
        h('table', {},
          h('thead', {}, h('tr', {}, h('th', {}, 'agent'), h('th', {}, 'status'), h('th', { class: 'n' }, 'working'),
            h('th', {}, 'current task'), h('th', {}, 'last activity'))),
          h('tbody', {}, Object.values(agents).map((a) => h('tr', { 'data-agent': a.agent_type },
            h('td', { text: a.agent_type }),
            h('td', {}, badge(a.status), a.error_message ? h('div', { class: 'error', text: a.error_message }) : null),
            h('td', { class: 'n', text: a.working_tasks ?? '—' }),
            h('td', { class: 'mono', text: short(a.current_task_id) }),
            h('td', { class: 'muted', text: ago(a.last_activity) })))))),
      h('section', { id: 'queues' },
        h('h2', {}, 'Queues'),
        h('table', {},
          h('thead', {}, h('tr', {}, h('th', {}, 'agent'), h('th', { class: 'n' }, 'pending'), h('th', { class: 'n' }, 'scheduled'),
            h('th', { class: 'n' }, 'working'), h('th', { class: 'n' }, 'waiting workers'), h('th', {}, 'oldest'), h('th', {}, 'state'))),
          h('tbody', {}, queues.queues.map((q) => h('tr', { 'data-queue': q.agent_type },
            h('td', { text: q.agent_type }),
            h('td', { class: 'n', text: q.pending }),
            h('td', { class: 'n', text: q.scheduled }),
            h('td', { class: 'n', text: q.max_working === null ? q.working : `${q.working} / ${q.max_working}` }),
            h('td', { class: 'n', text: q.workers_waiting }),
            h('td', { class: 'muted', text: q.oldest_pending_age_seconds === null ? '—' : duration(q.oldest_pending_age_seconds * 1000) }),
            h('td', {}, q.paused ? badge('paused') : h('span', { class: 'muted', text: 'running' }))))))),
    ),
    h('p', { class: 'muted small', text: `${num(pending.length, 0)} pending approvals, ${num(projects.length, 0)} projects.` }),
  ];
}
