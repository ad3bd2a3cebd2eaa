// The admin console: the organisation's users (create, roles, MFA reset, deactivation) and
// its security policy. The server checks every permission again; this only hides what the
// user may not do.

import { html, useEffect, useState } from '../lib.js';
import { get, post, put } from '../api.js';
import { S, can, toast, update, useStore } from '../store.js';
import { Confirm, Dialog, Field, FormError, Spinner, useId } from './common.js';
import { ROLE_LABEL } from '../format.js';

/** The roles, in the order offered. */
const ROLES = ['clinician', 'nurse', 'front_desk', 'org_admin', 'compliance_officer'].map((role) => ({ role, label: ROLE_LABEL[role] }));

const roleLabel = (r) => ROLE_LABEL[r] ?? r;

/** A strong random first password for a new account (handed over once by the admin). */
export function generatePassword() {
  const alphabet = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  const chars = Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
  return chars.match(/.{5}/g).join('-');
}

/** The user list with search and paging. */
export function Users() {
  const [query, setQuery] = useState('');
  const [pages, setPages] = useState({ users: [], next: null, loading: true, error: null });
  const [dialog, setDialog] = useState(null);
  const searchId = useId('user-search');

  const load = async (after = null, q = query) => {
    setPages((p) => ({ ...p, loading: true, error: null }));
    const params = new URLSearchParams({ limit: '50' });
    if (q.trim()) params.set('q', q.trim());
    if (after) params.set('after', after);
    try {
      const page = await get(`/api/v1/users?${params}`);
      setPages((p) => ({ users: after ? [...p.users, ...page.users] : page.users, next: page.next_after, loading: false, error: null }));
    } catch (err) {
      setPages((p) => ({ ...p, loading: false, error: err }));
    }
  };
  useEffect(() => {
    const t = setTimeout(() => load(null, query), query ? 250 : 0);
    return () => clearTimeout(t);
  }, [query]);

  const replace = (user) => setPages((p) => ({ ...p, users: p.users.map((u) => (u.id === user.id ? user : u)) }));
  const close = () => setDialog(null);

  return html`<main id="main" class="page" tabindex="-1">
    <div class="page-head">
      <h1>Users</h1>
      <button type="button" class="primary" onClick=${() => setDialog({ kind: 'create' })}>Add user</button>
    </div>
    <div class="field inline">
      <label for=${searchId}>Search</label>
      <input id=${searchId} type="search" placeholder="Name or username" value=${query} onInput=${(e) => setQuery(e.currentTarget.value)} />
    </div>
    <${FormError} error=${pages.error} />
    <div class="table-wrap">
      <table class="data">
        <caption class="sr-only">Users of the organisation</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Username</th><th scope="col">Roles</th><th scope="col">MFA</th><th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>
          ${pages.users.map(
            (u) => html`<tr key=${u.id} class=${u.status === 'deactivated' ? 'inactive' : ''}>
              <th scope="row">${u.display_name}</th>
              <td>${u.username}</td>
              <td>${u.roles.map((r) => html`<span class="chip">${roleLabel(r)}</span>`)}</td>
              <td>${u.mfa_enrolled ? 'Enrolled' : html`<span class="muted">Not enrolled</span>`}</td>
              <td>${u.status === 'active' ? 'Active' : 'Deactivated'}</td>
              <td class="row-actions">${u.status === 'active' ? html`
                <button type="button" class="secondary small" aria-label=${'Roles of ' + u.display_name} onClick=${() => setDialog({ kind: 'roles', user: u })}>Roles</button>
                <button type="button" class="secondary small" disabled=${!u.mfa_enrolled} aria-label=${'Reset MFA of ' + u.display_name} onClick=${() => setDialog({ kind: 'mfa', user: u })}>Reset MFA</button>
                ${u.id !== S.me.id
                  ? html`<button type="button" class="danger small" aria-label=${'Deactivate ' + u.display_name} onClick=${() => setDialog({ kind: 'deactivate', user: u })}>Deactivate</button>`
                  : null}` : null}
              </td>
            </tr>`,
          )}
        </tbody>
      </table>
    </div>
    ${pages.loading ? html`<${Spinner} />` : null}
    ${!pages.loading && pages.users.length === 0 ? html`<p class="muted">No users match.</p>` : null}
    ${pages.next && !pages.loading ? html`<button type="button" class="secondary" onClick=${() => load(pages.next)}>Show more</button>` : null}
    ${dialog?.kind === 'create' ? html`<${CreateUser} onClose=${close} onCreated=${(u) => setPages((p) => ({ ...p, users: [u, ...p.users] }))} />` : null}
    ${dialog?.kind === 'roles' ? html`<${RolesDialog} user=${dialog.user} onClose=${close} onSaved=${replace} />` : null}
    ${dialog?.kind === 'mfa'
      ? html`<${Confirm} title="Reset MFA" action="Reset MFA" onClose=${close}
          text=${`${dialog.user.display_name} will have to enrol a new authenticator at the next sign-in. Their sessions end now.`}
          onConfirm=${async () => { replace(await post(`/api/v1/users/${dialog.user.id}/mfa/reset`)); toast('MFA reset.'); }} />`
      : null}
    ${dialog?.kind === 'deactivate'
      ? html`<${Confirm} title="Deactivate user" action="Deactivate" onClose=${close}
          text=${`${dialog.user.display_name} will be signed out everywhere at once and can no longer sign in. Their messages stay in the record.`}
          onConfirm=${async () => { replace(await post(`/api/v1/users/${dialog.user.id}/deactivate`)); toast('User deactivated.'); }} />`
      : null}
  </main>`;
}

