// Sign-in screens: password, then a TOTP or recovery code; first-time enrolment with a QR code,
// then the recovery codes, shown once.

import { html, useEffect, useRef, useState } from '../lib.js';
import { S, useStore } from '../store.js';
import { signIn, verifyCode, startEnrolment, confirmEnrolment, finishEnrolment, signOut } from '../session.js';
import { Field, FormError, Spinner } from './common.js';

function Card({ title, children }) {
  return html`<main class="auth" id="main">
    <div class="auth-card">
      <p class="brand"><img src="/app/icon.svg" alt="" width="32" height="32" /> Haven</p>
      <h1>${title}</h1>
      ${children}
    </div>
  </main>`;
}

function useFocus() {
  const ref = useRef(null);
  useEffect(() => ref.current && ref.current.focus(), []);
  return ref;
}

/** Username and password. */
export function SignIn() {
  const s = useStore();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const first = useFocus();
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    setError(null);
    try {
      await signIn(String(f.get('username')), String(f.get('password')));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Card} title="Sign in">
    ${s.notice ? html`<p class="notice" role="status">${s.notice}</p>` : null}
    <form onSubmit=${submit} novalidate>
      <${Field} label="Username" id="username">
        <input ref=${first} id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required />
      <//>
      <${Field} label="Password" id="password">
        <input id="password" name="password" type="password" autocomplete="current-password" required />
      <//>
      <${FormError} error=${error} />
      <button class="primary wide" disabled=${busy}>${busy ? 'Signing in…' : 'Continue'}</button>
    </form>
  <//>`;
}

/** The second factor: a 6-digit code, or a recovery code. */
export function MfaStep() {
  const [recovery, setRecovery] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), [recovery]);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await verifyCode(String(new FormData(e.target).get('code')));
    } catch (err) {
      setError(err);
      setBusy(false);
      if (input.current) input.current.select();
    }
  };
  return html`<${Card} title="Two-step verification">
    <p>${recovery ? 'Enter one of your recovery codes. Each works once.' : 'Enter the 6-digit code from your authenticator app.'}</p>
    <form onSubmit=${submit} novalidate>
      <${Field} label=${recovery ? 'Recovery code' : 'Code'} id="code">
        ${recovery
          ? html`<input ref=${input} id="code" name="code" autocomplete="off" spellcheck="false" required />`
          : html`<input ref=${input} id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required />`}
      <//>
      <${FormError} error=${error} />
      <button class="primary wide" disabled=${busy}>${busy ? 'Checking…' : 'Verify'}</button>
    </form>
    <p class="links">
      <button type="button" class="link" onClick=${() => setRecovery(!recovery)}>
        ${recovery ? 'Use my authenticator app instead' : 'Use a recovery code instead'}
      </button>
      <button type="button" class="link" onClick=${() => signOut('manual')}>Cancel sign-in</button>
    </p>
  <//>`;
}

/** First-time enrolment: scan the QR code (or type the key), confirm with a code. */
export function Enrol() {
  const [setup, setSetup] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    startEnrolment().then(setSetup, setError);
  }, []);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await confirmEnrolment(String(new FormData(e.target).get('code')));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const grouped = setup ? setup.secret.match(/.{1,4}/g).join(' ') : '';
  return html`<${Card} title="Set up two-step verification">
    <p>Your organisation requires an authenticator app (such as Google Authenticator, Microsoft Authenticator or 1Password) for every account.</p>
    ${setup
      ? html`<ol class="steps">
          <li>Scan this code with the app.
            <img class="qr" src=${'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(setup.qr_svg)}
              alt="QR code to add Haven to an authenticator app" width="200" height="200" />
            <details><summary>Can't scan it? Type this key instead</summary>
              <p class="secret" data-testid="totp-secret" aria-label="Setup key">${grouped}</p></details>
          </li>
          <li>Enter the 6-digit code the app shows.
            <form onSubmit=${submit} novalidate>
              <${Field} label="Code" id="enrol-code">
                <input id="enrol-code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" required />
              <//>
              <${FormError} error=${error} />
              <button class="primary wide" disabled=${busy}>${busy ? 'Checking…' : 'Turn on'}</button>
            </form>
          </li>
        </ol>`
      : error
        ? html`<${FormError} error=${error} />`
        : html`<${Spinner} />`}
    <p class="links"><button type="button" class="link" onClick=${() => signOut('manual')}>Cancel sign-in</button></p>
  <//>`;
}

/** The recovery codes, shown once. */
export function RecoveryCodes() {
  const codes = S.recoveryCodes || [];
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const heading = useFocus();
  const done = async () => {
    setBusy(true);
    S.recoveryCodes = null;
    await finishEnrolment();
  };
  return html`<${Card} title="Save your recovery codes">
    <p ref=${heading} tabindex="-1">If you lose your phone, each of these codes signs you in once. They are shown only now: print them or keep them in a password manager.</p>
    <ul class="codes" aria-label="Recovery codes">${codes.map((c) => html`<li><code>${c}</code></li>`)}</ul>
    <label class="check"><input type="checkbox" checked=${saved} onChange=${(e) => setSaved(e.target.checked)} /> I have saved these codes</label>
    <button class="primary wide" disabled=${!saved || busy} onClick=${done}>Continue to Haven</button>
  <//>`;
}
