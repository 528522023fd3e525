// Operations: each service level (target, current p99, met or not), a chart of each class's p99
// and request rate over the last hour, the alerts with their recent transitions, and readiness.

import { get, ApiError } from './api.js';
import { h, svg, ago, num, badge } from './dom.js';

export async function ops() {
  const [performance, history, alerts, webhooks, ready, detailed] = await Promise.all([
    get('/api/v1/monitoring/performance'),
    get('/api/v1/monitoring/history'),
    get('/api/v1/monitoring/alerts'),
    get('/api/v1/monitoring/webhooks'),
    get('/readyz').catch((e) => (e instanceof ApiError ? { status: 'not ready', failed: [e.message] } : Promise.reject(e))),
    get('/health/detailed').catch(() => null),
  ]);
  return [
    h('section', { id: 'service-levels' },
      h('h2', {}, 'Service levels ', h('span', { class: 'muted small', text: `p99 over the last ${performance.window_seconds / 60} min` })),
      h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'class'), h('th', {}, 'source'), h('th', { class: 'n' }, 'target p99'),
          h('th', { class: 'n' }, 'current p99'), h('th', { class: 'n' }, 'samples'), h('th', {}, 'met'))),
        h('tbody', {}, performance.service_levels.map((l) => h('tr', { 'data-level': `${l.source}:${l.name}` },
          h('td', { text: l.name }),
          h('td', { class: 'muted', text: l.source }),
          h('td', { class: 'n', text: `${num(l.target_p99_ms, 3)} ms` }),
          h('td', { class: 'n', text: `${num(l.current_p99_ms, 3)} ms` }),
          h('td', { class: 'n', text: num(l.samples, 0) }),
          h('td', {}, l.met === null ? h('span', { class: 'muted', text: 'no samples' }) : badge(l.met ? 'met' : 'missed')))))),
      h('p', { class: 'muted small', text: `queue wait p99 ${num(performance.queue_wait.p99_seconds, 3)} s over ${performance.queue_wait.claims} claims` })),
    h('section', { id: 'charts' },
      h('h2', {}, 'The last hour ', h('span', { class: 'muted small', text: `a point every ${history.step_seconds} s` })),
      h('div', { class: 'charts' }, history.series.map((s) => h('figure', { class: 'chart', 'data-series': s.name },
        h('figcaption', { text: s.name }),
        chart(s.points.map((p) => p.p99_ms), 'p99 ms'),
        chart(s.points.map((p) => p.rate_per_second), 'requests/s'))))),
    h('section', { id: 'alerts' },
      h('h2', {}, 'Alerts'),
      h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'rule'), h('th', {}, 'state'), h('th', {}, 'since'), h('th', { class: 'n' }, 'value'),
          h('th', { class: 'n' }, 'threshold'), h('th', {}, 'summary'))),
        h('tbody', {}, alerts.rules.map((r) => h('tr', { 'data-rule': r.name },
          h('td', { text: r.name }),
          h('td', {}, badge(r.state)),
          h('td', { class: 'muted', text: ago(r.since) }),
          h('td', { class: 'n', text: num(r.value, 4) }),
          h('td', { class: 'n', text: `${r.comparison} ${num(r.threshold, 4)}` }),
          h('td', { class: 'muted', text: (r.annotations && r.annotations.summary) || '' }))))),
      h('h3', {}, 'Recent transitions'),
      alerts.transitions.length
        ? h('ol', { class: 'timeline' }, alerts.transitions.slice(-20).reverse().map((t) => h('li', {},
          h('strong', { text: t.rule || t.name }), ' ', badge(t.from), ' → ', badge(t.to),
          h('span', { class: 'muted small', text: ` · ${ago(t.at || t.timestamp)}` }))))
        : h('p', { class: 'muted', text: 'No transitions since start-up.' })),
    webhooks.webhooks.length ? h('section', { id: 'webhooks' },
      h('h2', {}, 'Webhooks'),
      h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'webhook'), h('th', {}, 'to'), h('th', {}, 'events'), h('th', { class: 'n' }, 'delivered'),
          h('th', { class: 'n' }, 'failed'), h('th', { class: 'n' }, 'lag'), h('th', {}, 'last error'))),
        h('tbody', {}, webhooks.webhooks.map((w) => h('tr', { 'data-webhook': w.name },
          h('td', { text: w.name }),
          h('td', { class: 'muted small', text: `${w.url} (${w.format})` }),
          h('td', { class: 'small', text: w.events.join(', ') }),
          h('td', { class: 'n', text: num(w.delivered, 0) }),
          h('td', { class: 'n', text: num(w.failed, 0) }),
          h('td', { class: 'n', text: num(w.lag_events, 0) }),
          h('td', { class: 'small error', text: w.attempts > 0 ? `${w.last_error} (attempt ${w.attempts})` : '' })))))) : null,
    h('section', { id: 'readiness' },
      h('h2', {}, 'Readiness ', badge(ready.status === 'ready' ? 'ready' : 'not_ready')),
      ready.failed && ready.failed.length ? h('ul', {}, ready.failed.map((f) => h('li', { class: 'error', text: typeof f === 'string' ? f : JSON.stringify(f) }))) : null,
      detailed ? h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'component'), h('th', {}, 'status'), h('th', {}, 'detail'))),
        h('tbody', {}, Object.entries(detailed.components).map(([name, c]) => h('tr', { 'data-component': name },
          h('td', { text: name }), h('td', {}, badge(c.status)),
          h('td', { class: 'muted small', text: Object.entries(c).filter(([k]) => k !== 'status').map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ') })))))
        : null),
  ];
}

/** A small line chart of `values` (oldest first), with its latest and highest value; one point
 * alone is a dot. */
function chart(values, unit) {
  const width = 280;
  const height = 60;
  const max = Math.max(...values, 0);
  const scale = max > 0 ? (height - 4) / max : 0;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - v * scale).toFixed(1)}`).join(' ');
  const latest = values.length ? values[values.length - 1] : null;
  return h('div', { class: 'sparkline' },
    svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': unit },
      svg('line', { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: 'axis' }),
      values.length > 1 ? svg('polyline', { points, class: 'line' })
        : values.length === 1 ? svg('circle', { cx: width / 2, cy: height - 2 - values[0] * scale, r: 2.5, class: 'dot' })
          : svg('g', {})),
    h('div', { class: 'small muted', text: values.length ? `${unit}: now ${num(latest, 3)}, max ${num(max, 3)}` : `${unit}: no points yet (one every 30 s)` }));
}
