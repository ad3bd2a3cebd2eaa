// The messaging screen: the conversation list beside the open conversation (one at a time on a
// phone), and the dialog that starts a conversation.

import { html, useEffect, useState } from '../lib.js';
import { can, useStore } from '../store.js';
import { sortedConversations, conversationName, startConversation, searchDirectory, findPatient, registerPatient } from '../messaging.js';
import { shortTime, PRIORITY_LABEL, ROLE_LABEL, birthDate } from '../format.js';
import { Dialog, Field, FormError, Spinner, useId } from './common.js';
import { Conversation } from './conversation.js';

export function Messages() {
  const s = useStore();
  const [starting, setStarting] = useState(false);
  const openId = s.route.id;
  return html`<div class=${openId ? 'messages has-open' : 'messages'}>
    <aside class="conv-list" aria-label="Conversations">
      <div class="list-head">
        <h1>Messages</h1>
        <button type="button" class="primary" onClick=${() => setStarting(true)}>New</button>
      </div>
      <${ConversationList} openId=${openId} />
    </aside>
    ${openId
      ? html`<${Conversation} key=${openId} id=${openId} />`
      : html`<main id="main" tabindex="-1" class="empty-pane"><p>Choose a conversation, or start a new one.</p></main>`}
    ${starting ? html`<${NewConversation} onClose=${() => setStarting(false)} />` : null}
  </div>`;
}

function ConversationList({ openId }) {
  const s = useStore();
  const [filter, setFilter] = useState('');
  if (!s.convsLoaded) return html`<${Spinner} label="Loading conversations…" />`;
  const f = filter.trim().toLowerCase();
  const list = sortedConversations().filter((c) => !f || conversationName(c).toLowerCase().includes(f) || (c.patient && c.patient.mrn.toLowerCase().includes(f)));
  return html`
    <div class="filter">
      <label class="sr-only" for="conv-filter">Filter conversations</label>
      <input id="conv-filter" type="search" placeholder="Filter by name, patient or MRN" value=${filter} onInput=${(e) => setFilter(e.target.value)} />
    </div>
    ${list.length === 0
      ? html`<p class="muted pad">${f ? 'No conversation matches.' : 'No conversations yet.'}</p>`
      : html`<ul class="convs">${list.map((c) => html`<${ConversationItem} key=${c.id} c=${c} current=${c.id === openId} />`)}</ul>`}`;
}

function ConversationItem({ c, current }) {
  const name = conversationName(c);
  const pri = c.unread > 0 && c.newest_unread_priority && c.newest_unread_priority !== 'routine' ? c.newest_unread_priority : null;
  return html`<li>
    <a href=${'#/messages/' + c.id} class=${'conv' + (current ? ' current' : '') + (c.unread ? ' unread' : '')}
       aria-current=${current ? 'true' : undefined}>
      <span class="conv-top">
        <span class="conv-name">${name}</span>
        <span class="conv-time">${shortTime(c.last_activity_at)}</span>
      </span>
      ${c.patient
        ? html`<span class="conv-patient">${c.patient.name} · MRN ${c.patient.mrn}</span>`
        : html`<span class="conv-kind">${c.kind === 'direct' ? 'Direct' : 'Group'}${c.is_member ? '' : ' · left'}</span>`}
      <span class="conv-badges">
        ${pri ? html`<span class=${'pri pri-' + pri}>${PRIORITY_LABEL[pri]}</span>` : null}
        ${c.unread ? html`<span class="badge">${c.unread}<span class="sr-only"> unread</span></span>` : null}
      </span>
    </a>
  </li>`;
}

/** Picks colleagues from the directory. */
function MemberPicker({ kind, picked, setPicked }) {
  const [q, setQ] = useState('');
  const [found, setFound] = useState([]);
  const [error, setError] = useState(null);
  const id = useId('dir');
  useEffect(() => {
    let stale = false;
    const t = setTimeout(() => {
      searchDirectory(q).then(
        (users) => !stale && (setFound(users), setError(null)),
        (err) => !stale && setError(err),
      );
    }, 200);
    return () => {
      stale = true;
      clearTimeout(t);
    };
  }, [q]);
  const toggle = (u) => {
    if (picked.some((p) => p.id === u.id)) setPicked(picked.filter((p) => p.id !== u.id));
    else setPicked(kind === 'direct' ? [u] : [...picked, u]);
  };
  return html`<fieldset class="picker">
    <legend>${kind === 'direct' ? 'With' : 'Members'}</legend>
    ${picked.length
      ? html`<ul class="chips" aria-label="Chosen">${picked.map(
          (u) => html`<li class="chip">${u.display_name}<button type="button" class="icon-button" aria-label=${'Remove ' + u.display_name} onClick=${() => toggle(u)}>×</button></li>`,
        )}</ul>`
      : null}
    <label for=${id}>Search the directory</label>
    <input id=${id} type="search" value=${q} placeholder="Name or username" onInput=${(e) => setQ(e.target.value)} autocomplete="off" />
    <${FormError} error=${error} />
    <ul class="directory" aria-label="Directory results">
      ${found.map((u) => {
        const on = picked.some((p) => p.id === u.id);
        return html`<li><button type="button" class=${on ? 'pick on' : 'pick'} aria-pressed=${on ? 'true' : 'false'} onClick=${() => toggle(u)}>
          <span>${u.display_name}</span><span class="muted">${u.roles.map((r) => ROLE_LABEL[r] || r).join(', ')}</span>
        </button></li>`;
      })}
    </ul>
  </fieldset>`;
}

