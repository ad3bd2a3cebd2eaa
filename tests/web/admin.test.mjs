// The admin console and what it does to people's sessions: a new user enrols MFA with the QR
// code's key and gets recovery codes; roles change; a deactivated user's open page stops
// working at once; the policy screen changes limits; and a short inactivity timeout warns,
// then signs the user out and clears the page and the browser's storage.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertNoProblems, checkA11y, closeBrowser, newPage, screenshot, signIn, startHaven, totpAt,
} from './harness.mjs';

let haven;
let admin;

before(async () => {
  haven = await startHaven();
  admin = await newPage();
  await signIn(admin, haven.base, haven.account('admin'));
});

after(async () => {
  await closeBrowser();
  if (haven) await haven.stop();
});

const row = (page, name) => page.getByRole('row').filter({ has: page.getByRole('rowheader', { name }) });

test('an admin adds a user, who signs in and enrols an authenticator with the QR code', async () => {
  await admin.getByRole('link', { name: 'Users' }).click();
  await row(admin, 'Ngozi Okafor').waitFor();
  await checkA11y(admin, 'users');
  await screenshot(admin, '10-users');

  await admin.getByRole('button', { name: 'Add user' }).click();
  const dialog = admin.getByRole('dialog', { name: 'Add user' });
  await dialog.getByLabel('Full name').fill('Samuel Adeyemi');
  await dialog.getByLabel('Username').fill('dr.adeyemi');
  await dialog.getByLabel('Clinician').check();
  await checkA11y(admin, 'add user');
  await dialog.getByRole('button', { name: 'Add user' }).click();
  const done = admin.getByRole('dialog', { name: 'User added' });
  const password = (await done.getByTestId('new-password').textContent()).trim();
  assert.ok(password.length >= 20, 'a strong first password was generated');
  await done.getByRole('button', { name: 'Done' }).click();
  await row(admin, 'Samuel Adeyemi').waitFor();

  // The new clinician's first sign-in: the organisation requires MFA, so enrolment comes first.
  const user = await newPage();
  await user.goto(haven.base + '/');
  await user.getByLabel('Username').fill('dr.adeyemi');
  await user.getByLabel('Password').fill(password);
  await user.getByRole('button', { name: 'Continue' }).click();
  await user.getByRole('heading', { name: 'Set up two-step verification' }).waitFor();
  const qr = user.getByRole('img', { name: /QR code/ });
  await qr.waitFor();
  assert.ok((await qr.evaluate((img) => img.complete && img.naturalWidth)) > 0, 'the QR code renders');
  await checkA11y(user, 'MFA enrolment');
  await screenshot(user, '11-mfa-enrolment');
  await user.getByText("Can't scan it? Type this key instead").click();
  const secret = (await user.getByTestId('totp-secret').textContent()).replace(/\s/g, '');
  await user.getByLabel('Code').fill('000000');
  await user.getByRole('button', { name: 'Turn on' }).click();
  await user.getByRole('alert').waitFor();
  await user.getByLabel('Code').fill(totpAt(secret, Math.floor(Date.now() / 30_000)));
  await user.getByRole('button', { name: 'Turn on' }).click();

  await user.getByRole('heading', { name: 'Save your recovery codes' }).waitFor();
  const codes = await user.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem').allTextContents();
  assert.ok(codes.length >= 8, `recovery codes are shown (${codes.length})`);
  await checkA11y(user, 'recovery codes');
  await screenshot(user, '12-recovery-codes');
  const go = user.getByRole('button', { name: 'Continue to Haven' });
  assert.equal(await go.isDisabled(), true, 'continuing needs the codes saved first');
  await user.getByLabel('I have saved these codes').check();
  await go.click();
  await user.getByRole('heading', { name: 'Messages' }).waitFor();
  assertNoProblems(user, assert);
  await user.context().close();

  // The table shows the enrolment.
  await admin.reload();
  await row(admin, 'Samuel Adeyemi').getByText('Enrolled').waitFor();
});

test('an admin changes roles and resets MFA', async () => {
  const r = row(admin, 'Samuel Adeyemi');
  await r.getByRole('button', { name: 'Roles of Samuel Adeyemi' }).click();
  const dialog = admin.getByRole('dialog', { name: 'Roles of Samuel Adeyemi' });
  await dialog.getByLabel('Nurse').check();
  await dialog.getByRole('button', { name: 'Save roles' }).click();
  await r.getByText('Nurse').waitFor();

  await r.getByRole('button', { name: 'Reset MFA of Samuel Adeyemi' }).click();
  await admin.getByRole('dialog', { name: 'Reset MFA' }).getByRole('button', { name: 'Reset MFA' }).click();
  await r.getByText('Not enrolled').waitFor();
});

