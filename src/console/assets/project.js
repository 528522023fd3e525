// A project: its workflow phases (each phase's task and gate), its approvals, a task board by
// status with each working task's latest progress, its artifacts (formatted, downloadable) and
// its event timeline.
//
// The page is read once when it opens. After that each event is applied where it belongs — one
// task card, one approval card, one artifact summary, one timeline row — from what the event
// carries; the page reads only what it does not: a new task's instructions, a changed workflow's
// phases, an artifact's content when its summary is opened. Nothing is reloaded on a timer.

import { get, all, ApiError } from './api.js';
import { h, svg, agoSpan, short, pretty, badge, num, fill } from './dom.js';
import { approvalCard } from './approvals.js';

const COLUMNS = ['pending', 'working', 'completed', 'failed', 'cancelled'];
/** Cards shown per board column (the column's count says how many more there are). */
const PER_COLUMN = 200;
/** Rows the timeline keeps. */
const TIMELINE = 100;
/** Answered requests kept under the pending ones. */
const ANSWERED = 20;
/** Tasks, artifacts and requests read when the page opens. */
const MAX_TASKS = 2000;
const MAX_ARTIFACTS = 500;
const MAX_REQUESTS = 500;
/** Events waiting to be applied before the page gives up and reads itself again. */
const MAX_QUEUED = 5000;

const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// The latest progress frame of each task seen in this browser tab (frames come between a task's
// durable changes, which store the latest with the task).
const reported = new Map();

function remember(frame) {
  reported.delete(frame.task_id);
  reported.set(frame.task_id, frame.data);
  if (reported.size > 5000) reported.delete(reported.keys().next().value);
}

/**
 * The project page. `load()` reads the project and answers the page's elements; `take(frame)`
 * applies an event (frames taken while it loads wait for it, and what the load already read is
 * not applied twice).
 */
export class ProjectView {
  constructor(id, { onStale }) {
    this.id = id;
    this.onStale = onStale;
    this.loaded = false;
    this.closed = false;
    this.queue = [];
    this.pumping = false;
    this.tasks = new Map();
    this.order = [];
    this.cards = new Map();
    this.requests = new Map();
    this.artifacts = new Map();
    this.timelineSeqs = new Set();
  }

  close() {
    this.closed = true;
    this.queue.length = 0;
  }

  async load() {
    const id = encodeURIComponent(this.id);
    const p = await get(`/api/v1/projects/${id}`);
    const since = Math.max(0, (p.latest_seq || 0) - 2000);
    const [tasks, workflow, requests, artifacts, events] = await Promise.all([
      all(`/api/v1/projects/${id}/tasks?limit=500`, MAX_TASKS + 1),
      getWorkflow(id),
      all(`/api/v1/hitl/project/${id}/requests`, MAX_REQUESTS),
      all(`/api/v1/context/project/${id}/artifacts`, MAX_ARTIFACTS),
      all(`/api/v1/events?project_id=${id}&since=${since}&limit=500`, 2000),
    ]);
    this.project = p;
    // Every task read: the counts are the board's own. More than the page reads: the server's
    // counts, moved by the events that follow.
    this.truncated = tasks.length > MAX_TASKS;
    if (this.truncated) tasks.length = MAX_TASKS;
    this.counts = this.truncated ? { ...p.task_counts } : tally(tasks);
    this.workflow = workflow;
    for (const t of tasks) this.tasks.set(t.task_id, t);
    this.order = tasks.map((t) => t.task_id).sort(byId);
    for (const r of requests) this.requests.set(r.request_id, r);
    for (const a of artifacts) this.artifacts.set(a.context_id, a);
    this.artifactsTruncated = artifacts.length >= MAX_ARTIFACTS;

    this.head = h('section', { class: 'project-head' });
    this.showHead();
    this.phases = h('div', { id: 'workflow-slot' });
    this.showPhases();
    this.approvals = this.buildApprovals();
    this.board = this.buildBoard();
    this.artifactSection = this.buildArtifacts();
    this.timeline = this.buildTimeline(events.slice(-TIMELINE).reverse());
    this.loaded = true;
    this.pump();
    return [this.head, this.phases, this.approvals, this.board, this.artifactSection, this.timeline];
  }

