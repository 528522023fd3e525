// A HITL request as a card: its question, options, age and expiry, and — for a pending request and
// a key that may write — approve, reject (with a comment) and amend (JSON, checked before sending).

import { api, auth, ApiError } from './api.js';
import { h, agoSpan, untilSpan, short, pretty, badge, fill } from './dom.js';

// Cards with an open form survive a page refresh (the text being typed stays).
const open = new Map();

/**
 * A card for request `r`. `projectName` labels it; `onAnswered()` runs after a successful answer
 * (the home page reads its inbox again; the project page waits for the answer's event).
 */
export function approvalCard(r, projectName, onAnswered) {
  const kept = open.get(r.request_id);
  if (kept && r.status === 'pending') {
    kept.refresh(r);
    return kept.el;
  }
  open.delete(r.request_id);
  const meta = h('div', { class: 'meta' });
  const result = h('div', { class: 'result', 'aria-live': 'polite' });
  const forms = h('div', { class: 'forms' });
  const el = h(
    'article',
    { class: `card approval status-${r.status}`, 'data-request': r.request_id },
    h(
      'header',
      {},
      h('a', { href: `#/project/${r.project_id}`, class: 'project', text: projectName || short(r.project_id) }),
      r.task_id ? h('span', { class: 'muted', text: ` · task ${short(r.task_id)}` }) : null,
      ' ',
      badge(r.status),
    ),
    h('p', { class: 'question', text: r.question }),
    r.options && r.options.length
      ? h('ul', { class: 'options' }, r.options.map((o) => h('li', { text: o })))
      : null,
    meta,
    forms,
    result,
  );
  const refresh = (req) => {
    const assignees = req.assignees || [];
    const deadline = req.status !== 'pending' || !req.expires_at ? null
      : req.on_timeout && !req.escalated ? [` · ${req.on_timeout === 'escalate' ? 'escalates' : `${req.on_timeout}s itself`} `, untilSpan(req.expires_at)]
      : [' · expires ', untilSpan(req.expires_at)];
    fill(meta, 'asked ', agoSpan(req.created_at),
      assignees.length ? h('span', { class: 'assignees', text: ` · for ${assignees.join(', ')}` }) : null,
      req.escalated ? [' ', badge('escalated')] : null,
      deadline);
  };
  refresh(r);
  const mine = !(r.assignees && r.assignees.length) || !auth.me || !auth.me.name || r.assignees.includes(auth.me.name);
  if (r.status !== 'pending') {
    fill(result, answered(r));
  } else if (auth.can('reviewer') && mine) {
    fill(forms, actions(r, el, forms, result, refresh, onAnswered));
  } else if (auth.can('reviewer')) {
    fill(forms, h('p', { class: 'muted small', text: `only ${r.assignees.join(', ')} may answer this` }));
  }
  return el;
}

/** The amended content (BotArmy's shape wraps it: `{amended_content, comment}`). */
function amendment(r) {
  const a = r.amended_content;
  if (a === null || a === undefined) return undefined;
  return a && typeof a === 'object' && 'amended_content' in a ? a.amended_content : a;
}

/** Who answered and how. */
function answered(r) {
  const who = r.responded_by ? ` by ${r.responded_by}` : '';
  return [
    h('span', { class: 'answer' }, `${r.status}${who}`, r.responded_at ? [' ', agoSpan(r.responded_at)] : null),
    r.response_comment ? h('p', { class: 'comment', text: r.response_comment }) : null,
    amendment(r) !== undefined ? h('pre', { class: 'content', text: pretty(amendment(r)) }) : null,
  ];
}

function actions(r, el, forms, result, refresh, onAnswered) {
  const buttons = h('div', { class: 'buttons' });
  const send = async (body, button) => {
    for (const b of el.querySelectorAll('button')) b.disabled = true;
    fill(result, h('span', { class: 'muted', text: 'sending…' }));
    try {
      const answer = await api('POST', `/api/v1/hitl/${r.request_id}/respond`, body);
      open.delete(r.request_id);
      const who = answer.responded_by || (auth.me && auth.me.name);
      fill(forms);
      fill(result, h('span', { class: 'answer', text: `${answer.status}${who ? ` by ${who}` : ''}` }),
        answer.message ? h('p', { class: 'muted', text: answer.message }) : null);
      el.classList.replace('status-pending', `status-${answer.status}`);
      onAnswered();
    } catch (e) {
      for (const b of el.querySelectorAll('button')) b.disabled = false;
      fill(result, h('span', { class: 'error', text: e instanceof ApiError ? `${e.code}: ${e.message}` : String(e) }));
      if (button) button.focus();
    }
  };
  const keep = (form) => {
    open.set(r.request_id, { el, refresh });
    fill(forms, buttons, form);
  };
  const close = () => {
    open.delete(r.request_id);
    fill(forms, buttons);
  };
  const approve = h('button', { class: 'primary', 'data-action': 'approve', text: 'Approve' });
  approve.addEventListener('click', () => send({ action: 'approve' }, approve));
  const reject = h('button', { 'data-action': 'reject', text: 'Reject…' });
  reject.addEventListener('click', () => {
    const comment = h('textarea', { name: 'comment', rows: 3, placeholder: 'Why? (sent as the comment)' });
    const go = h('button', { class: 'danger', 'data-action': 'send-reject', text: 'Send rejection' });
    go.addEventListener('click', () => send({ action: 'reject', comment: comment.value || null }, go));
    const cancel = h('button', { text: 'Cancel', onclick: close });
    keep(h('div', { class: 'form' }, h('label', {}, 'Comment', comment), h('div', { class: 'buttons' }, go, cancel)));
    comment.focus();
  });
  const amend = h('button', { 'data-action': 'amend', text: 'Amend…' });
  amend.addEventListener('click', () => {
    const initial = amendment(r) !== undefined ? pretty(amendment(r)) : '{\n  \n}';
    const content = h('textarea', { name: 'content', rows: 8, class: 'code', spellcheck: 'false' });
    content.value = initial;
    const comment = h('input', { name: 'comment', type: 'text', placeholder: 'Comment (optional)' });
    const problem = h('p', { class: 'error', 'data-role': 'json-error' });
    const go = h('button', { class: 'primary', 'data-action': 'send-amend', text: 'Send amendment' });
    const check = () => {
      try {
        JSON.parse(content.value);
        problem.textContent = '';
        go.disabled = false;
        return true;
      } catch (e) {
        problem.textContent = `not valid JSON: ${e.message}`;
        go.disabled = true;
        return false;
      }
    };
    content.addEventListener('input', check);
    go.addEventListener('click', () => {
      if (check()) send({ action: 'amend', content: JSON.parse(content.value), comment: comment.value || null }, go);
    });
    const cancel = h('button', { text: 'Cancel', onclick: close });
    keep(h('div', { class: 'form' }, h('label', {}, 'Amended content (JSON)', content), problem,
      h('label', {}, 'Comment', comment), h('div', { class: 'buttons' }, go, cancel)));
    check();
    content.focus();
  });
  fill(buttons, approve, reject, amend);
  return buttons;
}
