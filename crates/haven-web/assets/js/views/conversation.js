// The open conversation: header and patient banner, the message log (real time, "load
// earlier" paging), and the composer (priority, attachments).

import { html, useEffect, useLayoutEffect, useRef, useState } from '../lib.js';
import { S, can, useStore, toast } from '../store.js';
import {
  openConversation, loadEarlier, sendMessage, conversationName, markSeen, addMember, leaveConversation, searchDirectory,
  messagePatient,
} from '../messaging.js';
import { birthDate, dayLabel, size, PRIORITY_LABEL } from '../format.js';
import { Confirm, Dialog, FormError, Spinner } from './common.js';
import { Message, PatientMessage } from './message.js';

/** What happened, for the system lines between messages. */
function systemLine(ev) {
  const who = (id) => (id === S.me.id ? 'You' : S.names.get(id) || 'A former member');
  switch (ev.type) {
    case 'created':
      return `${who(ev.actor_id)} started the conversation`;
    case 'member_added':
      return `${who(ev.actor_id)} added ${ev.subject_id === S.me.id ? 'you' : who(ev.subject_id)}`;
    case 'member_removed':
      return `${who(ev.actor_id)} removed ${ev.subject_id === S.me.id ? 'you' : who(ev.subject_id)}`;
    case 'member_left':
      return `${who(ev.subject_id)} left`;
    default:
      return null;
  }
}

/** The log's rows: day separators, system lines, and each message at its first place, as it is now. */
function rows(events) {
  const latest = new Map();
  for (const ev of events) if (ev.message) latest.set(ev.message.id, ev.message);
  const out = [];
  let day = null;
  for (const ev of events) {
    const d = dayLabel(ev.at);
    if (ev.type !== 'message' && ev.type !== 'patient_message' && !systemLine(ev)) continue;
    if (d !== day) {
      out.push({ key: 'day-' + ev.seq, day: d });
      day = d;
    }
    if (ev.type === 'message') out.push({ key: ev.message.id, msg: latest.get(ev.message.id) });
    else if (ev.type === 'patient_message') out.push({ key: ev.patient_message.id, patient: ev });
    else out.push({ key: 'sys-' + ev.seq, system: systemLine(ev) });
  }
  return out;
}

function PatientBanner({ p }) {
  return html`<div class="patient-banner" role="region" aria-label="Patient">
    <strong>${p.name}</strong><span>MRN ${p.mrn}</span><span>Born ${birthDate(p.date_of_birth)}</span>
  </div>`;
}

function Members({ detail, onClose }) {
  const [adding, setAdding] = useState(false);
  const [leaving, setLeaving] = useState(false);
  const [q, setQ] = useState('');
  const [found, setFound] = useState([]);
  const [error, setError] = useState(null);
  const current = (detail.members || []).filter((m) => m.is_member);
  useEffect(() => {
    if (!adding) return undefined;
    const t = setTimeout(() => searchDirectory(q).then((u) => setFound(u.filter((x) => !current.some((m) => m.user_id === x.id))), setError), 200);
    return () => clearTimeout(t);
  }, [q, adding]);
  return html`<${Dialog} title="Members" onClose=${onClose}>
    <ul class="member-list">${current.map((m) => html`<li>${m.display_name}${m.user_id === S.me.id ? ' (you)' : ''}</li>`)}</ul>
    ${detail.is_member && detail.kind !== 'direct'
      ? adding
        ? html`<div class="field"><label for="add-q">Add a colleague</label>
            <input id="add-q" type="search" value=${q} onInput=${(e) => setQ(e.target.value)} autocomplete="off" /></div>
            <ul class="directory">${found.map((u) => html`<li><button type="button" class="pick" onClick=${async () => {
              try { await addMember(detail.id, u.id); toast(`${u.display_name} was added.`); onClose(); } catch (err) { setError(err); }
            }}>${u.display_name}</button></li>`)}</ul>`
        : html`<button type="button" class="secondary" onClick=${() => setAdding(true)}>Add a member</button>`
      : null}
    <${FormError} error=${error} />
    ${detail.is_member && detail.kind !== 'direct'
      ? html`<p><button type="button" class="link danger-text" onClick=${() => setLeaving(true)}>Leave this conversation</button></p>`
      : null}
    ${leaving
      ? html`<${Confirm} title="Leave this conversation?" text="You will keep what you could see until now, and see nothing after." action="Leave"
          onConfirm=${async () => { await leaveConversation(detail.id); onClose(); }} onClose=${() => setLeaving(false)} />`
      : null}
  <//>`;
}

