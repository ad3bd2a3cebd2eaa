// A message to a patient, end to end in real browsers: a clinician writes to the patient from a
// patient conversation; the text (through a Twilio stand-in) carries only a link; the patient
// opens it on a phone, proves who they are with date of birth and a texted code, reads the
// message and replies; the reply reaches the clinician live and the shared inbox.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, checkA11y, closeBrowser, newPage, screenshot, signIn, startHaven, until } from './harness.mjs';
import { ACCOUNT_SID, AUTH_TOKEN, startTwilio } from './twilio.mjs';

let haven;
let twilio;
let clinician;

before(async () => {
  haven = await startHaven();
  twilio = await startTwilio();
  // The administrator points the organisation at the stand-in.
  const admin = await newPage();
  await signIn(admin, haven.base, haven.account('admin'));
  const status = await admin.evaluate(async (settings) => {
    const r = await fetch('/api/v1/organization/sms-gateway', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(settings) });
    return r.status;
  }, { gateway: { provider: 'twilio', account_sid: ACCOUNT_SID, auth_token: AUTH_TOKEN, from: '+15550009999', api_base: twilio.base }, help_phone: '+15550100200' });
  assert.equal(status, 200);
  await admin.context().close();
  clinician = await newPage();
  await signIn(clinician, haven.base, haven.account('dr.okafor'));
});

after(async () => {
  await closeBrowser();
  if (twilio) await twilio.close();
  if (haven) await haven.stop();
});

const SECRET = 'Your potassium is back to normal (4.1). No change to your medicines.';

test('a clinician writes to a patient; the text carries only a link', async () => {
  await clinician.getByRole('button', { name: 'New' }).click();
  const dialog = clinician.getByRole('dialog', { name: 'New conversation' });
  await dialog.getByLabel('About a patient').check();
  await dialog.getByLabel('Patient MRN').fill('DEMO-1001');
  await dialog.getByRole('button', { name: 'Find' }).click();
  await dialog.getByRole('group', { name: 'Patient' }).getByText('Jordan Rivers').waitFor();
  await dialog.getByLabel('Search the directory').fill('patel');
  await dialog.getByRole('button', { name: /Priya Patel/ }).click();
  await dialog.getByRole('button', { name: 'Start' }).click();
  await clinician.getByRole('region', { name: 'Patient' }).waitFor();

  await clinician.getByLabel(/Send to the patient, Jordan Rivers/).check();
  await clinician.getByRole('textbox', { name: 'Message', exact: true }).fill(SECRET);
  // Urgent: not held for quiet hours, whatever the time of day the test runs.
  await clinician.getByLabel('Priority').selectOption('urgent');
  await clinician.getByRole('button', { name: 'Send' }).click();
  const shown = clinician.getByRole('log').locator('li.patient-msg').filter({ hasText: SECRET });
  await shown.waitFor({ timeout: 10_000 });
  await assert.doesNotReject(shown.getByText('Shared with the patient on the secure page').waitFor());
  await checkA11y(clinician, 'patient conversation with a message to the patient');
  await screenshot(clinician, '17-message-to-patient');

  const sms = await until(() => twilio.messages.find((m) => m.body.includes('/p/')), 20_000);
  assert.equal(sms.to, '+12025550143', 'to the phone on record');
  for (const phi of ['potassium', 'Jordan', 'Jordan Rivers', 'DEMO-1001', '1958']) assert.ok(!sms.body.includes(phi), `no PHI in the SMS: ${sms.body}`);
  assertNoProblems(clinician, assert);
});

test('the patient proves who they are, reads, and replies; the reply arrives live', async () => {
  const sms = twilio.messages.find((m) => m.body.includes('/p/'));
  const token = sms.body.split('/p/')[1].split(/\s/)[0];
  const patient = await newPage({ phone: true });
  await patient.goto(`${haven.base}/p/${token}`);
  assert.equal(await patient.getByText(SECRET).count(), 0, 'nothing before the identity check');
  await checkA11y(patient, 'secure page: identity check');
  await patient.getByRole('button', { name: 'Text me a code' }).click();
  await patient.getByLabel('Date of birth').waitFor();
  const codeText = await until(() => twilio.messages.find((m) => m !== sms && /\b\d{6}\b/.test(m.body)), 20_000);
  const code = codeText.body.match(/\b(\d{6})\b/)[1];
  await patient.getByLabel('Date of birth').fill('1958-03-14');
  await patient.getByLabel('6-digit code').fill(code);
  await patient.getByRole('button', { name: 'Confirm' }).click();
  await patient.getByText(SECRET).waitFor();
  await checkA11y(patient, 'secure page: thread');
  await patient.getByLabel('Reply').fill('Thank you! Should I still come in on Tuesday?');
  await patient.getByRole('button', { name: 'Send' }).click();
  await patient.getByText('Your reply was sent.').waitFor();
  await screenshot(patient, '18-secure-page-thread');

  const reply = clinician.getByRole('log').locator('li.from-patient').filter({ hasText: 'Should I still come in on Tuesday?' });
  await reply.waitFor({ timeout: 10_000 });
  assert.match(await reply.textContent(), /Jordan Rivers \(patient, secure page\)/);
  assertNoProblems(patient, assert);
  await patient.context().close();
});

test('the reply waits in the shared inbox until someone takes it and marks it done', async () => {
  await clinician.getByRole('link', { name: 'Patient inbox' }).click();
  const inbox = clinician.getByTestId('inbox');
  const row = inbox.getByRole('row').filter({ hasText: 'Jordan Rivers' });
  await row.waitFor();
  await checkA11y(clinician, 'patient inbox');
  await screenshot(clinician, '19-patient-inbox');
  await row.getByRole('button', { name: 'Assign to me' }).click();
  await row.getByText('You').waitFor();
  await row.getByRole('button', { name: 'Mark done' }).click();
  await clinician.getByText('No patient is waiting for an answer.').waitFor();
  await clinician.getByLabel('Show').selectOption('done');
  await inbox.getByRole('row').filter({ hasText: 'Jordan Rivers' }).getByText('Done').waitFor();
  assertNoProblems(clinician, assert);
});
