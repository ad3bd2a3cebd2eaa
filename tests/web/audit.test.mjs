// The compliance officer's audit screen: verification of the whole log against its signed
// checkpoints, filtered search, paging; and the sections a role may not open stay hidden.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, checkA11y, closeBrowser, newPage, screenshot, signIn, startHaven, until } from './harness.mjs';

let haven;
let page;

before(async () => {
  haven = await startHaven();
  page = await newPage();
  await signIn(page, haven.base, haven.account('compliance.chen'));
});

after(async () => {
  await closeBrowser();
  if (haven) await haven.stop();
});

test('a compliance officer sees only the audit section', async () => {
  const nav = page.getByRole('navigation', { name: 'Sections' });
  assert.deepEqual(await nav.getByRole('link').allTextContents(), ['Audit']);
  // A hand-typed route to another section falls back to what the role allows.
  await page.goto(haven.base + '/#/users');
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  const status = await page.evaluate(async () => {
    const body = JSON.stringify({ username: 'x.y', display_name: 'X Y', roles: ['org_admin'], password: 'long-enough-passphrase-42' });
    return (await fetch('/api/v1/users', { method: 'POST', headers: { 'content-type': 'application/json' }, body })).status;
  });
  assert.equal(status, 404, 'the server refuses what the screen hides');
});

test('the log verifies against its signed checkpoint', async () => {
  const panel = page.getByTestId('verification');
  const status = panel.getByRole('status').filter({ hasText: /Verified|FAILED/ });
  await status.waitFor({ timeout: 30_000 });
  assert.match(await status.textContent(), /^\s*Verified: all \d+ entries chain to \d+ signed checkpoint/);
  assert.match(await panel.locator('code.hash').first().textContent(), /^[0-9a-f]{64}$/);
  await checkA11y(page, 'audit');
  await screenshot(page, '16-audit');
});

test('search filters by action and outcome, and pages back', async () => {
  const results = page.getByTestId('audit-results');
  await page.getByLabel('Action').fill('login-password');
  await page.getByRole('button', { name: 'Search' }).click();
  const actions = await until(async () => {
    const a = await results.locator('tbody td:nth-child(3)').allTextContents();
    return a.length > 0 && a.every((x) => x === 'login-password') ? a : null;
  });
  assert.ok(actions.length >= 6, `every demo sign-in is there (${actions.length})`);

  await page.getByLabel('Action').fill('');
  await page.getByLabel('Outcome').selectOption('failure');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByText('No entries match.').waitFor();

  // Everything, fifty at a time. Searches are audited too: a few more make the log longer
  // than a page.
  await page.evaluate(async () => {
    for (let i = 0; i < 15; i += 1) await fetch('/api/v1/audit/events?limit=1');
  });
  await page.getByRole('button', { name: 'Clear' }).click();
  await results.locator('tbody tr').nth(49).waitFor();
  const first = await results.locator('tbody tr').count();
  assert.equal(first, 50);
  await page.getByRole('button', { name: 'Older entries' }).click();
  await results.locator('tbody tr').nth(50).waitFor();
  const seqs = (await results.locator('tbody td:nth-child(1)').allTextContents()).map(Number);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first, without gaps or repeats');
  assert.equal(new Set(seqs).size, seqs.length);
  assertNoProblems(page, assert);
});
