// Signing in and out, and automatic logoff.
//
// Inactivity: the user's own input (keys, pointer, touch, wheel) is activity, in any open Haven
// tab (tabs tell each other over a BroadcastChannel, carrying no data). While the user is active
// the client tells the server at most every 10 seconds (`GET /api/v1/me`); everything the client
// does by itself is marked as background and does not count. The client's deadline is computed
// from its last report to the server, a little earlier than the server's own, so the client is
// always the first to act: it warns a minute before, then signs out and wipes the page. If the
// tab was asleep, the server has ended the session anyway and the socket's close says so.

import { api, get, post, onSessionEnded } from './api.js';
import { S, update, objectUrls } from './store.js';

/** Seconds of warning before the automatic sign-out (a third of short timeouts). */
const WARNING = 60;
/** How often activity is reported to the server, at most (ms). */
const REPORT_EVERY = 10_000;
/** The server updates its record of activity at this granularity (ms). */
const SERVER_GRANULARITY = 5_000;

const channel = 'BroadcastChannel' in globalThis ? new BroadcastChannel('haven-session') : null;
let idleTimer = null;
let lastReport = 0;
let reporting = false;
let stopHooks = [];

let enterHooks = [];

/** Runs `fn` when the session ends (stop sockets, timers). */
export function onSignOut(fn) {
  stopHooks.push(fn);
}

/** Runs `fn` once the user is fully signed in (load data, connect). */
export function onEnter(fn) {
  enterHooks.push(fn);
}

/** Where to go after signing in: the app, or the next sign-in step. */
async function enter() {
  const me = await get('/api/v1/me');
  const org = await get('/api/v1/organization', { background: true });
  update((s) => {
    s.me = me;
    s.org = org;
    s.phase = 'app';
    s.notice = null;
    s.names.set(me.id, me.display_name);
  });
  lastReport = Date.now();
  startIdleWatch();
  for (const hook of enterHooks) hook();
  enterHooks = [];
}

/** First load: is there a session, and in which state? */
export async function boot() {
  const notice = new URLSearchParams(location.search).get('signed-out');
  if (notice) history.replaceState(null, '', '/' + location.hash);
  update((s) => (s.notice = notice ? noticeText(notice) : null));
  try {
    await enter();
  } catch (err) {
    const phase = { mfa_required: 'mfa', mfa_enrollment_required: 'enrol' }[err.code] || 'signin';
    update((s) => (s.phase = phase));
  }
}

function noticeText(reason) {
  return (
    {
      inactivity: 'You were signed out after a period of inactivity. Everything shown was cleared from this browser.',
      ended: 'Your session has ended (signed out elsewhere, expired, or your access changed). Please sign in again.',
      manual: 'You have signed out. Everything shown was cleared from this browser.',
    }[reason] || 'Please sign in.'
  );
}

/** Step 1: username and password. */
export async function signIn(username, password) {
  const session = await post('/api/v1/auth/login', { username, password });
  return afterStep(session.state);
}

/** Step 2: a TOTP code or a recovery code. */
export async function verifyCode(code) {
  const session = await post('/api/v1/auth/mfa/verify', { code: code.trim() });
  return afterStep(session.state);
}

/** Enrolment: the secret, its otpauth URI and the QR code (SVG). */
export function startEnrolment() {
  return post('/api/v1/auth/mfa/totp/enroll');
}

/** Enrolment: the first code; the recovery codes are then shown once. */
export async function confirmEnrolment(code) {
  const done = await post('/api/v1/auth/mfa/totp/confirm', { code: code.trim() });
  update((s) => {
    s.recoveryCodes = done.recovery_codes;
    s.phase = 'recovery';
  });
}

/** After the recovery codes were saved. */
export function finishEnrolment() {
  return enter();
}

async function afterStep(state) {
  if (state === 'active') return enter();
  update((s) => (s.phase = state === 'mfa_required' ? 'mfa' : 'enrol'));
}

let signingOut = false;

/** Signs out by hand, or because of inactivity. */
export async function signOut(reason = 'manual') {
  if (signingOut) return;
  signingOut = true;
  try {
    await post('/api/v1/auth/logout', undefined, { background: true });
  } catch {
    // The session may already be gone; the page is wiped either way.
  }
  wipe(reason);
}

