// The public REST API, as any client uses it. The API key (when the server asks for one) is kept
// for this browser session only (sessionStorage) and sent as a Bearer token.

const KEY = 'flightdeck.key';

export const auth = {
  key: sessionStorage.getItem(KEY),
  /** `GET /api/v1/auth/whoami`: {keys_required, name, access, roles}. */
  me: null,
  get readOnly() {
    return this.me !== null && this.me.access === 'read_only';
  },
  /** Whether the key holds `role` (worker, reviewer, operator, admin): what the console offers. */
  can(role) {
    if (this.me === null) return false;
    if (!Array.isArray(this.me.roles)) return this.me.access !== 'read_only';
    return this.me.roles.includes(role);
  },
};

export function setKey(key) {
  auth.key = key;
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Where writes go: this server, or, once it answered that it is a follower, its leader. */
let writeBase = '';

async function send(base, method, path, body) {
  const headers = {};
  if (auth.key) headers.authorization = `Bearer ${auth.key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    const where = base ? `the leader (${base})` : 'the server';
    throw new ApiError(0, 'unreachable', `${where} did not answer (${e.message})`);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const failure = new ApiError(response.status, error.code || `http_${response.status}`, error.message || String(text));
    failure.leader = typeof error.leader === 'string' ? error.leader.replace(/\/+$/, '') : null;
    throw failure;
  }
  return data;
}

/**
 * One request; the parsed JSON answer (null for 204). Error answers throw ApiError. Reads go to
 * this server; a write this server refuses as a follower (503 `not_leader`) is sent to the leader
 * it names, and so are the writes after it (the leader must allow this page's origin,
 * `--cors-origins`).
 */
export async function api(method, path, body) {
  const base = method === 'GET' ? '' : writeBase;
  try {
    return await send(base, method, path, body);
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== 'not_leader' || !e.leader || e.leader === base) throw e;
    writeBase = e.leader;
    try {
      return await send(writeBase, method, path, body);
    } catch (again) {
      if (again.code === 'unreachable') {
        throw new ApiError(503, 'not_leader',
          `this server is a follower, and its leader (${writeBase}) did not take the change from this page ` +
          `(is this page's origin in the leader's --cors-origins?): make it on the leader's console`);
      }
      throw again;
    }
  }
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);

/** Every item of a paginated list (`{items, next_cursor}`), up to `max` items. */
export async function all(path, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    if (Array.isArray(page)) return page.slice(0, max);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items.slice(0, max);
}
