// The client's state: one object, changed only through `update`, which re-renders the app.
// Nothing here is ever written to browser storage: PHI lives in this page's memory only, and
// signing out (by hand, on inactivity, or because the server ended the session) wipes it by
// leaving the page.

import { useLayoutEffect, useState } from './lib.js';

export const S = {
  /** boot | signin | mfa | enrol | recovery | app */
  phase: 'boot',
  /** A message for the sign-in screen (why the last session ended). */
  notice: null,
  /** Recovery codes just issued, shown once. */
  recoveryCodes: null,
  /** The signed-in user (`GET /api/v1/me`). */
  me: null,
  /** The organisation and its policy. */
  org: null,
  /** Where the user is: { view: 'messages' | 'users' | 'policy' | 'audit', id } (from the URL hash). */
  route: { view: 'messages', id: null },
  /** Conversation summaries by id (the list). */
  convs: new Map(),
  /** Whether the list has loaded. */
  convsLoaded: false,
  /** The open conversation: { id, detail, events, hasEarlier, loadingEarlier, error }. */
  open: null,
  /** Display names of users met so far, by id. */
  names: new Map(),
  /** The real-time connection: connecting | live | reconnecting | offline. */
  conn: 'connecting',
  /** Seconds left before automatic sign-out, while the warning shows. */
  idleLeft: null,
  /** A short message for the user: { text, kind: 'info' | 'error' }. */
  toast: null,
};

const listeners = new Set();
let scheduled = false;
/** Moves on every change, so a component can tell whether it missed one before subscribing. */
let version = 0;

/** Changes the state and re-renders (once per frame, however many changes). */
export function update(change) {
  if (change) change(S);
  version += 1;
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => {
    scheduled = false;
    for (const l of listeners) l();
  });
}

/**
 * Re-renders the calling component whenever the state changes. It subscribes in a layout
 * effect (at once, not after the next paint, which a background tab may never have) and
 * re-renders if the state changed between its render and its subscription: a first answer
 * from the server must not be lost.
 */
export function useStore() {
  const [, tick] = useState(0);
  const rendered = version;
  useLayoutEffect(() => {
    const l = () => tick((n) => n + 1);
    listeners.add(l);
    if (version !== rendered) l();
    return () => listeners.delete(l);
  }, []);
  return S;
}

let toastTimer = null;

/** Shows a short message. */
export function toast(text, kind = 'info') {
  clearTimeout(toastTimer);
  update((s) => {
    s.toast = { text, kind };
  });
  toastTimer = setTimeout(() => update((s) => (s.toast = null)), kind === 'error' ? 8000 : 4000);
}

/** Whether the signed-in user has a permission (the server checks anyway). */
export function can(permission) {
  return Boolean(S.me && S.me.permissions.includes(permission));
}

/** Object URLs made for previews; revoked when the page is wiped. */
export const objectUrls = new Set();

/** The readable text of an error. */
export function errorText(err) {
  const text = (err && err.message) || 'Something went wrong.';
  return text.charAt(0).toUpperCase() + text.slice(1);
}
