// Two clinicians, each in their own browser context, talk in real time: messages, priority,
// read receipts, edits, recall, attachments, "load earlier", a network drop, and a message
// that tries to inject markup.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertNoProblems, checkA11y, nextCode, closeBrowser, newPage, screenshot, signIn, startHaven, startProxy, sleep,
} from './harness.mjs';

let haven;
let proxy;
let okafor; // Dr Okafor's page, straight to Haven
let lindqvist; // Dr Lindqvist's page, through a proxy that can cut the network

before(async () => {
  haven = await startHaven();
  proxy = await startProxy(haven.base);
  okafor = await newPage();
  lindqvist = await newPage();
});

after(async () => {
  await closeBrowser();
  if (proxy) await proxy.close();
  if (haven) await haven.stop();
});

const log = (page) => page.getByRole('log');
const composer = (page) => page.getByRole('textbox', { name: 'Message', exact: true });
const message = (page, text) => log(page).locator('li.msg').filter({ hasText: text });

test('the sign-in screens are accessible and keyboard-only sign-in works', async () => {
  const a = haven.account('dr.okafor');
  await okafor.goto(haven.base + '/');
  await okafor.getByLabel('Username').waitFor();
  await checkA11y(okafor, 'sign-in');
  await screenshot(okafor, '01-sign-in');
  // The username field has focus: type, Tab, type, Enter — no pointer.
  await okafor.keyboard.type(a.username);
  await okafor.keyboard.press('Tab');
  await okafor.keyboard.type('not the password');
  await okafor.keyboard.press('Enter');
  await okafor.getByRole('alert').filter({ hasText: /incorrect|invalid|wrong/i }).waitFor();
  await okafor.getByLabel('Password').fill(a.password);
  await okafor.getByLabel('Password').press('Enter');
  await okafor.getByLabel('Code').waitFor();
  await checkA11y(okafor, 'two-step verification');
  await screenshot(okafor, '02-verify-code');
  await okafor.keyboard.type(await nextCode(a));
  await okafor.keyboard.press('Enter');
  await okafor.getByRole('navigation', { name: 'Sections' }).waitFor();
  assert.equal(await okafor.evaluate(() => document.cookie), '', 'the session cookie is HttpOnly');
  // From the top of the page, the first Tab reaches "Skip to content", which moves focus
  // past the header to the main area.
  await okafor.locator('body').focus();
  await okafor.keyboard.press('Tab');
  assert.equal(await okafor.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await okafor.keyboard.press('Enter');
  assert.equal(await okafor.evaluate(() => document.activeElement.id), 'main');
  assertNoProblems(okafor, assert);
});

test('two clinicians exchange messages in real time and see read receipts', async () => {
  await signIn(lindqvist, proxy.base, haven.account('dr.lindqvist'));
  await lindqvist.getByText('No conversations yet.').waitFor();

  // Dr Okafor finds Dr Lindqvist in the directory and starts a direct conversation.
  await okafor.getByRole('button', { name: 'New' }).click();
  const dialog = okafor.getByRole('dialog', { name: 'New conversation' });
  await dialog.getByLabel('Search the directory').fill('lindq');
  await dialog.getByRole('button', { name: /Erik Lindqvist/ }).click();
  await checkA11y(okafor, 'new conversation');
  await screenshot(okafor, '03-new-conversation');
  await dialog.getByRole('button', { name: 'Start' }).click();
  await okafor.getByRole('heading', { name: 'Erik Lindqvist' }).waitFor();

  await composer(okafor).fill('Potassium 6.1 on the 14:00 panel. Please review.');
  await okafor.getByLabel('Priority').selectOption('urgent');
  await okafor.getByRole('button', { name: 'Send' }).click();
  const sent = message(okafor, 'Potassium 6.1');
  await sent.waitFor();
  await assert.doesNotReject(sent.getByText('Urgent').waitFor());

  // It reaches Dr Lindqvist's list by itself, unread and marked urgent.
  const item = lindqvist.getByRole('link', { name: /Ngozi Okafor.*Urgent.*1 unread/ });
  await item.waitFor({ timeout: 10_000 });
  await checkA11y(lindqvist, 'conversation list');
  await screenshot(lindqvist, '04-conversation-list-unread');
  await item.click();
  await message(lindqvist, 'Potassium 6.1').waitFor();

  // Opening it marks it read: Dr Okafor's receipt turns to "Read" without a reload.
  await sent.getByTestId('receipts').getByText('Read', { exact: true }).waitFor({ timeout: 10_000 });
  await sent.getByTestId('receipts').locator('summary').click();
  await assert.doesNotReject(sent.getByText('Erik Lindqvist: read').waitFor());

  // The reply arrives live on the other side.
  await composer(lindqvist).fill('Seen. Repeat the panel and start a kayexalate order.');
  await composer(lindqvist).press('Enter');
  await message(okafor, 'Repeat the panel').waitFor({ timeout: 10_000 });
  await checkA11y(okafor, 'conversation');
  await screenshot(okafor, '05-conversation');
  assertNoProblems(okafor, assert);
  assertNoProblems(lindqvist, assert);
});

test('a message that carries markup is shown as text and runs nothing', async () => {
  const payload = '<img src=x onerror="window.__pwned=1;document.title=\'pwned\'"><script>window.__pwned=2</script><b>bold?</b>';
  await composer(lindqvist).fill(payload);
  await lindqvist.getByRole('button', { name: 'Send' }).click();
  const shown = message(okafor, 'onerror=');
  await shown.waitFor({ timeout: 10_000 });
  assert.equal(await shown.locator('p.text').textContent(), payload, 'the text is shown exactly as typed');
  assert.equal(await shown.locator('img, script, b').count(), 0, 'no element was made from the text');
  await sleep(500);
  assert.equal(await okafor.evaluate(() => globalThis.__pwned), undefined);
  assert.notEqual(await okafor.title(), 'pwned');
  assertNoProblems(okafor, assert);
});

test('own messages can be edited, with their history, and recalled', async () => {
  await composer(okafor).fill('Ward 4B, bed 12');
  await okafor.getByRole('button', { name: 'Send' }).click();
  const mine = message(okafor, 'Ward 4B');
  await mine.waitFor();
  await mine.getByRole('button', { name: 'Edit' }).click();
  // While it is being edited, the text is in the editor only.
  const editor = okafor.getByRole('textbox', { name: 'Edit message' });
  assert.equal(await editor.inputValue(), 'Ward 4B, bed 12');
  await editor.fill('Ward 4B, bed 14 (corrected)');
  await okafor.getByRole('button', { name: 'Save' }).click();
  // The other side sees the correction live, marked as edited, with the earlier version.
  const theirs = message(lindqvist, 'bed 14 (corrected)');
  await theirs.waitFor({ timeout: 10_000 });
  await theirs.getByRole('button', { name: 'edited' }).click();
  const history = lindqvist.getByRole('dialog', { name: 'Edit history' });
  await history.getByText('Ward 4B, bed 12', { exact: true }).waitFor();
  await history.getByRole('button', { name: 'Close' }).click();

  await message(okafor, 'bed 14').getByRole('button', { name: 'Recall' }).click();
  await okafor.getByRole('dialog', { name: 'Recall this message?' }).getByRole('button', { name: 'Recall' }).click();
  await log(lindqvist).getByText('This message was recalled by its sender.').waitFor({ timeout: 10_000 });
  assert.equal(await message(lindqvist, 'bed 14').count(), 0, 'the recalled text is gone from the other page');
});

test('attachments upload, preview as images, and download', async () => {
  // A real 2×2 PNG.
  const png = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==',
    'base64',
  );
  await composer(okafor).fill('ECG strip attached');
  await okafor.locator('input[type=file]').setInputFiles({ name: 'ecg.png', mimeType: 'image/png', buffer: png });
  await okafor.getByRole('list', { name: 'Files to send' }).getByText('ecg.png').waitFor();
  await okafor.getByRole('button', { name: 'Send' }).click();
  const theirs = message(lindqvist, 'ECG strip attached');
  await theirs.waitFor({ timeout: 10_000 });
  const img = theirs.getByRole('img', { name: 'Image: ecg.png' });
  await img.waitFor();
  assert.match(await img.getAttribute('src'), /^blob:/, 'previews come from memory, not a cacheable URL');
  assert.equal(await img.evaluate((el) => el.naturalWidth), 2);
  const [download] = await Promise.all([
    lindqvist.waitForEvent('download'),
    theirs.getByRole('link', { name: /ecg\.png/ }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'ecg.png');
  const { readFileSync } = await import('node:fs');
  assert.deepEqual(readFileSync(await download.path()), png);
  await screenshot(lindqvist, '06-attachment-preview');
});

test('after a network drop the client says so, reconnects by itself and catches up', async () => {
  proxy.cut();
  await lindqvist.getByTestId('connection').waitFor({ timeout: 15_000 });
  assert.match(await lindqvist.getByTestId('connection').textContent(), /Reconnecting|offline/);
  await screenshot(lindqvist, '07-connection-lost');
  // Said while Dr Lindqvist was cut off.
  await composer(okafor).fill('Sent while you were offline');
  await okafor.getByRole('button', { name: 'Send' }).click();
  await message(okafor, 'Sent while you were offline').waitFor();
  await sleep(1000);
  assert.equal(await message(lindqvist, 'Sent while you were offline').count(), 0);
  proxy.restore();
  await message(lindqvist, 'Sent while you were offline').waitFor({ timeout: 30_000 });
  await lindqvist.getByTestId('connection').waitFor({ state: 'detached', timeout: 15_000 });
  // The browser logged the failed connection attempts: expected here, and nothing else.
  assert.ok(lindqvist.problems.every((p) => /WebSocket connection to .* failed|ERR_CONNECTION|ERR_SOCKET/.test(p)), lindqvist.problems.join('\n'));
  lindqvist.problems.length = 0;
});

test('"load earlier" pages back through a long conversation', async () => {
  // Sixty more messages through the API, as another client of Dr Okafor's would send them.
  const convId = await okafor.evaluate(() => location.hash.split('/')[2]);
  await okafor.evaluate(async (id) => {
    for (let i = 1; i <= 60; i += 1) {
      const r = await fetch(`/api/v1/conversations/${id}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ idempotency_key: `bulk-${i}`, body: `Bulk note ${i}`, priority: 'routine' }),
      });
      if (!r.ok) throw new Error(`send ${i}: ${r.status} ${await r.text()}`);
    }
  }, convId);
  await message(lindqvist, 'Bulk note 60').waitFor({ timeout: 15_000 });
  // A fresh page opens the conversation with the newest page only.
  await lindqvist.reload();
  await message(lindqvist, 'Bulk note 60').waitFor({ timeout: 15_000 });
  assert.equal(await message(lindqvist, 'Potassium 6.1').count(), 0, 'the oldest messages are not loaded yet');
  await lindqvist.getByRole('button', { name: 'Load earlier messages' }).click();
  await message(lindqvist, 'Potassium 6.1').waitFor({ timeout: 10_000 });
  assert.equal(await lindqvist.getByRole('button', { name: 'Load earlier messages' }).count(), 0, 'nothing older is left');
  assertNoProblems(lindqvist, assert);
});

test('on a phone-sized screen the list and the conversation take turns', async () => {
  const phone = await newPage({ phone: true });
  await signIn(phone, haven.base, haven.account('nurse.patel'));
  await phone.getByRole('button', { name: 'New' }).click();
  const dialog = phone.getByRole('dialog', { name: 'New conversation' });
  await dialog.getByLabel('Search the directory').fill('okafor');
  await dialog.getByRole('button', { name: /Ngozi Okafor/ }).click();
  await dialog.getByRole('button', { name: 'Start' }).click();
  await composer(phone).fill('Bed 3 is asking for you');
  await phone.getByRole('button', { name: 'Send' }).click();
  await message(phone, 'Bed 3').waitFor();
  assert.equal(await phone.locator('.conv-list').isVisible(), false, 'the list gives way to the open conversation');
  await screenshot(phone, '08-phone-conversation');
  await phone.getByRole('link', { name: 'Back to conversations' }).click();
  await phone.locator('.conv-list').waitFor({ state: 'visible' });
  await checkA11y(phone, 'phone conversation list');
  await screenshot(phone, '09-phone-list');
  await phone.context().close();
});

test('a conversation about a patient shows the patient on both sides', async () => {
  await okafor.getByRole('button', { name: 'New' }).click();
  const dialog = okafor.getByRole('dialog', { name: 'New conversation' });
  await dialog.getByLabel('About a patient').check();
  await dialog.getByLabel('Patient MRN').fill('DEMO-9999');
  await dialog.getByRole('button', { name: 'Find' }).click();
  await dialog.getByText('No patient has this MRN in your organisation.').waitFor();
  await dialog.getByLabel('Patient MRN').fill('DEMO-1001');
  await dialog.getByRole('button', { name: 'Find' }).click();
  await dialog.getByRole('group', { name: 'Patient' }).getByText('Jordan Rivers').waitFor();
  await dialog.getByLabel('Title (optional)').fill('Hyperkalaemia follow-up');
  await dialog.getByLabel('Search the directory').fill('lindq');
  await dialog.getByRole('button', { name: /Erik Lindqvist/ }).click();
  await checkA11y(okafor, 'new patient conversation');
  await dialog.getByRole('button', { name: 'Start' }).click();
  const banner = okafor.getByRole('region', { name: 'Patient' });
  await banner.getByText('MRN DEMO-1001').waitFor();
  await composer(okafor).fill('Repeat potassium came back at 5.2.');
  await okafor.getByLabel('Priority').selectOption('stat');
  await okafor.getByRole('button', { name: 'Send' }).click();
  await message(okafor, 'Repeat potassium').waitFor();

  await lindqvist.goto(proxy.base + '/#/messages');
  const item = lindqvist.getByRole('link', { name: /Hyperkalaemia follow-up.*Jordan Rivers.*DEMO-1001.*STAT.*1 unread/ });
  await item.waitFor({ timeout: 10_000 });
  await item.click();
  await lindqvist.getByRole('region', { name: 'Patient' }).getByText('Jordan Rivers').waitFor();
  await screenshot(lindqvist, '09b-patient-conversation');
  assertNoProblems(okafor, assert);
});
