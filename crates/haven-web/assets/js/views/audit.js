// The audit screen for compliance officers: the log's verification status with its latest
// signed checkpoint, a filtered and paged search, and the exports an auditor verifies offline.

import { html, useEffect, useState } from '../lib.js';
import { get } from '../api.js';
import { S, update, useStore } from '../store.js';
import { FormError, Spinner, useId } from './common.js';
import { count, fullTime } from '../format.js';

/** Actions worth offering in the filter (any subtype may be typed). */
const ACTIONS = [
  'login', 'login-password', 'logout', 'logout-all', 'mfa-enroll', 'mfa-verify', 'mfa-reset',
  'password-change', 'user-create', 'user-deactivate', 'user-roles', 'policy-change',
  'patient-create', 'patient-read', 'conversation-create', 'conversation-read',
  'conversation-member-add', 'message-send', 'message-read', 'message-edit', 'message-recall',
  'message-history-read', 'attachment-upload', 'attachment-download', 'consent-change',
  'sms-send', 'link-open', 'identity-check', 'patient-message-send', 'patient-message-receive',
  'patient-thread-read', 'inbox-read', 'inbox-update', 'audit-export', 'audit-verify',
];

const OUTCOME_LABEL = { success: 'Success', failure: 'Failure', serious_failure: 'Serious failure', minor_failure: 'Failure' };

/** Learns the directory's names, so entries say who rather than an id. */
async function learnNames() {
  let after = null;
  for (let i = 0; i < 10; i += 1) {
    const params = new URLSearchParams({ limit: '100' });
    if (after) params.set('after', after);
    const page = await get(`/api/v1/users?${params}`, { background: true });
    update((s) => page.users.forEach((u) => s.names.set(u.id, u.display_name)));
    after = page.next_after;
    if (!after) return;
  }
}

/** The whole audit screen. */
export function Audit() {
  useEffect(() => {
    learnNames().catch(() => {});
  }, []);
  return html`<main id="main" class="page" tabindex="-1">
    <h1>Audit log</h1>
    <${Verification} />
    <${Search} />
  </main>`;
}

function Verification() {
  const [state, setState] = useState({ loading: true });
  const check = async () => {
    setState({ loading: true });
    try {
      setState({ view: await get('/api/v1/audit/verification') });
    } catch (err) {
      setState({ error: err });
    }
  };
  useEffect(() => {
    check();
  }, []);
  const v = state.view;
  return html`<section class="card" aria-labelledby="verify-title" data-testid="verification">
    <div class="page-head">
      <h2 id="verify-title">Integrity</h2>
      <button type="button" class="secondary small" disabled=${state.loading} onClick=${check}>Verify again</button>
    </div>
    ${state.loading ? html`<${Spinner} label="Verifying the whole log…" />` : null}
    <${FormError} error=${state.error} />
    ${v
      ? html`<p class=${v.status === 'verified' ? 'status ok' : 'status bad'} role="status">
            ${v.status === 'verified'
              ? `Verified: all ${count(v.entries)} entries chain to ${v.checkpoints_verified} signed checkpoint(s); nothing was changed or removed.`
              : `Verification FAILED: ${v.problem ?? 'the log does not match its signed checkpoints'}. Treat this as a security incident.`}
          </p>
          <dl class="facts">
            <dt>Checked</dt><dd>${fullTime(v.checked_at)}</dd>
            <dt>Latest checkpoint</dt><dd>${count(v.checkpoint.size)} entries, signed ${fullTime(v.checkpoint.created_at)}</dd>
            <dt>Root hash</dt><dd><code class="hash">${v.checkpoint.root_hash}</code></dd>
            <dt>Verifier key</dt><dd><code class="hash">${v.checkpoint.verifier_key}</code></dd>
          </dl>
          <p class="muted">Exports carry the proofs: verify them offline with <code>haven audit verify</code> and the verifier key.
            ${' '}<a href="/api/v1/audit/export?format=jsonl" download>Export (JSON Lines)</a> ·
            <a href="/api/v1/audit/export?format=fhir" download>Export (FHIR AuditEvent bundle)</a></p>`
      : null}
  </section>`;
}

const EMPTY = { user: '', patient: '', conversation: '', action: '', outcome: '', from: '', to: '' };

