// The web client in Firefox (Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core):
// a clinician in Firefox and one in Chromium sign in, start a conversation and talk in real
// time; markup in a message stays text in Firefox too.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { ARTIFACTS, closeBrowser, newPage, nextCode, signIn, startHaven } from './harness.mjs';

const FIREFOX = process.env.HAVEN_FIREFOX || '/usr/bin/firefox-esr';

let haven;
let firefox;
let ff; // Dr Okafor in Firefox
let chromium; // Dr Lindqvist in Chromium
const problems = [];

before(async () => {
  haven = await startHaven();
  firefox = await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX, headless: true });
  ff = await firefox.newPage();
  await ff.setViewport({ width: 1280, height: 800 });
  ff.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  ff.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  chromium = await newPage();
});

after(async () => {
  if (firefox) await firefox.close();
  await closeBrowser();
  if (haven) await haven.stop();
});

const text = (page, needle, timeout = 10_000) =>
  page.waitForFunction((n) => document.body.innerText.includes(n), { timeout }, needle);

test('a clinician signs in with Firefox and talks with one on Chromium in real time', async () => {
  const a = haven.account('dr.okafor');
  await ff.goto(haven.base + '/');
  await ff.waitForSelector('#username');
  await ff.type('#username', a.username);
  await ff.type('#password', a.password);
  await ff.keyboard.press('Enter');
  await ff.waitForSelector('#code');
  await ff.type('#code', await nextCode(a));
  await ff.keyboard.press('Enter');
  await ff.waitForSelector('nav[aria-label="Sections"]');

  await signIn(chromium, haven.base, haven.account('dr.lindqvist'));

  await ff.locator('::-p-text(New)').click();
  await ff.waitForSelector('dialog[open]');
  const search = await ff.waitForSelector('dialog[open] input[type="search"]');
  await search.type('lindq');
  await ff.waitForSelector('dialog[open] button.pick');
  await ff.click('dialog[open] button.pick');
  await ff.locator('dialog[open] ::-p-text(Start)').click();
  await ff.waitForSelector('#composer-text');
  await ff.type('#composer-text', 'Hello from Firefox');
  await ff.keyboard.press('Enter');
  await text(ff, 'Hello from Firefox');

  // Chromium gets it live, answers, and Firefox gets the answer live.
  await chromium.getByRole('link', { name: /Ngozi Okafor/ }).click({ timeout: 10_000 });
  await chromium.getByText('Hello from Firefox').waitFor();
  await chromium.getByRole('textbox', { name: 'Message', exact: true }).fill('Hello back from Chromium');
  await chromium.getByRole('button', { name: 'Send' }).click();
  await text(ff, 'Hello back from Chromium');
  mkdirSync(ARTIFACTS, { recursive: true });
  await ff.screenshot({ path: join(ARTIFACTS, '20-firefox-conversation.png') });
  assert.deepEqual(problems, []);
});

test('markup in a message is text in Firefox too', async () => {
  const payload = '<img src=x onerror="window.__pwned=1"><b>bold?</b>';
  await chromium.getByRole('textbox', { name: 'Message', exact: true }).fill(payload);
  await chromium.getByRole('button', { name: 'Send' }).click();
  await text(ff, 'onerror=');
  const found = await ff.evaluate(() => ({
    elements: document.querySelectorAll('[role="log"] img, [role="log"] b').length,
    pwned: globalThis.__pwned,
    shown: [...document.querySelectorAll('[role="log"] p.text')].map((p) => p.textContent),
  }));
  assert.equal(found.elements, 0);
  assert.equal(found.pwned, undefined);
  assert.ok(found.shown.includes(payload), JSON.stringify(found.shown));
  assert.deepEqual(problems, []);
});
