// The shared inbox of patient threads: every patient conversation where the patient wrote
// (on the secure page or by text), open until someone marks it done. Staff take one ("Assign
// to me") so that two people do not answer the same patient.

import { html, useEffect, useState } from '../lib.js';
import { get, put } from '../api.js';
import { S, toast, useStore } from '../store.js';
import { FormError, Spinner, useId } from './common.js';
import { shortTime } from '../format.js';

export function Inbox() {
  useStore();
  const [status, setStatus] = useState('open');
  const [state, setState] = useState({ items: [], loading: true, error: null });
  const filterId = useId('inbox-status');
  const load = async () => {
    setState((x) => ({ ...x, loading: true, error: null }));
    try {
      const q = status ? `?status=${status}` : '';
      setState({ items: await get(`/api/v1/inbox${q}`), loading: false, error: null });
    } catch (err) {
      setState((x) => ({ ...x, loading: false, error: err }));
    }
  };
  useEffect(() => {
    load();
  }, [status]);
  const change = async (item, assignee, next) => {
    try {
      const updated = await put(`/api/v1/inbox/${item.conversation_id}`, { assignee_id: assignee, status: next });
      setState((x) => ({
        ...x,
        items: x.items
          .map((i) => (i.conversation_id === updated.conversation_id ? updated : i))
          .filter((i) => !status || i.status === status),
      }));
      toast(next === 'done' ? 'Marked done.' : 'Assigned.');
    } catch (err) {
      toast(err.message, 'error');
    }
  };
  const who = (id) => (id === S.me.id ? 'You' : S.names.get(id) || 'A colleague');
  return html`<main id="main" class="page" tabindex="-1">
    <div class="page-head">
      <h1>Patient inbox</h1>
      <div class="field inline">
        <label for=${filterId}>Show</label>
        <select id=${filterId} value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
          <option value="open">Open</option><option value="done">Done</option><option value="">All</option>
        </select>
      </div>
    </div>
    <${FormError} error=${state.error} />
    <div class="table-wrap">
      <table class="data" data-testid="inbox">
        <caption class="sr-only">Patient threads where the patient wrote, newest first</caption>
        <thead><tr><th scope="col">Patient</th><th scope="col">Last message</th><th scope="col">Handled by</th><th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>
          ${state.items.map(
            (i) => html`<tr key=${i.conversation_id}>
              <th scope="row"><a href=${'#/messages/' + i.conversation_id}>${i.patient.name}</a> <span class="muted">MRN ${i.patient.mrn}</span></th>
              <td><time datetime=${i.last_from_patient_at}>${shortTime(i.last_from_patient_at)}</time></td>
              <td>${i.assignee_id ? who(i.assignee_id) : html`<span class="muted">Nobody yet</span>`}</td>
              <td>${i.status === 'open' ? 'Open' : 'Done'}</td>
              <td class="row-actions">
                ${i.assignee_id !== S.me.id
                  ? html`<button type="button" class="secondary small" onClick=${() => change(i, S.me.id, 'open')}>Assign to me</button>`
                  : null}
                ${i.status === 'open'
                  ? html`<button type="button" class="secondary small" onClick=${() => change(i, i.assignee_id ?? S.me.id, 'done')}>Mark done</button>`
                  : html`<button type="button" class="secondary small" onClick=${() => change(i, i.assignee_id ?? null, 'open')}>Reopen</button>`}
              </td>
            </tr>`,
          )}
        </tbody>
      </table>
    </div>
    ${state.loading ? html`<${Spinner} />` : null}
    ${!state.loading && state.items.length === 0 ? html`<p class="muted">${status === 'open' ? 'No patient is waiting for an answer.' : 'Nothing here.'}</p>` : null}
  </main>`;
}
