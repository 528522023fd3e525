// Spend: what the agents' model calls cost, per project and per agent type (from
// GET /api/v1/usage), and every budget with its bar and state; a key with the operator role
// raises a budget's limit from here (PUT /api/v1/budgets/{scope}).

import { get, all, api, auth, ApiError } from './api.js';
import { h, num, badge, short } from './dom.js';

export async function spend(rerender) {
  const [byProject, byAgent, budgets, projects] = await Promise.all([
    get('/api/v1/usage?group_by=project'),
    get('/api/v1/usage?group_by=agent_type'),
    get('/api/v1/budgets'),
    all('/api/v1/projects', 1000),
  ]);
  const names = new Map(projects.map((p) => [p.id, p.name]));
  const totals = byProject.totals;
  return h('section', { id: 'spend' },
    h('h2', {}, 'Spend ', h('span', { class: 'muted small',
      text: `$${num(totals.cost_usd, 2)} and ${num(totals.total_tokens, 0)} tokens in ${num(totals.reports, 0)} reports` })),
    h('div', { class: 'spend-tables' },
      table('project', byProject.groups, (g) => names.get(g.project_id) || short(g.project_id), 'data-spend-project', (g) => g.project_id),
      table('agent type', byAgent.groups, (g) => g.agent_type, 'data-spend-agent', (g) => g.agent_type)),
    h('h3', {}, 'Budgets'),
    budgets.items.length
      ? h('table', { id: 'budgets' },
        h('thead', {}, h('tr', {}, h('th', {}, 'scope'), h('th', {}, 'window'), h('th', {}, 'used'),
          h('th', {}, 'state'), auth.can('operator') ? h('th', {}, 'raise to') : null)),
        h('tbody', {}, budgets.items.map((b) => budgetRow(b, names, rerender))))
      : h('p', { class: 'muted', text: 'No budgets. Set one with PUT /api/v1/budgets/{scope}.' }));
}

function table(what, groups, label, attr, key) {
  return h('table', {},
    h('thead', {}, h('tr', {}, h('th', {}, what), h('th', { class: 'n' }, 'reports'), h('th', { class: 'n' }, 'tokens'),
      h('th', { class: 'n' }, 'cost'))),
    h('tbody', {}, groups.length
      ? groups.map((g) => h('tr', { [attr]: key(g) },
        h('td', { text: label(g) }),
        h('td', { class: 'n', text: num(g.reports, 0) }),
        h('td', { class: 'n', text: num(g.total_tokens, 0) }),
        h('td', { class: 'n cost', text: `$${num(g.cost_usd, 4)}` })))
      : h('tr', {}, h('td', { class: 'muted', colspan: 4, text: 'nothing reported yet' }))));
}

/** What a budget's limit says, and what it used of it. */
function usedText(b) {
  const parts = [];
  if (b.max_cost_usd !== null) parts.push(`$${num(b.used.cost_usd, 2)} of $${num(b.max_cost_usd, 2)}`);
  if (b.max_tokens !== null) parts.push(`${num(b.used.total_tokens, 0)} of ${num(b.max_tokens, 0)} tokens`);
  return parts.join(' · ');
}

function scopeText(scope, names) {
  const id = scope.startsWith('project:') ? scope.slice(8) : null;
  return id ? `project ${names.get(id) || short(id)}` : scope.replace('agent_type:', 'agent type ');
}

function budgetRow(b, names, rerender) {
  const pct = Math.min(100, Math.round(b.ratio * 100));
  // Through the CSSOM: the page's policy allows no style attribute.
  const filled = h('div', { class: 'fill' });
  filled.style.width = `${pct}%`;
  const row = h('tr', { 'data-budget': b.scope, 'data-state': b.state },
    h('td', { text: scopeText(b.scope, names) }),
    h('td', { class: 'muted', text: b.window }),
    h('td', {},
      h('div', { class: `bar s-${b.state}`, role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct },
        filled),
      h('span', { class: 'small', text: `${pct}% · ${usedText(b)}` })),
    h('td', {}, badge(b.state)),
    auth.can('operator') ? h('td', {}, raiseForm(b, rerender)) : null);
  return row;
}

/** Raises the budget's limit: dollars when it has one, else tokens. */
function raiseForm(b, rerender) {
  const dollars = b.max_cost_usd !== null;
  const input = h('input', { type: 'number', min: 0, step: dollars ? '0.01' : '1', 'aria-label': dollars ? 'new dollar limit' : 'new token limit',
    value: dollars ? b.max_cost_usd * 2 : b.max_tokens * 2 });
  const error = h('span', { class: 'error small' });
  const form = h('form', { class: 'raise', onsubmit: async (e) => {
    e.preventDefault();
    const value = Number(input.value);
    const body = { max_cost_usd: b.max_cost_usd, max_tokens: b.max_tokens, window: b.window, warn_percent: b.warn_percent };
    if (dollars) body.max_cost_usd = value;
    else body.max_tokens = Math.round(value);
    try {
      await api('PUT', `/api/v1/budgets/${b.scope}`, body);
      rerender();
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : String(err);
    }
  } },
  dollars ? '$' : null, input, h('button', { type: 'submit', 'data-action': 'raise', text: 'Raise' }), error);
  return form;
}
