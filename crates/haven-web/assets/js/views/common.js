// Small shared pieces: modal dialogs (native <dialog>: focus is trapped and Escape closes),
// form fields with their labels and errors, and the confirmation dialog.

import { html, useEffect, useRef, useState } from '../lib.js';
import { errorText } from '../store.js';

let nextId = 0;

/** A stable id for label/aria wiring. */
export function useId(prefix) {
  const ref = useRef(null);
  if (ref.current === null) {
    nextId += 1;
    ref.current = `${prefix}-${nextId}`;
  }
  return ref.current;
}

/** A modal dialog; `onClose` runs on Escape or the close button. */
export function Dialog({ title, onClose, children, wide = false }) {
  const ref = useRef(null);
  const titleId = useId('dlg');
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d && d.open && d.close();
  }, []);
  return html`<dialog ref=${ref} class=${wide ? 'dialog wide' : 'dialog'} aria-labelledby=${titleId}
      onCancel=${(e) => { e.preventDefault(); onClose(); }}>
    <div class="dialog-head">
      <h2 id=${titleId}>${title}</h2>
      <button type="button" class="icon-button" aria-label="Close" onClick=${onClose}>×</button>
    </div>
    ${children}
  </dialog>`;
}

/** A labelled input. */
export function Field({ label, hint, error, id, children }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<p class="hint" id=${id + '-hint'}>${hint}</p>` : null}
    ${error ? html`<p class="field-error" role="alert">${error}</p>` : null}
  </div>`;
}

/** An error line under a form. */
export function FormError({ error }) {
  return error ? html`<p class="form-error" role="alert">${errorText(error)}</p>` : null;
}

/** Asks before doing something that cannot be undone. */
export function Confirm({ title, text, action, danger = true, onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${title} onClose=${onClose}>
    <p>${text}</p>
    <${FormError} error=${error} />
    <div class="actions">
      <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
      <button type="button" class=${danger ? 'danger' : 'primary'} disabled=${busy} onClick=${go}>${action}</button>
    </div>
  <//>`;
}

/** A busy indicator with a text for screen readers. */
export function Spinner({ label = 'Loading…' }) {
  return html`<p class="spinner" role="status"><span class="spin" aria-hidden="true"></span>${label}</p>`;
}
