// Haven's web client: starts the app, follows the URL hash, and connects once signed in.

import { html, render } from './lib.js';
import { can, toast, update, errorText } from './store.js';
import { boot, onEnter } from './session.js';
import { startMessaging } from './messaging.js';
import { App, readRoute } from './views/shell.js';

function follow() {
  readRoute();
  update((s) => {
    if (s.route.view !== 'messages' || !s.route.id) s.open = null;
  });
}

addEventListener('hashchange', follow);
readRoute();

onEnter(() => {
  if (can('messaging_use')) {
    startMessaging().catch((err) => toast(errorText(err), 'error'));
  }
});

const root = document.getElementById('root');
root.replaceChildren();
render(html`<${App} />`, root);
boot();