function Composer({ id, disabled, patient }) {
  const [text, setText] = useState('');
  const [toPatient, setToPatient] = useState(false);
  const [priority, setPriority] = useState('routine');
  const [files, setFiles] = useState([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const fileInput = useRef(null);
  const area = useRef(null);
  const limit = S.org?.policy?.max_attachment_bytes ?? 0;
  const send = async (e) => {
    if (e) e.preventDefault();
    if (busy || (!text.trim() && files.length === 0)) return;
    const big = files.find((f) => f.size > limit);
    if (big) {
      setError(new Error(`${big.name} is larger than your organisation allows (${size(limit)}).`));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      if (toPatient) {
        const at = await messagePatient(id, text, priority !== 'routine');
        toast(`Sent to ${patient.name}. The text with the secure link goes out ${new Date(at) > new Date() ? 'at ' + new Date(at).toLocaleString() + ' (quiet hours or limits)' : 'now'}.`);
      } else {
        await sendMessage(id, text, priority, files);
      }
      setText('');
      setFiles([]);
      setPriority('routine');
      if (area.current) area.current.focus();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const key = (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) send(e);
  };
  if (disabled) return html`<p class="composer-closed">You are no longer a member of this conversation: you can read what was said while you were.</p>`;
  return html`<form class="composer" onSubmit=${send}>
    ${files.length
      ? html`<ul class="chips" aria-label="Files to send">${files.map(
          (f, i) => html`<li class="chip">${f.name} (${size(f.size)})<button type="button" class="icon-button" aria-label=${'Remove ' + f.name} onClick=${() => setFiles(files.filter((_, j) => j !== i))}>×</button></li>`,
        )}</ul>`
      : null}
    <${FormError} error=${error} />
    ${patient && can('patient_messaging')
      ? html`<label class="check to-patient"><input type="checkbox" checked=${toPatient} onChange=${(e) => { setToPatient(e.target.checked); setFiles([]); }} />
          Send to the patient, ${patient.name} (they read it on a secure page; the text carries only a link)</label>`
      : null}
    <div class="composer-row">
      <label class="sr-only" for="composer-text">Message</label>
      <textarea id="composer-text" ref=${area} rows="2" placeholder="Write a message… (Enter sends, Shift+Enter for a new line)"
        value=${text} onInput=${(e) => setText(e.target.value)} onKeyDown=${key}></textarea>
      <div class="composer-tools">
        <label class="sr-only" for="composer-priority">Priority</label>
        <select id="composer-priority" value=${priority} onChange=${(e) => setPriority(e.target.value)}>
          ${Object.entries(PRIORITY_LABEL).map(([v, l]) => html`<option value=${v}>${l}</option>`)}
        </select>
        ${limit > 0 && !toPatient
          ? html`<input ref=${fileInput} type="file" multiple class="hidden-file" tabindex="-1" aria-hidden="true"
              onChange=${(e) => { setFiles([...files, ...e.target.files]); e.target.value = ''; }} />
            <button type="button" class="secondary" onClick=${() => fileInput.current.click()}>Attach</button>`
          : null}
        <button class="primary" disabled=${busy || (!text.trim() && files.length === 0)}>${busy ? 'Sending…' : 'Send'}</button>
      </div>
    </div>
  </form>`;
}

export function Conversation({ id }) {
  const s = useStore();
  const log = useRef(null);
  const nearBottom = useRef(true);
  const [members, setMembers] = useState(false);
  useEffect(() => {
    openConversation(id);
  }, [id]);
  const o = s.open && s.open.id === id ? s.open : null;
  const events = o ? o.events : [];
  const lastSeq = events.length ? events[events.length - 1].seq : 0;
  useLayoutEffect(() => {
    const el = log.current;
    if (el && nearBottom.current) el.scrollTop = el.scrollHeight;
  }, [lastSeq, o && o.loading]);
  useEffect(() => {
    const onFocus = () => markSeen();
    addEventListener('focus', onFocus);
    return () => removeEventListener('focus', onFocus);
  }, []);
  if (!o || (o.loading && !o.detail)) return html`<main id="main" tabindex="-1" class="conv-pane"><${Spinner} label="Opening the conversation…" /></main>`;
  if (o.error) {
    return html`<main id="main" tabindex="-1" class="conv-pane"><p class="form-error" role="alert">${o.error}</p><a href="#/messages">Back to conversations</a></main>`;
  }
  const d = o.detail;
  const name = conversationName(d);
  const current = (d.members || []).filter((m) => m.is_member);
  const onScroll = (e) => {
    const el = e.currentTarget;
    nearBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  };
  return html`<main id="main" tabindex="-1" class="conv-pane" aria-labelledby="conv-title">
    <div class="conv-head">
      <a href="#/messages" class="back" aria-label="Back to conversations">‹</a>
      <div class="conv-title">
        <h2 id="conv-title">${name}</h2>
        <button type="button" class="link small" onClick=${() => setMembers(true)}>${current.length} member${current.length === 1 ? '' : 's'}</button>
      </div>
    </div>
    ${d.patient ? html`<${PatientBanner} p=${d.patient} />` : null}
    <div class="log-wrap" ref=${log} onScroll=${onScroll}>
      ${o.hasEarlier
        ? html`<p class="earlier"><button type="button" class="secondary" disabled=${o.loadingEarlier} onClick=${() => { nearBottom.current = false; loadEarlier(); }}>
            ${o.loadingEarlier ? 'Loading…' : 'Load earlier messages'}</button></p>`
        : null}
      <div role="log" aria-live="polite" aria-label=${'Messages in ' + name}><ol class="log">
        ${rows(events).map((r) =>
          r.day
            ? html`<li key=${r.key} class="day"><span>${r.day}</span></li>`
            : r.system
              ? html`<li key=${r.key} class="system">${r.system}</li>`
              : r.patient
                ? html`<${PatientMessage} key=${r.key} ev=${r.patient} patient=${d.patient} />`
              : html`<${Message} key=${r.key} convId=${id} msg=${r.msg} members=${d.members} canAct=${d.is_member} />`,
        )}
      </ol></div>
    </div>
    <${Composer} id=${id} disabled=${!d.is_member || !can('messaging_use')} patient=${d.patient} />
    ${members ? html`<${Members} detail=${d} onClose=${() => setMembers(false)} />` : null}
  </main>`;
}

