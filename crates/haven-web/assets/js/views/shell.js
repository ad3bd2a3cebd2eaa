// The frame around every screen: the header with the sections the user's roles allow, the
// connection banner, the inactivity warning, and messages for the user.

import { html, useEffect, useRef } from '../lib.js';
import { S, can, useStore } from '../store.js';
import { signOut, signOutEverywhere, stayActive } from '../session.js';
import { SignIn, MfaStep, Enrol, RecoveryCodes } from './signin.js';
import { Messages } from './messages.js';
import { Users, Policy } from './admin.js';
import { Audit } from './audit.js';
import { Inbox } from './inbox.js';
import { Spinner } from './common.js';

/** The sections, in the order shown, with the permission each needs. */
const SECTIONS = [
  { view: 'messages', label: 'Messages', needs: 'messaging_use' },
  { view: 'inbox', label: 'Patient inbox', needs: 'patient_messaging' },
  { view: 'users', label: 'Users', needs: 'users_manage' },
  { view: 'policy', label: 'Policy', needs: 'policy_manage' },
  { view: 'audit', label: 'Audit', needs: 'audit_read' },
];

/** The sections this user may open. */
export function sections() {
  return SECTIONS.filter((x) => can(x.needs));
}

function Header() {
  const s = useStore();
  const list = sections();
  return html`<header class="topbar">
    <a class="skip" href="#main" onClick=${skip}>Skip to content</a>
    <span class="brand"><img src="/app/icon.svg" alt="" width="24" height="24" /> Haven</span>
    <span class="org">${s.org?.name}</span>
    <nav aria-label="Sections">
      <ul>
        ${list.map(
          (x) => html`<li><a href=${'#/' + x.view} aria-current=${s.route.view === x.view ? 'page' : undefined}>${x.label}</a></li>`,
        )}
      </ul>
    </nav>
    <details class="user-menu">
      <summary><span class="avatar" aria-hidden="true">${initials(s.me.display_name)}</span><span class="sr-only">Account menu: </span><span class="who">${s.me.display_name}</span></summary>
      <div class="menu">
        <p class="muted">Signed in as ${s.me.username}</p>
        <button type="button" class="secondary" onClick=${() => signOut('manual')}>Sign out</button>
        <button type="button" class="link" onClick=${signOutEverywhere}>Sign out on every device</button>
      </div>
    </details>
  </header>`;
}

function skip(e) {
  e.preventDefault();
  const main = document.getElementById('main');
  if (main) main.focus();
}

export function initials(name) {
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join('');
}

function ConnectionBanner() {
  const s = useStore();
  if (s.conn === 'live' || s.conn === 'connecting' || !can('messaging_use')) return null;
  const text =
    s.conn === 'offline'
      ? 'You are offline. Messages will appear when the connection is back.'
      : 'Connection lost. Reconnecting… New messages will appear when it is back.';
  return html`<p class="banner warn" role="status" data-testid="connection">${text}</p>`;
}

function IdleWarning() {
  const s = useStore();
  const button = useRef(null);
  const dialog = useRef(null);
  const open = s.idleLeft !== null;
  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (open && !d.open) {
      d.showModal();
      if (button.current) button.current.focus();
    }
    if (!open && d.open) d.close();
  }, [open]);
  return html`<dialog ref=${dialog} class="dialog" aria-labelledby="idle-title" aria-describedby="idle-text"
      onCancel=${(e) => { e.preventDefault(); stayActive(); }}>
    <h2 id="idle-title">Are you still there?</h2>
    <p id="idle-text">For patients' privacy you will be signed out in <strong>${s.idleLeft ?? 0} seconds</strong>, and everything shown will be cleared from this browser.</p>
    <div class="actions">
      <button type="button" class="secondary" onClick=${() => signOut('manual')}>Sign out now</button>
      <button ref=${button} type="button" class="primary" onClick=${stayActive}>Stay signed in</button>
    </div>
  </dialog>`;
}

function Toast() {
  const s = useStore();
  return html`<div class="toast-region" aria-live="polite">
    ${s.toast ? html`<p class=${'toast ' + s.toast.kind} role=${s.toast.kind === 'error' ? 'alert' : 'status'}>${s.toast.text}</p>` : null}
  </div>`;
}

function Main() {
  const s = useStore();
  const allowed = sections();
  const view = allowed.some((x) => x.view === s.route.view) ? s.route.view : allowed[0]?.view;
  let body;
  switch (view) {
    case 'messages':
      body = html`<${Messages} />`;
      break;
    case 'inbox':
      body = html`<${Inbox} />`;
      break;
    case 'users':
      body = html`<${Users} />`;
      break;
    case 'policy':
      body = html`<${Policy} />`;
      break;
    case 'audit':
      body = html`<${Audit} />`;
      break;
    default:
      body = html`<main id="main" class="page"><h1>Nothing to show</h1><p>Your account has no role that uses this app. Ask your administrator.</p></main>`;
  }
  return html`<div class="shell">
    <${Header} />
    <${ConnectionBanner} />
    ${body}
    <${IdleWarning} />
    <${Toast} />
  </div>`;
}

/** The whole app: the sign-in steps, or the signed-in screens. */
export function App() {
  const s = useStore();
  switch (s.phase) {
    case 'signin':
      return html`<${SignIn} />`;
    case 'mfa':
      return html`<${MfaStep} />`;
    case 'enrol':
      return html`<${Enrol} />`;
    case 'recovery':
      return html`<${RecoveryCodes} />`;
    case 'app':
      return html`<${Main} />`;
    default:
      return html`<main class="auth"><${Spinner} label="Loading Haven…" /></main>`;
  }
}

/** Reads the route from the URL hash: `#/messages/<id>`, `#/users`, `#/policy`, `#/audit`. */
export function readRoute() {
  const [, view = 'messages', id = null] = location.hash.replace(/^#/, '').split('/');
  S.route = { view: view || 'messages', id };
}