/** Finds the patient a conversation is about (by MRN), or registers a new one. */
function PatientPicker({ patient, setPatient }) {
  const [mode, setMode] = useState('find');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const find = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      setPatient(await findPatient(String(new FormData(e.target).get('mrn'))));
    } catch (err) {
      setError(err.status === 404 ? new Error('No patient has this MRN in your organisation.') : err);
    } finally {
      setBusy(false);
    }
  };
  const register = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const details = { mrn: f.get('mrn'), name: f.get('name'), date_of_birth: f.get('dob'), language: f.get('language') };
    if (f.get('phone')) details.phone = f.get('phone');
    if (f.get('region')) details.region = f.get('region');
    setError(null);
    setBusy(true);
    try {
      setPatient(await registerPatient(details));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  if (patient) {
    return html`<div class="patient-banner small" role="group" aria-label="Patient">
      <strong>${patient.name}</strong><span>MRN ${patient.mrn}</span><span>Born ${birthDate(patient.date_of_birth)}</span>
      <button type="button" class="link" onClick=${() => setPatient(null)}>Change</button>
    </div>`;
  }
  return html`<div class="patient-pick">
    ${mode === 'find'
      ? html`<form onSubmit=${find} class="inline-form">
          <${Field} label="Patient MRN" id="mrn-find"><input id="mrn-find" name="mrn" required autocomplete="off" /><//>
          <button class="secondary" disabled=${busy}>Find</button>
        </form>`
      : html`<form onSubmit=${register}>
          <${Field} label="MRN" id="p-mrn"><input id="p-mrn" name="mrn" required autocomplete="off" /><//>
          <${Field} label="Full name" id="p-name"><input id="p-name" name="name" required autocomplete="off" /><//>
          <${Field} label="Date of birth" id="p-dob"><input id="p-dob" name="dob" type="date" required /><//>
          <${Field} label="Mobile phone (optional, for texts)" id="p-phone" hint="In international form, e.g. +12025550143">
            <input id="p-phone" name="phone" type="tel" autocomplete="off" aria-describedby="p-phone-hint" /><//>
          <${Field} label="State or region (optional)" id="p-region" hint="ISO 3166-2, e.g. US-FL: some states allow texts in fewer hours">
            <input id="p-region" name="region" autocomplete="off" maxlength="6" aria-describedby="p-region-hint" /><//>
          <${Field} label="Preferred language" id="p-lang">
            <select id="p-lang" name="language"><option value="en">English</option><option value="es">Spanish</option></select><//>
          <button class="secondary" disabled=${busy}>Register patient</button>
        </form>`}
    <${FormError} error=${error} />
    ${can('patient_register')
      ? html`<button type="button" class="link" onClick=${() => { setMode(mode === 'find' ? 'register' : 'find'); setError(null); }}>
          ${mode === 'find' ? 'Register a new patient' : 'Find an existing patient'}</button>`
      : null}
  </div>`;
}

function NewConversation({ onClose }) {
  const [kind, setKind] = useState('direct');
  const [picked, setPicked] = useState([]);
  const [patient, setPatient] = useState(null);
  const [title, setTitle] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const canPatient = can('patient_read') || can('patient_register');
  const ready = picked.length > 0 && (kind !== 'patient' || patient);
  const start = async () => {
    setBusy(true);
    setError(null);
    try {
      const id = await startConversation({ kind, members: picked.map((u) => u.id), title: kind === 'direct' ? '' : title.trim(), patientId: patient?.id });
      onClose();
      location.hash = '#/messages/' + id;
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const kinds = [
    ['direct', 'Direct message'],
    ['group', 'Group'],
    ...(canPatient ? [['patient', 'About a patient']] : []),
  ];
  return html`<${Dialog} title="New conversation" onClose=${onClose} wide>
    <fieldset class="segmented">
      <legend>Kind</legend>
      ${kinds.map(([k, label]) => html`<label class=${kind === k ? 'on' : ''}><input type="radio" name="kind" value=${k} checked=${kind === k}
        onChange=${() => { setKind(k); if (k === 'direct') setPicked(picked.slice(0, 1)); }} />${label}</label>`)}
    </fieldset>
    ${kind === 'patient' ? html`<${PatientPicker} patient=${patient} setPatient=${setPatient} />` : null}
    ${kind !== 'direct'
      ? html`<${Field} label="Title (optional)" id="new-conv-title"><input id="new-conv-title" value=${title} maxlength="200" onInput=${(e) => setTitle(e.target.value)} /><//>`
      : null}
    <${MemberPicker} kind=${kind} picked=${picked} setPicked=${setPicked} />
    <${FormError} error=${error} />
    <div class="actions">
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
      <button type="button" class="primary" disabled=${!ready || busy} onClick=${start}>Start</button>
    </div>
  <//>`;
}

