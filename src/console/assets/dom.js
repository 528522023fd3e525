// DOM helpers. Everything agents or people wrote goes into the page as text (textContent, never
// innerHTML), so a question or an artifact that contains markup shows that markup literally.

/** Creates an element: h('div', {class: 'x', onclick: f}, child, 'text', …). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An SVG element (for charts). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** "3 s", "5 min", "2 h", "4 d" from milliseconds. */
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** "5 min ago" for a timestamp. */
export function ago(ts) {
  if (!ts) return '—';
  return `${duration(Date.now() - Date.parse(ts))} ago`;
}

/** "in 5 min" (or "expired") for a future timestamp. */
export function until(ts) {
  if (!ts) return 'never';
  const ms = Date.parse(ts) - Date.now();
  return ms <= 0 ? 'expired' : `in ${duration(ms)}`;
}

/** "5 min ago" that stays true: `tick()` brings it up to date. */
export function agoSpan(ts) {
  return h('span', { 'data-ago': ts || '', text: ago(ts) });
}

/** "in 5 min" (or "expired") that stays true: `tick()` brings it up to date. */
export function untilSpan(ts) {
  return h('span', { 'data-until': ts || '', text: until(ts) });
}

/** Brings every age and expiry on the page up to date: text only, no request. */
export function tick(root = document) {
  for (const el of root.querySelectorAll('[data-ago]')) {
    const text = ago(el.dataset.ago);
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of root.querySelectorAll('[data-until]')) {
    const text = until(el.dataset.until);
    if (el.textContent !== text) el.textContent = text;
  }
}

/** The first 8 characters of an id, for display. */
export function short(id) {
  return id ? String(id).slice(0, 8) : '—';
}

/** A value as indented JSON text. */
export function pretty(value) {
  if (typeof value === 'string') return value;
  return JSON.stringify(value, null, 2);
}

/** A number with at most `digits` decimals. */
export function num(n, digits = 2) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}

/** A status word as a coloured badge. */
export function badge(status) {
  return h('span', { class: `badge s-${String(status).replace(/[^a-z_]/g, '')}`, text: status });
}