function RoleChoices({ roles, setRoles, legend }) {
  const toggle = (role) => setRoles(roles.includes(role) ? roles.filter((r) => r !== role) : [...roles, role]);
  return html`<fieldset class="choices">
    <legend>${legend}</legend>
    ${ROLES.map(
      (r) => html`<label class="check"><input type="checkbox" checked=${roles.includes(r.role)} onChange=${() => toggle(r.role)} /> ${r.label}</label>`,
    )}
  </fieldset>`;
}

function CreateUser({ onClose, onCreated }) {
  const [form, setForm] = useState({ username: '', display_name: '', roles: ['clinician'], password: generatePassword() });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState(null);
  const ids = { user: useId('nu-user'), name: useId('nu-name'), pass: useId('nu-pass') };
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const user = await post('/api/v1/users', form);
      onCreated(user);
      setCreated(user);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  if (created) {
    return html`<${Dialog} title="User added" onClose=${onClose}>
      <p>Give <strong>${created.display_name}</strong> these details in person or over a secure channel. They will set up their authenticator at the first sign-in.</p>
      <dl class="credentials">
        <dt>Username</dt><dd><code>${created.username}</code></dd>
        <dt>First password</dt><dd><code data-testid="new-password">${form.password}</code></dd>
      </dl>
      <div class="actions"><button type="button" class="primary" onClick=${onClose}>Done</button></div>
    <//>`;
  }
  return html`<${Dialog} title="Add user" onClose=${onClose}>
    <form onSubmit=${submit}>
      <${Field} label="Full name" id=${ids.name} error=${error?.field === 'display_name' ? error.message : null}>
        <input id=${ids.name} required maxlength="200" autocomplete="off" value=${form.display_name} onInput=${set('display_name')} />
      <//>
      <${Field} label="Username" id=${ids.user} hint="Letters, digits, dots, dashes." error=${error?.field === 'username' ? error.message : null}>
        <input id=${ids.user} required maxlength="64" autocomplete="off" autocapitalize="none" spellcheck="false" value=${form.username} onInput=${set('username')} aria-describedby=${ids.user + '-hint'} />
      <//>
      <${Field} label="First password" id=${ids.pass} hint="Generated for you; you can type another." error=${error?.field === 'password' ? error.message : null}>
        <input id=${ids.pass} required autocomplete="new-password" spellcheck="false" value=${form.password} onInput=${set('password')} aria-describedby=${ids.pass + '-hint'} />
      <//>
      <${RoleChoices} legend="Roles" roles=${form.roles} setRoles=${(roles) => setForm({ ...form, roles })} />
      ${error && !error.field ? html`<${FormError} error=${error} />` : null}
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary" disabled=${busy || form.roles.length === 0}>Add user</button>
      </div>
    </form>
  <//>`;
}