test("deactivating a user ends the session they have open", async () => {
  const nurse = await newPage();
  await signIn(nurse, haven.base, haven.account('nurse.patel'));
  await nurse.getByRole('heading', { name: 'Messages' }).waitFor();

  await row(admin, 'Priya Patel').getByRole('button', { name: 'Deactivate Priya Patel' }).click();
  const confirm = admin.getByRole('dialog', { name: 'Deactivate user' });
  await checkA11y(admin, 'deactivate confirmation');
  await confirm.getByRole('button', { name: 'Deactivate' }).click();
  await row(admin, 'Priya Patel').getByText('Deactivated').waitFor();

  // The nurse's page learns it over its socket and is wiped back to the sign-in screen.
  await nurse.getByText('Your session has ended').waitFor({ timeout: 15_000 });
  assert.equal(await nurse.getByRole('navigation', { name: 'Sections' }).count(), 0);
  const status = await nurse.evaluate(async () => (await fetch('/api/v1/me')).status);
  assert.equal(status, 401, 'the old session no longer works');
  await nurse.getByLabel('Username').fill('nurse.patel');
  await nurse.getByLabel('Password').fill(haven.account('nurse.patel').password);
  await nurse.getByRole('button', { name: 'Continue' }).click();
  await nurse.getByRole('alert').waitFor();
  assert.equal(await nurse.getByLabel('Code').count(), 0, 'a deactivated user cannot sign in again');
  await nurse.context().close();
});

test('the policy screen changes attachment limits', async () => {
  await admin.getByRole('link', { name: 'Policy' }).click();
  await admin.getByRole('heading', { name: 'Policy' }).waitFor();
  await checkA11y(admin, 'policy');
  await screenshot(admin, '13-policy');
  await admin.getByLabel('Largest attachment (MiB)').fill('5');
  await admin.getByLabel('Plain text').uncheck();
  await admin.getByRole('button', { name: 'Save policy' }).click();
  await admin.getByText('Policy saved').waitFor();
  const org = await admin.evaluate(async () => (await fetch('/api/v1/organization')).json());
  assert.equal(org.policy.max_attachment_bytes, 5 * 1024 * 1024);
  assert.deepEqual([...org.policy.attachment_kinds].sort(), ['image', 'office', 'pdf']);
  // A value the server refuses comes back as a readable error, and nothing changes.
  await admin.getByLabel('Sign out after inactivity (minutes)').fill('600');
  await admin.locator('form').evaluate((f) => f.setAttribute('novalidate', ''));
  await admin.getByRole('button', { name: 'Save policy' }).click();
  await admin.getByRole('alert').waitFor();
  const after = await admin.evaluate(async () => (await fetch('/api/v1/organization')).json());
  assert.equal(after.policy.inactivity_timeout_seconds, org.policy.inactivity_timeout_seconds);
});

test('inactivity: a warning, then automatic sign-out that clears the page and storage', async () => {
  await admin.getByLabel('Sign out after inactivity (minutes)').fill('0.5');
  await admin.getByRole('button', { name: 'Save policy' }).click();
  await admin.getByText('Policy saved').waitFor();
  // The admin signs out by hand (and is not left to time out with everyone else).
  await admin.locator('.user-menu summary').click();
  await admin.getByRole('button', { name: 'Sign out', exact: true }).click();
  await admin.getByText('You have signed out.').waitFor();
  assertNoProblems(admin, assert);

  const user = await newPage();
  await signIn(user, haven.base, haven.account('dr.lindqvist'));
  await user.getByRole('heading', { name: 'Messages' }).waitFor();
  await user.evaluate(() => {
    sessionStorage.setItem('probe', 'x');
    localStorage.setItem('probe', 'x');
  });
  const cookies = await user.context().cookies();

  // With a 30-second timeout the warning shows for the last ten seconds or so.
  const warning = user.getByRole('dialog', { name: 'Are you still there?' });
  await warning.waitFor({ timeout: 30_000 });
  await checkA11y(user, 'inactivity warning');
  await screenshot(user, '14-inactivity-warning');
  await user.getByText('You were signed out after a period of inactivity').waitFor({ timeout: 30_000 });
  await screenshot(user, '15-signed-out');
  assert.equal(await user.getByRole('heading', { name: 'Messages' }).count(), 0, 'nothing of the app is left on the page');
  assert.deepEqual(
    await user.evaluate(() => [sessionStorage.length, localStorage.length]),
    [0, 0],
    'browser storage is cleared',
  );
  // The server ended the session too: the old cookie no longer works.
  const other = await (await newPage()).context();
  await other.addCookies(cookies);
  const res = await other.request.get(haven.base + '/api/v1/me');
  assert.equal(res.status(), 401);
  await other.close();
  assertNoProblems(user, assert);
  await user.context().close();
});
