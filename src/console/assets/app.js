// The console: sign-in, the pages (#/ home, #/project/ID, #/ops) and the one event stream that
// keeps whichever page is shown up to date. The project page applies each event where it belongs
// (project.js); home and operations, small pages of totals, are read again after events that
// concern them.

import { api, auth, setKey, ApiError } from './api.js';
import { h, fill, tick } from './dom.js';
import { Live } from './live.js';
import { home } from './home.js';
import { ProjectView } from './project.js';
import { ops } from './ops.js';
import { spend } from './spend.js';

const app = document.getElementById('app');
const liveBadge = document.getElementById('live');
const banner = document.getElementById('banner');
const who = document.getElementById('who');

let live = null;
/** The project page's view while it is shown (it takes the events). */
let view = null;
let rendering = false;
let again = false;
let timer = null;

function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = /^\/project\/([0-9a-fA-F-]{36})$/.exec(hash);
  if (m) return { page: 'project', id: m[1] };
  if (hash === '/ops') return { page: 'ops' };
  return { page: 'home' };
}

/** Renders the current page; a render asked for while one runs happens once it is done. */
async function render() {
  if (rendering) {
    again = true;
    return;
  }
  rendering = true;
  const r = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === r.page);
  }
  if (view) view.close();
  view = null;
  try {
    let content;
    if (r.page === 'project') {
      // Created before it reads, so that no event committed meanwhile is missed.
      const v = new ProjectView(r.id, { onStale: soon });
      view = v;
      content = await v.load();
    } else {
      content = r.page === 'ops' ? [...(await ops()), await spend(soon)] : await home(soon);
    }
    fill(app, content);
    app.dataset.page = r.page;
    app.dataset.rendered = String(Number(app.dataset.rendered || 0) + 1);
  } catch (e) {
    if (view) view.close();
    view = null;
    if (e instanceof ApiError && e.status === 401) {
      signIn('The key was refused; sign in again.');
    } else {
      fill(app, h('p', { class: 'error', text: e instanceof ApiError ? `${e.code}: ${e.message}` : String(e) }));
    }
  } finally {
    rendering = false;
    if (again) {
      again = false;
      render();
    }
  }
}

/** Renders again shortly: events often come in bursts. */
function soon() {
  clearTimeout(timer);
  timer = setTimeout(render, 150);
}

function onEvent(frame) {
  const r = route();
  if (frame.event_type === 'resync_required') {
    // Events were missed for good (older than the server keeps): read the page again.
    soon();
    return;
  }
  if (r.page === 'project') {
    if (view && view.id === r.id) view.take(frame);
    return;
  }
  if (frame.event_type === 'task_progress') return;
  if (r.page === 'ops' && !/^(alert_|budget_)/.test(String(frame.event_type))) return;
  soon();
}

/** After a reconnect the stream replays what was missed; the project page applies it. */
function onCaughtUp() {
  if (route().page !== 'project' || !view) render();
}

function onState(state, detail) {
  liveBadge.className = `live ${state === 'live' ? 'on' : 'off'}`;
  liveBadge.textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : 'offline';
  liveBadge.dataset.state = state;
  if (state === 'reconnecting') {
    banner.hidden = false;
    banner.textContent = `${detail}; the page catches up once it is back.`;
  } else if (state === 'live') {
    banner.hidden = true;
    banner.textContent = '';
  }
}

function showWho() {
  const me = auth.me;
  if (!me || !me.keys_required) {
    fill(who);
    return;
  }
  const out = h('button', { class: 'link', text: 'sign out' });
  out.addEventListener('click', () => {
    setKey(null);
    auth.me = null;
    location.reload();
  });
  fill(who, h('span', { class: 'key-name', text: me.name }),
    me.access === 'read_only'
      ? h('span', { class: 'badge s-read_only', text: 'read-only' })
      : h('span', { class: 'badge roles', text: (me.roles || []).join(', ') }),
    ' ', out);
}

function signIn(message) {
  const key = h('input', { type: 'password', name: 'key', autocomplete: 'current-password', placeholder: 'API key', required: true });
  const problem = h('p', { class: 'error', text: message || '' });
  const form = h('form', { class: 'signin', id: 'signin' },
    h('h2', {}, 'Sign in'),
    h('p', { class: 'muted', text: 'This server asks for an API key. It is kept for this browser session only.' }),
    h('label', {}, 'API key', key),
    problem,
    h('button', { class: 'primary', type: 'submit', text: 'Sign in' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    setKey(key.value.trim());
    try {
      auth.me = await api('GET', '/api/v1/auth/whoami');
      showWho();
      start();
    } catch (err) {
      setKey(null);
      problem.textContent = err instanceof ApiError && err.status === 401 ? 'That key is not known to this server.' : String(err.message || err);
    }
  });
  fill(app, form);
  app.dataset.page = 'signin';
  key.focus();
}

function start() {
  if (live) live.restart();
  else {
    live = new Live({ onEvent, onState, onCaughtUp });
    live.start();
  }
  render();
}

async function boot() {
  window.addEventListener('hashchange', render);
  try {
    auth.me = await api('GET', '/api/v1/auth/whoami');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setKey(null);
      signIn(auth.key ? 'The saved key was refused.' : '');
      return;
    }
    fill(app, h('p', { class: 'error', text: String(e.message || e) }));
    return;
  }
  showWho();
  start();
  // Ages and expiries move on (text only); the operations figures and the home page's totals are
  // read again. The project page is not: its events keep it current.
  setInterval(() => {
    tick(app);
    if (!rendering && (app.dataset.page === 'ops' || app.dataset.page === 'home')) soon();
  }, 15000);
}

boot();