function RolesDialog({ user, onClose, onSaved }) {
  const [roles, setRoles] = useState(user.roles);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      onSaved(await put(`/api/v1/users/${user.id}/roles`, { roles }));
      toast('Roles saved.');
      onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${'Roles of ' + user.display_name} onClose=${onClose}>
    <form onSubmit=${save}>
      <${RoleChoices} legend="Roles" roles=${roles} setRoles=${setRoles} />
      <${FormError} error=${error} />
      <div class="actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary" disabled=${busy || roles.length === 0}>Save roles</button>
      </div>
    </form>
  <//>`;
}

const KINDS = [
  { kind: 'image', label: 'Images (PNG, JPEG, GIF, WebP, HEIC)' },
  { kind: 'pdf', label: 'PDF documents' },
  { kind: 'office', label: 'Office documents (Word, Excel, PowerPoint, RTF)' },
  { kind: 'text', label: 'Plain text' },
];
const MIB = 1024 * 1024;

/** The organisation's security policy. */
export function Policy() {
  const s = useStore();
  const p = s.org.policy;
  const [form, setForm] = useState(() => ({
    mfa_required: p.mfa_required,
    idle_minutes: String(p.inactivity_timeout_seconds / 60),
    lifetime_hours: String(p.session_lifetime_seconds / 3600),
    attach_mib: String(Math.round((p.max_attachment_bytes / MIB) * 10) / 10),
    kinds: p.attachment_kinds,
  }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const ids = { idle: useId('pol-idle'), life: useId('pol-life'), att: useId('pol-att') };
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const toggleKind = (k) => setForm({ ...form, kinds: form.kinds.includes(k) ? form.kinds.filter((x) => x !== k) : [...form.kinds, k] });

  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const org = await put('/api/v1/organization/policy', {
        mfa_required: form.mfa_required,
        inactivity_timeout_seconds: Math.round(Number(form.idle_minutes) * 60),
        session_lifetime_seconds: Math.round(Number(form.lifetime_hours) * 3600),
        max_attachment_bytes: Math.round(Number(form.attach_mib) * MIB),
        attachment_kinds: form.kinds,
      });
      update((st) => (st.org = org));
      toast('Policy saved. It applies to every session from now on.');
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const editable = can('policy_manage');
  return html`<main id="main" class="page narrow" tabindex="-1">
    <h1>Policy</h1>
    <form onSubmit=${save}>
      <fieldset disabled=${!editable}>
        <legend>Sign-in and sessions</legend>
        <label class="check"><input type="checkbox" checked=${form.mfa_required} onChange=${(e) => setForm({ ...form, mfa_required: e.currentTarget.checked })} /> Everyone must use a second factor (authenticator app)</label>
        <${Field} label="Sign out after inactivity (minutes)" id=${ids.idle} hint="Between 0.5 and 240 minutes. A warning shows a minute before.">
          <input id=${ids.idle} type="number" min="0.5" max="240" step="0.5" required value=${form.idle_minutes} onInput=${set('idle_minutes')} aria-describedby=${ids.idle + '-hint'} />
        <//>
        <${Field} label="Sign out after (hours), whatever the activity" id=${ids.life} hint="Between 0.1 and 12 hours.">
          <input id=${ids.life} type="number" min="0.1" max="12" step="0.1" required value=${form.lifetime_hours} onInput=${set('lifetime_hours')} aria-describedby=${ids.life + '-hint'} />
        <//>
      </fieldset>
      <fieldset disabled=${!editable}>
        <legend>Attachments</legend>
        <${Field} label="Largest attachment (MiB)" id=${ids.att} hint="0 turns attachments off. The server's own limit applies too.">
          <input id=${ids.att} type="number" min="0" max="1024" step="0.1" required value=${form.attach_mib} onInput=${set('attach_mib')} aria-describedby=${ids.att + '-hint'} />
        <//>
        <fieldset class="choices">
          <legend>Kinds of file members may share</legend>
          ${KINDS.map((k) => html`<label class="check"><input type="checkbox" checked=${form.kinds.includes(k.kind)} onChange=${() => toggleKind(k.kind)} /> ${k.label}</label>`)}
        </fieldset>
      </fieldset>
      <${FormError} error=${error} />
      ${editable ? html`<div class="actions"><button type="submit" class="primary" disabled=${busy}>Save policy</button></div>` : null}
    </form>
  </main>`;
}
