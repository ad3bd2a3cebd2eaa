// The HTTP API: same-origin fetches with the session cookie. Errors are RFC 9457 problem
// documents; they become ApiError with the server's stable `code` and its readable `detail`.

/** An error answer from the server (or the network). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || `http_${status}`;
    this.field = problem.field || null;
    this.retryAfter = problem.retryAfter || null;
  }
}

let sessionEnded = () => {};

/** Called when the server says the session is gone (signed out elsewhere, timed out, disabled). */
export function onSessionEnded(handler) {
  sessionEnded = handler;
}

/**
 * Calls the API. `background: true` marks a request the client makes by itself (not for the
 * user): it does not count as activity for the inactivity timeout.
 */
export async function api(method, path, { body, headers = {}, background = false, raw = false } = {}) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: { ...headers } };
  if (background) init.headers['x-haven-background'] = '1';
  if (body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: 'network', detail: 'The server cannot be reached. Check the network connection and try again.' });
  }
  if (resp.ok) {
    if (raw) return resp;
    if (resp.status === 204) return null;
    return resp.json();
  }
  let problem;
  try {
    problem = await resp.json();
  } catch {
    problem = { code: `http_${resp.status}`, detail: `The server answered with status ${resp.status}.` };
  }
  problem.retryAfter = Number(resp.headers.get('retry-after')) || null;
  const err = new ApiError(resp.status, problem);
  if (resp.status === 401 && (err.code === 'unauthenticated' || err.code === 'session_expired')) {
    sessionEnded(err.code);
  }
  throw err;
}

export const get = (path, opts) => api('GET', path, opts);
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });
export const put = (path, body, opts = {}) => api('PUT', path, { ...opts, body });
export const del = (path, opts) => api('DELETE', path, opts);

/**
 * An idempotency key that grows with time, as a UUIDv7 does: the millisecond (48 bits, hex),
 * then 80 random bits. The server stores such keys at the end of its key index, the cheapest
 * place; the random part keeps two keys of one millisecond apart.
 */
export function newKey() {
  const time = Date.now().toString(16).padStart(12, '0');
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return time + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
