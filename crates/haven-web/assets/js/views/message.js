// One message: sender, time, priority, text (always as text), attachments with image
// previews, the edited mark with its versions, recall, and for one's own messages who has it
// and who has read it.

import { html, useEffect, useRef, useState } from '../lib.js';
import { S, objectUrls, toast, errorText } from '../store.js';
import { api } from '../api.js';
import { editMessage, recallMessage, messageVersions } from '../messaging.js';
import { clock, fullTime, size, PRIORITY_LABEL } from '../format.js';
import { Confirm, Dialog, FormError, Spinner } from './common.js';

/** An image attachment, fetched with the session and shown from memory (never cached). */
function ImagePreview({ a }) {
  const [url, setUrl] = useState(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let made = null;
    let stale = false;
    api('GET', `/api/v1/attachments/${a.id}`, { raw: true, background: true })
      .then((r) => r.blob())
      .then((blob) => {
        if (stale) return;
        made = URL.createObjectURL(blob);
        objectUrls.add(made);
        setUrl(made);
      })
      .catch(() => !stale && setFailed(true));
    return () => {
      stale = true;
      if (made) {
        URL.revokeObjectURL(made);
        objectUrls.delete(made);
      }
    };
  }, [a.id]);
  if (failed) return null;
  return url ? html`<img class="preview" src=${url} alt=${'Image: ' + (a.name || 'attachment')} />` : html`<span class="preview loading" aria-hidden="true"></span>`;
}

function Attachment({ a }) {
  const image = a.media_type.startsWith('image/') && a.media_type !== 'image/heic';
  return html`<div class="attachment">
    ${image ? html`<${ImagePreview} a=${a} />` : null}
    <a href=${'/api/v1/attachments/' + a.id} download=${a.name || 'attachment'} class="file">
      <span aria-hidden="true">📎</span> ${a.name || 'attachment'} <span class="muted">(${size(a.size)})</span>
    </a>
  </div>`;
}

/** Delivered/read state of one's own message, with the names behind it. */
function Receipts({ seq, members }) {
  const others = (members || []).filter((m) => m.user_id !== S.me.id && m.is_member);
  if (others.length === 0) return null;
  const read = others.filter((m) => m.read_seq >= seq);
  const delivered = others.filter((m) => m.delivered_seq >= seq);
  let text;
  if (read.length === others.length) text = others.length === 1 ? 'Read' : 'Read by all';
  else if (read.length > 0) text = `Read by ${read.length} of ${others.length}`;
  else if (delivered.length === others.length) text = 'Delivered';
  else if (delivered.length > 0) text = `Delivered to ${delivered.length} of ${others.length}`;
  else text = 'Sent';
  return html`<details class="receipts" data-testid="receipts">
    <summary>${text}</summary>
    <ul aria-label="Who has this message">
      ${others.map((m) => html`<li>${m.display_name}: <span class=${m.read_seq >= seq ? 'ok' : ''}>${m.read_seq >= seq ? 'read' : m.delivered_seq >= seq ? 'delivered' : 'not delivered yet'}</span></li>`)}
    </ul>
  </details>`;
}

function Versions({ convId, msg, onClose }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    messageVersions(convId, msg.id).then((v) => setList(v.versions), setError);
  }, []);
  return html`<${Dialog} title="Edit history" onClose=${onClose}>
    <${FormError} error=${error} />
    ${list
      ? html`<ol class="versions">${list.map((v) => html`<li><p class="muted">Version ${v.version} · ${fullTime(v.at)}</p><p class="text">${v.body}</p></li>`)}</ol>`
      : error ? null : html`<${Spinner} />`}
  <//>`;
}

