// Conversations and messages: the list, the open conversation, live events and receipts,
// sending, editing, recalling, attachments. Everything the user sees comes from the server's
// answers and the socket's events; positions per conversation make resuming exact.

import { api, get, post, put, del, newKey } from './api.js';
import { Realtime } from './realtime.js';
import { S, update, toast, errorText } from './store.js';
import { onSignOut, wipe } from './session.js';

const PAGE = 50;
let rt = null;

/** The last sequence number processed per conversation (what the socket resumes from). */
const positions = new Map();

function remember(c) {
  S.convs.set(c.id, c);
  positions.set(c.id, Math.max(positions.get(c.id) || 0, c.last_seq));
  for (const m of c.members || []) S.names.set(m.user_id, m.display_name);
}

/** Loads the conversation list (every page) and connects the socket. */
export async function startMessaging() {
  await refreshList(false);
  rt = new Realtime({
    positions: () => Object.fromEntries(positions),
    event: onEvent,
    receipt: onReceipt,
    ready: () => {
      // Conversations started while the socket was down are not in the resume: list again.
      if (S.convsLoaded) refreshList(true).catch(() => {});
    },
    status: (conn) => update((s) => (s.conn = conn)),
    ended: () => wipe('ended'),
  });
  rt.start();
  onSignOut(() => rt && rt.stop());
}

async function refreshList(background) {
  let before = null;
  const seen = [];
  do {
    const q = new URLSearchParams({ limit: '100' });
    if (before) q.set('before', before);
    const page = await get(`/api/v1/conversations?${q}`, { background });
    seen.push(...page.conversations);
    before = page.next_before || null;
  } while (before);
  update((s) => {
    for (const c of seen) remember(c);
    s.convsLoaded = true;
  });
}

/** The list, most recent activity first. */
export function sortedConversations() {
  return [...S.convs.values()].sort((a, b) => (a.last_activity_at < b.last_activity_at ? 1 : -1));
}

/** What to call a conversation: its title, its patient, or its other members. */
export function conversationName(c) {
  if (c.title) return c.title;
  if (c.patient) return c.patient.name;
  const others = (c.members || []).filter((m) => m.user_id !== S.me?.id && m.is_member);
  if (others.length === 0) return c.kind === 'direct' ? 'Direct message' : 'Just you';
  const names = others.map((m) => m.display_name);
  return names.length <= 3 ? names.join(', ') : `${names.slice(0, 3).join(', ')} and ${names.length - 3} more`;
}

/** Opens a conversation: its members, banner and newest page of history. */
export async function openConversation(id) {
  if (S.open && S.open.id === id) return;
  update((s) => (s.open = { id, detail: s.convs.get(id) || null, events: [], loading: true, hasEarlier: false }));
  try {
    const detail = await get(`/api/v1/conversations/${id}`);
    const page = await get(`/api/v1/conversations/${id}/events?before=${detail.last_seq + 1}&limit=${PAGE}`);
    if (!S.open || S.open.id !== id) return;
    update((s) => {
      remember(detail);
      s.open.detail = detail;
      s.open.events = mergeEvents(s.open.events, page.events);
      s.open.hasEarlier = page.events.length > 0 && page.events[0].seq > detail.joined_seq;
      s.open.loading = false;
    });
    markSeen();
  } catch (err) {
    if (!S.open || S.open.id !== id) return;
    update((s) => {
      s.open.loading = false;
      s.open.error = err.status === 404 ? 'This conversation does not exist or you are not a member.' : errorText(err);
    });
  }
}

/** "Load earlier": the page before the oldest shown. */
export async function loadEarlier() {
  const o = S.open;
  if (!o || o.loadingEarlier || o.events.length === 0) return;
  update(() => (o.loadingEarlier = true));
  try {
    const page = await get(`/api/v1/conversations/${o.id}/events?before=${o.events[0].seq}&limit=${PAGE}`);
    update(() => {
      o.events = mergeEvents(o.events, page.events);
      o.hasEarlier = page.events.length === PAGE;
    });
  } catch (err) {
    toast(errorText(err), 'error');
  } finally {
    update(() => (o.loadingEarlier = false));
  }
}

