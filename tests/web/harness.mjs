// What every browser test needs: a real `haven serve --demo` on a fresh data directory, the
// demo accounts it prints, TOTP codes for them, Debian's headless Chromium, an axe-core check,
// screenshots, and a TCP proxy that can cut the network.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
export const ROOT = new URL('../../', import.meta.url).pathname;
export const ARTIFACTS = process.env.HAVEN_WEB_ARTIFACTS || join(ROOT, 'target/web-artifacts');
const BIN = process.env.HAVEN_BIN || join(ROOT, 'target/debug/haven');
const CHROMIUM = process.env.HAVEN_CHROMIUM || '/usr/bin/chromium';
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** A running Haven with its demo accounts: { base, accounts: Map(username → {password, secret}) }. */
export async function startHaven() {
  const dir = mkdtempSync(join(tmpdir(), 'haven-web-'));
  const child = spawn(BIN, ['serve', '--demo', '--bind', '127.0.0.1:0'], {
    env: { ...process.env, HAVEN_DATA_DIR: dir, HAVEN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const accounts = new Map();
  let out = '';
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`haven did not start:\n${out}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`haven exited with ${code}:\n${out}`)));
    child.stdout.on('data', (chunk) => {
      out += chunk;
      for (const line of out.split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f.length === 4 && /^[a-z.]+$/.test(f[0]) && f[0] !== 'USERNAME') {
          accounts.set(f[0], { username: f[0], role: f[1], password: f[2], secret: f[3] });
        }
        const m = line.match(/Haven is listening on (http:\/\/\S+)/);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      }
    });
  });
  // The demo enrolled every account with the code of this step: the next must be later.
  const seeded = Math.floor(Date.now() / 30_000);
  for (const a of accounts.values()) a.lastStep = seeded;
  return {
    base,
    accounts,
    account(name) {
      const a = accounts.get(name);
      if (!a) throw new Error(`no demo account ${name}`);
      return a;
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of s.replace(/[\s=]/g, '').toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 (SHA-1, 6 digits, 30 s) for one step. */
export function totpAt(secret, step) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32(secret)).update(msg).digest();
  const off = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, '0');
}

/**
 * A fresh TOTP code for an account: the server refuses a step it has seen, and accepts the
 * current step ± 1, so this waits when the account has used them all.
 */
export async function nextCode(account) {
  for (;;) {
    const now = Math.floor(Date.now() / 30_000);
    const step = Math.max(account.lastStep + 1, now);
    if (step <= now + 1 && (step > now || Date.now() % 30_000 < 25_000)) {
      account.lastStep = step;
      return totpAt(account.secret, step);
    }
    await sleep(1000);
  }
}

let browser = null;

/** Debian's Chromium, shared by the tests of one file. */
export async function launch() {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return browser;
}

export async function closeBrowser() {
  if (browser) await browser.close();
  browser = null;
}

/**
 * A new browser context (its own cookies and storage, like another person's computer) with
 * one page. Page errors and CSP violations are collected in `page.problems`.
 */
export async function newPage({ phone = false } = {}) {
  const b = await launch();
  const context = await b.newContext(
    phone
      ? { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }
      : { viewport: { width: 1280, height: 800 } },
  );
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource|status of 4\d\d/.test(m.text())) page.problems.push(`console: ${m.text()}`);
  });
  return page;
}

/** Signs in through the page as a person would: password, then a TOTP code. */
export async function signIn(page, base, account) {
  await page.goto(base + '/');
  await page.getByLabel('Username').fill(account.username);
  await page.getByLabel('Password').fill(account.password);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByLabel('Code').fill(await nextCode(account));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.getByRole('navigation', { name: 'Sections' }).waitFor();
}

/** Runs axe-core on the page; fails on any serious or critical violation. */
export async function checkA11y(page, screen) {
  // Evaluated over the DevTools protocol, which the page's CSP does not govern.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    const r = await globalThis.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    throw new Error(`axe-core on "${screen}": ${bad.length} serious or critical violation(s):\n${JSON.stringify(bad, null, 2)}`);
  }
  return result;
}

/** Saves a full-page screenshot as a test artefact. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * A TCP proxy in front of Haven: `cut()` drops every connection and refuses new ones (a
 * network failure as the browser sees it), `restore()` lets them through again.
 */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    cut() {
      up = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      up = true;
    },
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(r);
    }),
  };
}

/** Everything a test needs to assert the page ran nothing unexpected. */
export function assertNoProblems(page, assert) {
  assert.deepEqual(page.problems, [], 'the page logged errors or CSP violations');
}

/** Polls `fn` until it returns something truthy (or fails after `timeout` ms). */
export async function until(fn, timeout = 10_000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeout} ms: ${fn}`);
    await sleep(100);
  }
}

export { sleep };