/**
 * Wipes everything this page knows and leaves it: the DOM is emptied at once, previews are
 * revoked, browser storage is cleared, other tabs are told, and the page is reloaded so that
 * nothing survives in memory.
 */
export function wipe(reason) {
  for (const hook of stopHooks) {
    try {
      hook();
    } catch {
      // Keep wiping.
    }
  }
  stopHooks = [];
  clearInterval(idleTimer);
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls.clear();
  S.convs.clear();
  S.open = null;
  S.me = null;
  const root = document.getElementById('root');
  if (root) root.replaceChildren();
  try {
    sessionStorage.clear();
    localStorage.clear();
  } catch {
    // Storage may be disabled; there is nothing in it then.
  }
  if (channel) channel.postMessage({ type: 'signed-out', reason });
  location.replace('/?signed-out=' + encodeURIComponent(reason));
}

onSessionEnded(() => {
  if (S.phase === 'app') wipe('ended');
});

if (channel) {
  channel.onmessage = (e) => {
    if (!e.data || typeof e.data !== 'object') return;
    if (e.data.type === 'activity') lastActivity = Math.max(lastActivity, Date.now());
    if (e.data.type === 'reported') lastReport = Math.max(lastReport, Date.now());
    if (e.data.type === 'signed-out' && S.phase === 'app') wipe(e.data.reason === 'inactivity' ? 'inactivity' : 'manual');
  };
}

let lastActivity = Date.now();
let lastShared = 0;

function activity() {
  const now = Date.now();
  lastActivity = now;
  if (channel && now - lastShared > 2000) {
    lastShared = now;
    channel.postMessage({ type: 'activity' });
  }
  if (S.idleLeft !== null) update((s) => (s.idleLeft = null));
  if (now - lastReport >= REPORT_EVERY) report();
}

/** Tells the server the user is active (and learns the current timeout). */
async function report() {
  if (reporting || S.phase !== 'app') return;
  reporting = true;
  const sent = Date.now();
  try {
    const me = await get('/api/v1/me');
    lastReport = sent;
    if (channel) channel.postMessage({ type: 'reported' });
    if (me.inactivity_timeout_seconds !== S.me?.inactivity_timeout_seconds) {
      update((s) => (s.me = me));
    }
  } catch {
    // A network error is the socket's business; a 401 wipes the page through onSessionEnded.
  } finally {
    reporting = false;
  }
}

/** Seconds until the automatic sign-out. */
function secondsLeft() {
  const timeout = (S.me?.inactivity_timeout_seconds || 900) * 1000;
  return (lastReport + timeout - SERVER_GRANULARITY - Date.now()) / 1000;
}

function startIdleWatch() {
  for (const type of ['keydown', 'pointerdown', 'wheel', 'touchstart']) {
    addEventListener(type, activity, { capture: true, passive: true });
  }
  let lastMove = 0;
  addEventListener(
    'pointermove',
    () => {
      const now = Date.now();
      if (now - lastMove > 1000) {
        lastMove = now;
        activity();
      }
    },
    { capture: true, passive: true },
  );
  clearInterval(idleTimer);
  idleTimer = setInterval(() => {
    if (S.phase !== 'app') return;
    // Activity since the last report that was not reported yet (a report was in flight).
    if (lastActivity > lastReport && Date.now() - lastReport >= REPORT_EVERY) report();
    const left = secondsLeft();
    if (left <= 0) {
      signOut('inactivity');
    } else if (left <= Math.min(WARNING, (S.me?.inactivity_timeout_seconds || 900) / 3)) {
      const shown = Math.ceil(left);
      if (S.idleLeft !== shown) update((s) => (s.idleLeft = shown));
    } else if (S.idleLeft !== null) {
      update((s) => (s.idleLeft = null));
    }
  }, 1000);
}

/** "Stay signed in" on the warning. */
export function stayActive() {
  activity();
  report();
}

/** Ends every session of the user (all devices). */
export async function signOutEverywhere() {
  try {
    await api('POST', '/api/v1/auth/logout-all');
  } catch {
    // Wiped either way.
  }
  wipe('manual');
}