function mergeEvents(have, more) {
  const bySeq = new Map(have.map((e) => [e.seq, e]));
  for (const e of more) bySeq.set(e.seq, e);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/** Shows an event the server answered with (a send, an edit, a recall) before the socket
 * brings it; only the socket's in-order stream moves the resume positions. */
function showAnswer(ev) {
  const id = ev.conversation_id;
  update((s) => {
    const c = s.convs.get(id);
    if (c) {
      c.last_seq = Math.max(c.last_seq, ev.seq);
      c.last_activity_at = ev.at > c.last_activity_at ? ev.at : c.last_activity_at;
      c.read_seq = Math.max(c.read_seq, ev.seq);
    }
    if (s.open && s.open.id === id && !s.open.loading) s.open.events = mergeEvents(s.open.events, [ev]);
  });
}

function onEvent(ev) {
  const id = ev.conversation_id;
  const known = S.convs.get(id);
  if (!known) {
    // A conversation this user was just added to: fetch its summary.
    positions.set(id, ev.seq);
    get(`/api/v1/conversations/${id}`, { background: true })
      .then((c) => update(() => remember(c)))
      .catch(() => {});
    return;
  }
  if (ev.seq <= (positions.get(id) || 0)) {
      return;
  }
  positions.set(id, ev.seq);
  update((s) => {
    known.last_seq = Math.max(known.last_seq, ev.seq);
    known.last_activity_at = ev.at;
    const mine = ev.actor_id === s.me.id;
    if ((ev.type === 'message' || ev.type === 'patient_message') && !mine && ev.seq > known.read_seq) {
      known.unread += 1;
      if (ev.message) known.newest_unread_priority = ev.message.priority;
    }
    if (ev.type === 'message' && mine) {
      known.read_seq = Math.max(known.read_seq, ev.seq);
      known.delivered_seq = Math.max(known.delivered_seq, ev.seq);
      const me = (known.members || []).find((m) => m.user_id === s.me.id);
      if (me) me.read_seq = Math.max(me.read_seq, ev.seq);
    }
    if ((ev.type === 'member_removed' || ev.type === 'member_left') && ev.subject_id === s.me.id) {
      known.is_member = false;
    }
    if (ev.type === 'member_added' || ev.type === 'member_removed' || ev.type === 'member_left') {
      refreshMembers(id);
    }
    if (s.open && s.open.id === id && !s.open.loading) {
      s.open.events = mergeEvents(s.open.events, [ev]);
      if (ev.type === 'member_removed' && ev.subject_id === s.me.id && s.open.detail) s.open.detail.is_member = false;
    }
  });
  if ((ev.type === 'message' || ev.type === 'patient_message') && ev.actor_id !== S.me.id) rt.receipt(id, ev.seq, 0);
  if (S.open && S.open.id === id) markSeen();
}

function refreshMembers(id) {
  get(`/api/v1/conversations/${id}`, { background: true })
    .then((c) =>
      update((s) => {
        remember(c);
        if (s.open && s.open.id === id) s.open.detail = c;
      }),
    )
    .catch(() => {});
}

function onReceipt(r) {
  update((s) => {
    const lists = [s.convs.get(r.conversation_id)?.members, s.open?.id === r.conversation_id ? s.open.detail?.members : null];
    for (const members of lists) {
      const m = (members || []).find((x) => x.user_id === r.user_id);
      if (m) {
        m.delivered_seq = Math.max(m.delivered_seq, r.delivered_seq);
        m.read_seq = Math.max(m.read_seq, r.read_seq);
      }
    }
    const c = s.convs.get(r.conversation_id);
    if (c && r.user_id === s.me.id) {
      c.read_seq = Math.max(c.read_seq, r.read_seq);
      if (c.read_seq >= c.last_seq) {
        c.unread = 0;
        c.newest_unread_priority = undefined;
      }
    }
  });
}

/** Marks the open conversation read, if the user can see it. */
export function markSeen() {
  const o = S.open;
  if (!o || !o.detail || !rt || document.visibilityState !== 'visible') return;
  const c = S.convs.get(o.id);
  const last = Math.max(o.detail.last_seq, c ? c.last_seq : 0);
  if (c && c.read_seq >= last) return;
  rt.receipt(o.id, last, last);
  update(() => {
    if (c) {
      c.read_seq = last;
      c.unread = 0;
      c.newest_unread_priority = undefined;
    }
  });
}

document.addEventListener('visibilitychange', () => markSeen());

/** Uploads files, then sends the message naming them. */
export async function sendMessage(id, body, priority, files) {
  const attachments = [];
  for (const f of files) {
    const uploaded = await api('POST', `/api/v1/conversations/${id}/attachments`, {
      body: f,
      headers: { 'x-file-name': encodeURIComponent(f.name), 'content-type': 'application/octet-stream' },
    });
    attachments.push(uploaded.id);
  }
  const key = newKey();
  const req = { idempotency_key: key, body, priority };
  if (attachments.length) req.attachments = attachments;
  // A network failure is retried once with the same key: the server stores it at most once.
  let ev;
  try {
    ev = await post(`/api/v1/conversations/${id}/messages`, req);
  } catch (err) {
    if (err.code !== 'network') throw err;
    ev = await post(`/api/v1/conversations/${id}/messages`, req);
  }
  showAnswer(ev);
  return ev;
}

/** Edits the user's own message (a new version). */
export async function editMessage(convId, messageId, body) {
  const ev = await put(`/api/v1/conversations/${convId}/messages/${messageId}`, { body });
  showAnswer(ev);
}

/** Recalls the user's own message (its content is destroyed for everyone). */
export async function recallMessage(convId, messageId) {
  const ev = await del(`/api/v1/conversations/${convId}/messages/${messageId}`);
  showAnswer(ev);
}

/** Every version of an edited message. */
export function messageVersions(convId, messageId) {
  return get(`/api/v1/conversations/${convId}/messages/${messageId}/versions`);
}

/** Starts a conversation; returns its id. */
export async function startConversation({ kind, members, title, patientId }) {
  const body = { kind, members };
  if (title) body.title = title;
  if (patientId) body.patient_id = patientId;
  const c = await post('/api/v1/conversations', body);
  update(() => remember(c));
  return c.id;
}

/** Searches the directory (active users, not the caller). */
export async function searchDirectory(q) {
  const params = new URLSearchParams({ limit: '20' });
  if (q.trim()) params.set('q', q.trim());
  const page = await get(`/api/v1/users?${params}`);
  return page.users.filter((u) => u.status === 'active' && u.id !== S.me.id);
}

/** Finds a patient by MRN (sent in the body, never in the URL). */
export function findPatient(mrn) {
  return post('/api/v1/patients/lookup', { mrn: mrn.trim() });
}

/** Registers a patient. */
export function registerPatient(details) {
  return post('/api/v1/patients', details);
}

/** Adds a member to a group or patient conversation. */
export async function addMember(convId, userId) {
  await post(`/api/v1/conversations/${convId}/members`, { user_id: userId });
  refreshMembers(convId);
}

/** Leaves a conversation. */
export async function leaveConversation(convId) {
  await del(`/api/v1/conversations/${convId}/members/${S.me.id}`);
}

/**
 * Writes to the patient of a patient conversation: the message is kept for the secure page and
 * a text without PHI tells the patient it is waiting. Returns when the text goes out.
 */
export async function messagePatient(id, body, urgent) {
  const text = await post(`/api/v1/conversations/${id}/patient-texts`, { purpose: 'care', urgent, body });
  return text.not_before;
}