  /** An event of the stream (of any project; only this one's are applied). */
  take(frame) {
    if (this.closed) return;
    if (frame.event_type === 'task_progress') {
      if (frame.task_id) remember(frame);
      if (frame.project_id === this.id && this.loaded) this.showProgressOf(frame.task_id);
      return;
    }
    if (frame.project_id !== this.id) return;
    if (this.queue.length >= MAX_QUEUED) {
      // Far behind (a page that could not load, say): read the page afresh instead.
      this.close();
      this.onStale(new Error('too many events waiting'));
      return;
    }
    this.queue.push(frame);
    this.pump();
  }

  /** Applies queued events one at a time, in order (an event may wait for a read). */
  async pump() {
    if (this.pumping || !this.loaded) return;
    this.pumping = true;
    try {
      while (this.queue.length && !this.closed) {
        const frame = this.queue.shift();
        try {
          await this.apply(frame);
        } catch (e) {
          // A read failed (the server went away, say): the page is read again once it answers.
          this.close();
          this.onStale(e);
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  async apply(frame) {
    const type = frame.event_type;
    const d = frame.data || {};
    if (type.startsWith('task_')) await this.applyTask(frame, d);
    else if (type.startsWith('artifact_')) await this.applyArtifact(frame, d);
    else if (type.startsWith('hitl_')) this.applyRequest(frame, d);
    else if (type === 'workflow_event') await this.applyWorkflow(d);
    else if (type === 'oversight_level_changed') {
      this.project.oversight_level = d.level;
      this.showHead();
    }
    this.addTimelineRow(frame);
  }

  // --- tasks ---

  async applyTask(frame, d) {
    const id = frame.task_id || d.task_id;
    if (!id) return;
    const known = this.tasks.get(id);
    if (known && frame.timestamp < known.updated_at) return; // the page already shows later
    let task;
    if (!known || !('worker_id' in d)) {
      // A task this page has not read (new, or beyond the tasks read when it opened), or an event
      // written before task events carried the worker: read the task.
      try {
        task = await get(`/api/v1/tasks/${encodeURIComponent(id)}`);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return;
        throw e;
      }
      if (!known) {
        if (this.truncated && frame.event_type !== 'task_created') {
          // A task beyond those read: its column before is unknown here, so are the counts.
          await this.readCounts();
        } else {
          this.counts[task.status] = (this.counts[task.status] || 0) + 1;
        }
        this.order.splice(insertionPoint(this.order, id), 0, id);
      } else if (task.status !== known.status) {
        this.counts[known.status] = Math.max(0, (this.counts[known.status] || 0) - 1);
        this.counts[task.status] = (this.counts[task.status] || 0) + 1;
      }
    } else {
      task = {
        ...known,
        status: d.status ?? known.status,
        attempts: d.attempts ?? known.attempts,
        worker_id: d.worker_id,
        priority: d.priority ?? known.priority,
        output: 'output' in d ? d.output : known.output,
        error_message: 'error_message' in d ? d.error_message : known.error_message,
        updated_at: frame.timestamp,
      };
      if (task.status !== known.status) {
        // A durable change stores the latest progress report with the task.
        if (reported.has(id)) task.progress = reported.get(id);
        this.counts[known.status] = Math.max(0, (this.counts[known.status] || 0) - 1);
        this.counts[task.status] = (this.counts[task.status] || 0) + 1;
      }
    }
    this.tasks.set(id, task);
    // Its card is redrawn in place; a change of status then moves it to its new column.
    const old = this.cards.get(id);
    const card = taskCard(task);
    this.cards.set(id, card);
    if (old) old.replaceWith(card);
    const columns = new Set([task.status]);
    if (known) columns.add(known.status);
    for (const status of columns) this.syncColumn(status);
    if (!known || task.status !== known.status) this.showHead();
    if (this.workflow && this.workflow.phases.some((ph) => ph.task_id === id)) this.showPhases();
  }

  async readCounts() {
    const p = await get(`/api/v1/projects/${encodeURIComponent(this.id)}`);
    this.counts = { ...p.task_counts };
  }

  taskTotal() {
    return COLUMNS.reduce((n, s) => n + Math.max(this.counts[s] || 0, 0), 0);
  }

  buildBoard() {
    this.columns = new Map();
    const section = h('section', { id: 'board' },
      h('h3', {}, 'Tasks ', this.totalSpan = h('span', { class: 'count' })),
      h('div', { class: 'board' }, COLUMNS.map((status) => {
        const column = {
          count: h('span', { class: 'count' }),
          cards: h('div', { class: 'cards-list' }),
          more: h('p', { class: 'muted small' }),
        };
        this.columns.set(status, column);
        return h('div', { class: 'column', 'data-column': status },
          h('h4', {}, status, ' ', column.count), column.cards, column.more);
      })));
    for (const status of COLUMNS) this.syncColumn(status);
    return section;
  }

  /**
   * Brings one column's cards in line with the tasks: its first PER_COLUMN tasks (oldest first),
   * each card rebuilt only when its task changed. Touches only the cards that moved.
   */
  syncColumn(status) {
    const column = this.columns.get(status);
    if (!column) return;
    const want = [];
    for (const id of this.order) {
      if (this.tasks.get(id).status === status) {
        want.push(id);
        if (want.length === PER_COLUMN) break;
      }
    }
    let node = column.cards.firstElementChild;
    for (const id of want) {
      let card = this.cards.get(id);
      if (!card) {
        card = taskCard(this.tasks.get(id));
        this.cards.set(id, card);
      }
      if (node === card) {
        node = node.nextElementSibling;
      } else {
        column.cards.insertBefore(card, node);
      }
    }
    // What is left was pushed past the column's end, or moved to a column not yet synced (which
    // then draws its card afresh).
    while (node) {
      const next = node.nextElementSibling;
      if (this.cards.get(node.dataset.task) === node) this.cards.delete(node.dataset.task);
      node.remove();
      node = next;
    }
    const count = Math.max(this.counts[status] || 0, want.length);
    column.count.textContent = String(count);
    column.more.textContent = count > want.length ? `and ${count - want.length} more` : '';
    this.totalSpan.textContent = String(this.taskTotal());
  }

  showProgressOf(taskId) {
    const card = this.cards.get(taskId);
    const task = this.tasks.get(taskId);
    if (!card || !task || task.status !== 'working') return;
    showProgress(card.querySelector('.progress'), reported.get(taskId));
  }

  // --- the head and the workflow ---

  showHead() {
    const p = this.project;
    fill(this.head,
      h('h2', {}, p.name, ' ', badge(p.status)),
      p.description ? h('p', { class: 'description', text: p.description }) : null,
      h('p', { class: 'muted' }, `oversight ${p.oversight_level} · ${this.taskTotal()} tasks · ${this.artifactTotal()} artifacts · created `, agoSpan(p.created_at)));
  }

  async applyWorkflow(d) {
    // The event names the phase and action; the phases' tasks and gates come from the workflow.
    this.workflow = await getWorkflow(encodeURIComponent(this.id));
    this.showPhases();
    if (d.action === 'project_completed') {
      const p = await get(`/api/v1/projects/${encodeURIComponent(this.id)}`);
      this.project.status = p.status;
      this.showHead();
    }
  }

  showPhases() {
    const run = this.workflow;
    if (!run) return fill(this.phases);
    return fill(this.phases, h('section', { id: 'workflow' },
      h('h3', {}, `Workflow ${run.workflow} v${run.version} `, badge(run.status)),
      run.reason ? h('p', { class: 'muted', text: run.reason }) : null,
      phaseGraph(run),
      h('ol', { class: 'phases' }, run.phases.map((ph) => {
        const task = ph.task_id ? this.tasks.get(ph.task_id) : null;
        const gate = ph.gate_request_id ? this.requests.get(ph.gate_request_id) : null;
        return h('li', { class: `phase status-${ph.status}`, 'data-phase': ph.index },
          h('div', { class: 'phase-name' }, h('strong', { text: ph.id || ph.agent_type }), ' ', badge(ph.status)),
          ph.id && ph.id !== ph.agent_type ? h('div', { class: 'muted small', text: ph.agent_type }) : null,
          ph.for_each ? h('div', { class: 'small', text: `${ph.items_done}/${ph.items_total} of ${ph.for_each}` }) : null,
          h('div', { class: 'muted small', text: `produces ${ph.produces.join(', ') || '—'}${ph.gated ? ' · gated' : ''}` }),
          task ? h('div', { class: 'small' }, 'task ', h('span', { class: 'mono', text: short(task.task_id) }), ' ', badge(task.status)) : null,
          gate ? h('div', { class: 'small' }, 'gate ', badge(gate.status), gate.responded_by ? ` by ${gate.responded_by}` : '') : null);
      }))));
  }

  // --- approvals ---

  buildApprovals() {
    this.pendingCount = h('span', { class: 'count' });
    this.pendingCards = h('div', { class: 'cards' });
    this.noPending = h('p', { class: 'muted', text: 'No approval waits.' });
    this.answeredCards = h('div', { class: 'cards' });
    this.answeredLabel = h('summary', {});
    this.answered = h('details', {}, this.answeredLabel, this.answeredCards);
    const requests = [...this.requests.values()].sort((a, b) => byId(a.request_id, b.request_id));
    for (const r of requests) {
      if (r.status === 'pending') this.pendingCards.append(this.approvalCard(r));
    }
    for (const r of requests.filter((x) => x.status !== 'pending').reverse().slice(0, ANSWERED)) {
      this.answeredCards.append(this.approvalCard(r));
    }
    const section = h('section', { id: 'project-approvals' },
      h('h3', {}, 'Approvals ', this.pendingCount), this.pendingCards, this.noPending, this.answered);
    this.countApprovals();
    return section;
  }

  approvalCard(r) {
    // An answer given here shows on its card at once; its event then redraws the card.
    return approvalCard(r, this.project.name, () => {});
  }

  countApprovals() {
    const pending = this.pendingCards.childElementCount;
    this.pendingCount.textContent = String(pending);
    this.noPending.hidden = pending > 0;
    const answered = this.answeredCards.childElementCount;
    this.answered.hidden = answered === 0;
    this.answeredLabel.textContent = `Answered (${answered} most recent)`;
  }

  applyRequest(frame, d) {
    const id = d.request_id;
    if (!id) return;
    const known = this.requests.get(id);
    let r;
    // A timeout's own outcome follows as hitl_response, hitl_expired or hitl_escalated.
    if (frame.event_type === 'hitl_timed_out') return;
    if (frame.event_type === 'hitl_escalated') {
      if (!known || known.status !== 'pending') return;
      r = { ...known, assignees: d.assignees || [], expires_at: d.expires_at ?? null, escalated: true, updated_at: frame.timestamp };
    } else if (frame.event_type === 'hitl_request_created') {
      if (known) return; // read when the page opened
      r = {
        request_id: id,
        project_id: frame.project_id,
        task_id: frame.task_id,
        question: d.question,
        options: d.options || [],
        status: d.status || 'pending',
        created_at: frame.timestamp,
        updated_at: frame.timestamp,
        expires_at: d.expires_at ?? null,
        assignees: d.assignees || [],
        on_timeout: d.on_timeout ?? null,
        responded_at: null,
        responded_by: null,
        response_comment: null,
        amended_content: null,
      };
    } else {
      if (!known || known.status !== 'pending') return; // not read, or its answer already shown
      r = {
        ...known,
        status: d.status,
        updated_at: frame.timestamp,
        responded_at: frame.event_type === 'hitl_response' ? frame.timestamp : known.responded_at,
        responded_by: d.responded_by ?? null,
        response_comment: d.comment ?? null,
        amended_content: d.amended_content ?? null,
      };
    }
    this.requests.set(id, r);
    const old = this.approvals.querySelector(`[data-request="${CSS.escape(id)}"]`);
    if (old) old.remove();
    if (r.status === 'pending') {
      this.pendingCards.append(this.approvalCard(r));
    } else {
      this.answeredCards.prepend(this.approvalCard(r));
      while (this.answeredCards.childElementCount > ANSWERED) this.answeredCards.lastElementChild.remove();
    }
    this.countApprovals();
    if (this.workflow && this.workflow.phases.some((ph) => ph.gate_request_id === id)) this.showPhases();
  }

  // --- artifacts ---

  buildArtifacts() {
    this.artifactCount = h('span', { class: 'count' });
    this.artifactList = h('div', { class: 'artifacts' });
    this.noArtifacts = h('p', { class: 'muted', text: 'No artifacts yet.' });
    const newestFirst = [...this.artifacts.values()].sort((a, b) => byId(b.context_id, a.context_id));
    for (const a of newestFirst) this.artifactList.append(artifactSummary(a));
    const section = h('section', { id: 'artifacts' },
      h('h3', {}, 'Artifacts ', this.artifactCount), this.artifactList, this.noArtifacts);
    this.countArtifacts();
    return section;
  }

  artifactTotal() {
    return this.artifactsTruncated ? Math.max(this.project.artifact_count, this.artifacts.size) : this.artifacts.size;
  }

  countArtifacts() {
    this.artifactCount.textContent = String(this.artifactTotal());
    this.noArtifacts.hidden = this.artifactList.childElementCount > 0;
  }

  async applyArtifact(frame, d) {
    const id = d.context_id;
    if (!id) return;
    const known = this.artifacts.get(id);
    const old = this.artifactList.querySelector(`[data-artifact="${CSS.escape(id)}"]`);
    if (frame.event_type === 'artifact_deleted') {
      if (!known) return;
      this.artifacts.delete(id);
      if (old) old.remove();
      this.project.artifact_count = Math.max(0, this.project.artifact_count - 1);
    } else {
      if (known && (d.version ?? 1) <= (known.version ?? 1)) return; // already shown
      const a = {
        ...(known || { created_at: frame.timestamp }),
        context_id: id,
        project_id: frame.project_id,
        artifact_type: d.artifact_type,
        source_agent: d.source_agent,
        version: d.version ?? 1,
        updated_at: frame.timestamp,
      };
      this.artifacts.set(id, a);
      const summary = artifactSummary(a);
      if (old) {
        old.replaceWith(summary);
        // It was open: show the new content.
        if (old.open) summary.open = true;
      } else {
        this.artifactList.prepend(summary);
        this.project.artifact_count += 1;
      }
    }
    this.countArtifacts();
    this.showHead();
  }

  // --- the timeline ---

  buildTimeline(events) {
    this.timelineList = h('ol', { class: 'timeline' });
    this.noEvents = h('p', { class: 'muted', text: 'No events.' });
    for (const e of events) {
      this.timelineSeqs.add(e.seq);
      this.timelineList.append(timelineRow(e));
    }
    this.noEvents.hidden = events.length > 0;
    return h('section', { id: 'timeline' }, h('h3', {}, 'Events'), this.timelineList, this.noEvents);
  }

  addTimelineRow(frame) {
    if (typeof frame.seq !== 'number' || this.timelineSeqs.has(frame.seq)) return;
    const first = this.timelineList.firstElementChild;
    if (first && Number(first.dataset.seq) > frame.seq) return; // older than every row shown
    this.timelineSeqs.add(frame.seq);
    this.timelineList.prepend(timelineRow(frame));
    while (this.timelineList.childElementCount > TIMELINE) {
      const last = this.timelineList.lastElementChild;
      this.timelineSeqs.delete(Number(last.dataset.seq));
      last.remove();
    }
    this.noEvents.hidden = true;
  }
}

async function getWorkflow(id) {
  try {
    return await get(`/api/v1/projects/${id}/workflow`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/** Tasks by status. */
function tally(tasks) {
  const counts = Object.fromEntries(COLUMNS.map((s) => [s, 0]));
  for (const t of tasks) counts[t.status] = (counts[t.status] || 0) + 1;
  return counts;
}

/** Where `id` goes in the sorted `ids`. */
function insertionPoint(ids, id) {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function taskCard(t) {
  const progress = h('div', { class: 'progress' });
  showProgress(progress, t.status === 'working' && reported.has(t.task_id) ? reported.get(t.task_id) : t.progress);
  const worker = t.worker_id ? ` · ${t.worker_id}` : '';
  return h('div', { class: 'task', 'data-task': t.task_id },
    h('div', {}, h('strong', { text: t.agent_type }), ' ', h('span', { class: 'mono muted', text: short(t.task_id) }),
      t.priority !== 3 ? h('span', { class: 'small muted', text: ` · p${t.priority}` }) : null),
    h('div', { class: 'small instructions', text: t.instructions.length > 160 ? `${t.instructions.slice(0, 160)}…` : t.instructions }),
    h('div', { class: 'small muted' }, `${t.attempts} attempt${t.attempts === 1 ? '' : 's'}${worker} · `, agoSpan(t.updated_at)),
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

/**
 * An artifact's summary line; its content is read when the summary is first opened (and its
 * download asks for it too).
 */
function artifactSummary(a) {
  let content = null;
  const pre = h('pre', { class: 'content' });
  const read = async () => {
    if (content === null) {
      const full = await get(`/api/v1/context/artifacts/${encodeURIComponent(a.context_id)}`);
      content = full.content;
    }
    return content;
  };
  const download = h('a', { href: '#', class: 'small', text: 'download', 'data-download': a.context_id });
  download.addEventListener('click', async (e) => {
    e.preventDefault();
    const value = await read();
    const url = URL.createObjectURL(new Blob([typeof value === 'string' ? value : JSON.stringify(value, null, 2)], { type: 'application/json' }));
    const link = h('a', { href: url, download: `${a.artifact_type}-${short(a.context_id)}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  const el = h('details', { class: 'artifact', 'data-artifact': a.context_id },
    h('summary', {}, h('strong', { text: a.artifact_type }), ` from ${a.source_agent} · v${a.version ?? 1} · `, agoSpan(a.updated_at), ' ', download),
    pre);
  el.addEventListener('toggle', async () => {
    if (!el.open || pre.dataset.loaded) return;
    pre.textContent = 'loading…';
    try {
      pre.textContent = pretty(await read());
      pre.dataset.loaded = 'true';
    } catch (e) {
      pre.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
    }
  });
  return el;
}

function timelineRow(e) {
  return h('li', { 'data-seq': e.seq },
    h('span', { class: 'mono muted', text: `#${e.seq}` }), ' ',
    h('strong', { text: e.event_type }),
    e.agent_type ? h('span', { class: 'muted', text: ` · ${e.agent_type}` }) : null,
    e.task_id ? h('span', { class: 'mono muted', text: ` · ${short(e.task_id)}` }) : null,
    h('span', { class: 'muted small' }, ' · ', agoSpan(e.timestamp)));
}

// --- the workflow as a graph ---

const BOX_W = 168;
const BOX_H = 54;
const GAP_X = 44;
const GAP_Y = 12;

/**
 * The run's phases as a graph: a column per depth (a phase sits right of every phase it depends
 * on), each phase a box with its id, agent type, state and a fan-out's progress (`7/10`), each
 * dependency an arrow.
 */
export function phaseGraph(run) {
  const phases = run.phases;
  const byId = new Map(phases.map((ph, i) => [ph.id, i]));
  const deps = phases.map((ph) => (ph.depends_on || []).map((id) => byId.get(id)).filter((i) => i !== undefined));
  const depth = new Array(phases.length).fill(-1);
  const depthOf = (i, seen = new Set()) => {
    if (depth[i] >= 0) return depth[i];
    if (seen.has(i)) return 0; // a stored run is acyclic; never loop on a broken one
    seen.add(i);
    depth[i] = deps[i].length ? 1 + Math.max(...deps[i].map((d) => depthOf(d, seen))) : 0;
    return depth[i];
  };
  phases.forEach((_, i) => depthOf(i));
  const rows = new Map();
  const at = phases.map((_, i) => {
    const row = rows.get(depth[i]) || 0;
    rows.set(depth[i], row + 1);
    return { x: depth[i] * (BOX_W + GAP_X), y: row * (BOX_H + GAP_Y) };
  });
  const width = (Math.max(...depth) + 1) * (BOX_W + GAP_X) - GAP_X + 2;
  const height = Math.max(...rows.values()) * (BOX_H + GAP_Y) - GAP_Y + 2;
  const arrows = [];
  deps.forEach((ds, i) => {
    for (const d of ds) {
      const x1 = at[d].x + BOX_W;
      const y1 = at[d].y + BOX_H / 2;
      const x2 = at[i].x - 2;
      const y2 = at[i].y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      arrows.push(svg('path', {
        class: `edge from-${d} to-${i}`,
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        'marker-end': 'url(#arrow)',
      }));
    }
  });
  const boxes = phases.map((ph, i) => {
    const third = ph.for_each
      ? `${ph.items_done}/${ph.items_total}`
      : ph.status === 'awaiting_approval' ? 'waiting for approval' : ph.gated ? 'gated' : '';
    const text = (y, value, cls) => {
      const t = svg('text', { x: at[i].x + 8, y: at[i].y + y, class: cls });
      t.textContent = value;
      return t;
    };
    return svg('g', { class: `node status-${ph.status}`, 'data-node': i },
      svg('rect', { x: at[i].x + 1, y: at[i].y + 1, width: BOX_W - 2, height: BOX_H - 2, rx: 6 }),
      text(17, ph.id || ph.agent_type, 'name'),
      text(32, `${ph.agent_type} · ${ph.status.replace('_', ' ')}`, 'state'),
      text(47, third, ph.for_each ? 'fan-out' : 'state'));
  });
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    svg('path', { d: 'M0,0 L10,5 L0,10 z' }));
  return h('div', { class: 'graph' },
    svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `the phases of ${run.workflow}` },
      svg('defs', {}, marker), ...arrows, ...boxes));
}