function Editor({ convId, msg, onDone }) {
  const [text, setText] = useState(msg.body || '');
  const area = useRef(null);
  useEffect(() => area.current && area.current.focus(), []);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      await editMessage(convId, msg.id, text);
      onDone();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<form class="editor" onSubmit=${save} onKeyDown=${(e) => e.key === 'Escape' && onDone()}>
    <label class="sr-only" for=${'edit-' + msg.id}>Edit message</label>
    <textarea id=${'edit-' + msg.id} value=${text} onInput=${(e) => setText(e.target.value)} rows="3" ref=${area}></textarea>
    <${FormError} error=${error} />
    <div class="actions small">
      <button type="button" class="secondary" onClick=${onDone}>Cancel</button>
      <button class="primary" disabled=${busy || !text.trim()}>Save</button>
    </div>
  </form>`;
}

/** A message as it is now (`msg`), at its original place in the conversation. */
export function Message({ convId, msg, members, canAct }) {
  const [editing, setEditing] = useState(false);
  const [recalling, setRecalling] = useState(false);
  const [history, setHistory] = useState(false);
  const mine = msg.sender_id === S.me.id;
  const sender = mine ? 'You' : S.names.get(msg.sender_id) || 'Former member';
  const active = msg.state === 'active';
  const pri = msg.priority !== 'routine' ? msg.priority : null;
  return html`<li class=${'msg' + (mine ? ' mine' : '') + (pri ? ' pri-' + pri + '-msg' : '') + (active ? '' : ' gone')} data-seq=${msg.seq}>
    <div class="msg-head">
      <span class="sender">${sender}</span>
      <time datetime=${msg.sent_at} title=${fullTime(msg.sent_at)}>${clock(msg.sent_at)}</time>
      ${pri ? html`<span class=${'pri pri-' + pri}>${PRIORITY_LABEL[pri]}</span>` : null}
      ${msg.edited && active ? html`<button type="button" class="link small" onClick=${() => setHistory(true)}>edited</button>` : null}
    </div>
    ${editing
      ? html`<${Editor} convId=${convId} msg=${msg} onDone=${() => setEditing(false)} />`
      : active
        ? html`${msg.body ? html`<p class="text">${msg.body}</p>` : null}
            ${msg.attachments.map((a) => html`<${Attachment} key=${a.id} a=${a} />`)}`
        : html`<p class="text tombstone">${msg.state === 'recalled' ? 'This message was recalled by its sender.' : 'This message has expired.'}</p>`}
    <div class="msg-foot">
      ${mine && active && canAct && !editing
        ? html`<span class="msg-actions">
            ${msg.content_type === 'text' ? html`<button type="button" class="link small" onClick=${() => setEditing(true)}>Edit</button>` : null}
            <button type="button" class="link small" onClick=${() => setRecalling(true)}>Recall</button>
          </span>`
        : null}
      ${mine && active ? html`<${Receipts} seq=${msg.seq} members=${members} />` : null}
    </div>
    ${recalling
      ? html`<${Confirm} title="Recall this message?" text="Its text and attachments are destroyed for everyone. A note that a message was recalled stays." action="Recall"
          onConfirm=${() => recallMessage(convId, msg.id).catch((err) => { toast(errorText(err), 'error'); throw err; })} onClose=${() => setRecalling(false)} />`
      : null}
    ${history ? html`<${Versions} convId=${convId} msg=${msg} onClose=${() => setHistory(false)} />` : null}
  </li>`;
}

/** A message of the patient's thread: to the patient (read on the secure page) or from them. */
export function PatientMessage({ ev, patient }) {
  const m = ev.patient_message;
  const incoming = m.direction === 'from_patient';
  const who = incoming
    ? `${patient ? patient.name : 'The patient'} (patient${m.channel === 'sms' ? ', by text' : ', secure page'})`
    : `${m.author_id === S.me.id ? 'You' : S.names.get(m.author_id) || 'A former member'} → patient`;
  return html`<li class=${'msg patient-msg' + (incoming ? ' from-patient' : ' mine')} data-seq=${ev.seq}>
    <div class="msg-head">
      <span class="sender">${who}</span>
      <time datetime=${m.sent_at} title=${fullTime(m.sent_at)}>${clock(m.sent_at)}</time>
    </div>
    <p class="text">${m.body}</p>
    ${incoming ? null : html`<div class="msg-foot">Shared with the patient on the secure page</div>`}
  </li>`;
}