function Search() {
  useStore();
  const [filters, setFilters] = useState(EMPTY);
  const [applied, setApplied] = useState(EMPTY);
  const [page, setPage] = useState({ events: [], next: null, loading: true, error: null });
  const ids = {
    action: useId('af-action'), outcome: useId('af-outcome'), user: useId('af-user'),
    patient: useId('af-patient'), conv: useId('af-conv'), from: useId('af-from'), to: useId('af-to'), list: useId('af-actions'),
  };

  const load = async (before = null, f = applied) => {
    setPage((p) => ({ ...p, loading: true, error: null }));
    const params = new URLSearchParams({ limit: '50' });
    for (const [k, v] of Object.entries(f)) {
      if (!v.trim()) continue;
      // datetime-local has no zone: it is the browser's local time.
      params.set(k, k === 'from' || k === 'to' ? new Date(v).toISOString() : v.trim());
    }
    if (before !== null) params.set('before', String(before));
    try {
      const res = await get(`/api/v1/audit/events?${params}`);
      setPage((p) => ({ events: before !== null ? [...p.events, ...res.events] : res.events, next: res.next_before, loading: false, error: null }));
    } catch (err) {
      setPage((p) => ({ ...p, loading: false, error: err }));
    }
  };
  useEffect(() => {
    load(null, applied);
  }, [applied]);

  const set = (k) => (e) => setFilters({ ...filters, [k]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    setApplied({ ...filters });
  };
  const clear = () => {
    setFilters(EMPTY);
    setApplied(EMPTY);
  };

  return html`<section aria-labelledby="search-title">
    <h2 id="search-title">Search</h2>
    <form class="filters" onSubmit=${submit}>
      <div class="field"><label for=${ids.action}>Action</label>
        <input id=${ids.action} list=${ids.list} value=${filters.action} onInput=${set('action')} autocomplete="off" />
        <datalist id=${ids.list}>${ACTIONS.map((a) => html`<option value=${a}></option>`)}</datalist></div>
      <div class="field"><label for=${ids.outcome}>Outcome</label>
        <select id=${ids.outcome} value=${filters.outcome} onChange=${set('outcome')}>
          <option value="">Any</option><option value="success">Success</option><option value="failure">Failure</option><option value="serious_failure">Serious failure</option>
        </select></div>
      <div class="field"><label for=${ids.user}>User id</label><input id=${ids.user} value=${filters.user} onInput=${set('user')} autocomplete="off" spellcheck="false" /></div>
      <div class="field"><label for=${ids.patient}>Patient id</label><input id=${ids.patient} value=${filters.patient} onInput=${set('patient')} autocomplete="off" spellcheck="false" /></div>
      <div class="field"><label for=${ids.conv}>Conversation id</label><input id=${ids.conv} value=${filters.conversation} onInput=${set('conversation')} autocomplete="off" spellcheck="false" /></div>
      <div class="field"><label for=${ids.from}>From</label><input id=${ids.from} type="datetime-local" value=${filters.from} onInput=${set('from')} /></div>
      <div class="field"><label for=${ids.to}>To</label><input id=${ids.to} type="datetime-local" value=${filters.to} onInput=${set('to')} /></div>
      <div class="actions">
        <button type="button" class="secondary" onClick=${clear}>Clear</button>
        <button type="submit" class="primary">Search</button>
      </div>
    </form>
    <${FormError} error=${page.error} />
    <div class="table-wrap">
      <table class="data" data-testid="audit-results">
        <caption class="sr-only">Audit entries, newest first</caption>
        <thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Who</th><th scope="col">What</th></tr></thead>
        <tbody>
          ${page.events.map(
            (e) => html`<tr key=${e.seq}>
              <td>${e.seq}</td>
              <td><time datetime=${e.recorded_at}>${fullTime(e.recorded_at)}</time></td>
              <td><code>${e.subtype}</code></td>
              <td class=${e.outcome === 'success' ? '' : 'outcome-bad'}>${OUTCOME_LABEL[e.outcome] ?? e.outcome}${e.outcome_code ? html` <span class="muted">(${e.outcome_code})</span>` : null}</td>
              <td>${who(e.agent)}</td>
              <td>${e.entities.map((x) => html`<span class="entity">${x.kind} <code>${x.id}</code></span>`)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    </div>
    ${page.loading ? html`<${Spinner} />` : null}
    ${!page.loading && page.events.length === 0 ? html`<p class="muted">No entries match.</p>` : null}
    ${page.next !== null && page.next !== undefined && !page.loading
      ? html`<button type="button" class="secondary" onClick=${() => load(page.next)}>Older entries</button>`
      : null}
  </section>`;
}

function who(agent) {
  const parts = [];
  if (agent.user_id) {
    const name = S.names.get(agent.user_id);
    parts.push(name ? html`<span title=${agent.user_id}>${name}</span>` : html`<code>${agent.user_id}</code>`);
  }
  if (agent.role) parts.push(html` <span class="chip">${agent.role}</span>`);
  if (agent.system) parts.push(agent.system);
  if (agent.address) parts.push(html` <span class="muted">${agent.address}</span>`);
  return parts.length ? parts : html`<span class="muted">—</span>`;
}
