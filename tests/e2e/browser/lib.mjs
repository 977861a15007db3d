// lib.mjs - helpers for the browser tests of the web page (tests/e2e/browser/*.test.mjs).
//
// The page is served by jobwire itself (web-client/ is embedded in the binary), so every
// test drives the real binary on 127.0.0.1 with a fresh database, through the e2e harness
// (../lib/index.mjs: Server, tokens, the sim inbox), and a real headless
// Chromium (Debian's /usr/bin/chromium) through playwright-core.
//
// Environment (besides the harness's JOBWIRE_BIN, JW_MINT, DATABASE_URL):
//   JW_CHROMIUM   the Chromium binary (default /usr/bin/chromium)
//   JW_ARTIFACTS  where screenshots go (default <repo>/build/e2e-artifacts/browser)
//
// Conventions: every wait is bounded and says what it waited for; nothing asserts how
// fast anything happened; only processes started here are ever killed, by PID.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export * from '../lib/index.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../../..');
export const ARTIFACTS = process.env.JW_ARTIFACTS || path.join(REPO, 'build', 'e2e-artifacts', 'browser');
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1366, height: 900 };

const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',
];

// A headless Chromium. playwright-core gives it a fresh temporary profile (user-data dir)
// and kills it (by its PID) when the browser is closed or this process exits.
export async function launch() {
  const executablePath = process.env.JW_CHROMIUM || '/usr/bin/chromium';
  try {
    fs.accessSync(executablePath, fs.constants.X_OK);
  } catch {
    throw new Error(`${executablePath} is not an executable: install Debian's chromium (scripts/deps) or set JW_CHROMIUM`);
  }
  return chromium.launch({ executablePath, headless: true, args: ARGS, timeout: 60_000 });
}

// A page signed in through the sign-in link (#token=...), with every console error,
// page error and CSP violation recorded in page.problems.
export async function openPage(browser, server, token, { viewport = DESKTOP, hash = '' } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(20_000);
  await page.goto(`${server.base}/#token=${token}`, { timeout: 30_000 });
  if (hash) await page.evaluate((h) => { location.hash = h; }, hash);
  return page;
}

// Waits (bounded) until fn(arg) is truthy in the page; fails saying what it waited for.
export async function until(page, fn, arg, what, timeout = 20_000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({
      conn: document.getElementById('conn')?.textContent,
      status: document.getElementById('d-status')?.textContent,
      title: document.getElementById('detail-title')?.textContent,
    })).catch(() => ({}));
    throw new Error(`page: ${what} not seen within ${timeout} ms (${JSON.stringify(state)}): ${e.message.split('\n')[0]}`);
  }
}

// Waits until the element matching selector has text matching re; returns the text.
export async function waitText(page, selector, re, what, timeout = 20_000) {
  await until(page, ([s, src, flags]) => {
    const el = document.querySelector(s);
    return !!el && new RegExp(src, flags).test(el.textContent);
  }, [selector, re.source, re.flags], what || `${selector} ~ ${re}`, timeout);
  return page.locator(selector).first().textContent();
}

export async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// The job id of the page's detail view (#/job/<id>), waiting for one.
export async function detailJobId(page) {
  await until(page, () => /^#\/job\/[0-9a-f-]{36}$/.test(location.hash), null, 'a job opened (#/job/<id>)');
  return page.evaluate(() => location.hash.slice('#/job/'.length));
}

// Starts a job with the page's form; returns its id.
export async function startJob(page, { amount = 1500, count = 1 } = {}) {
  await page.fill('#start-amount', String(amount));
  await page.fill('#start-count', String(count));
  await page.click('#start-submit');
  return detailJobId(page);
}

// The job's status word and data-status on the detail view.
export async function jobStatus(page) {
  return page.evaluate(() => document.getElementById('d-status')?.dataset.status || null);
}

export async function waitStatus(page, status, timeout = 60_000) {
  await until(page, (s) => document.getElementById('d-status')?.dataset.status === s, status, `job status ${status}`, timeout);
}

// The ids of the OTP prompts the page shows.
export async function openPrompts(page) {
  return page.$$eval('form.otp[data-otp-id]', (fs) => fs.filter((f) => f.dataset.status === 'requested').map((f) => f.dataset.otpId));
}

// Types a code into the prompt of otp request id and presses Enter; waits for the page's
// answer in place and returns its text.
export async function typeCode(page, id, code, { paste = false } = {}) {
  const input = page.locator(`form.otp[data-otp-id="${id}"] input[name="otp"]`);
  await input.click();
  if (paste) {
    // A pasted SMS text: the page keeps the digits.
    await page.evaluate(([sel, text]) => {
      const el = document.querySelector(sel);
      const dt = new DataTransfer();
      dt.setData('text/plain', text);
      el.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, [`form.otp[data-otp-id="${id}"] input[name="otp"]`, `Your code is ${code}. Do not share it.`]);
  } else {
    await input.fill('');
    await input.pressSequentially(code);
  }
  await input.press('Enter');
  const msgSel = `form.otp[data-otp-id="${id}"] .otp-msg`;
  // The answer, or the prompt gone (accepted and the job moved on before we looked).
  await until(page, (sel) => {
    const el = document.querySelector(sel);
    return !el || (el.dataset.kind && el.dataset.kind !== 'info');
  }, msgSel, `the answer to the code typed for ${id}`, 30_000);
  return (await page.$$eval(msgSel, (els) => (els[0] ? els[0].textContent : '(prompt gone: accepted)')));
}

// Answers every OTP prompt the page shows with the sim inbox's code (or remembered[id],
// or remembered by step), typing it into the page, until the job is final. Returns the
// answers the page showed.
export async function driveJob(page, server, jobId, { timeout = 120_000, remembered = new Map(), paste = false } = {}) {
  const deadline = Date.now() + timeout;
  const answers = [];
  const typed = new Set();
  for (;;) {
    const status = await jobStatus(page);
    if (status === 'completed' || status === 'failed' || status === 'cancelled') return { status, answers };
    if (Date.now() > deadline) throw new Error(`job ${jobId}: not final within ${timeout} ms (page status ${status})`);
    const ids = (await openPrompts(page)).filter((id) => !typed.has(id));
    if (!ids.length) {
      await page.waitForTimeout(100);
      continue;
    }
    for (const id of ids) {
      let code = remembered.get(id);
      if (!code) {
        const msgs = (await server.inbox()).filter((m) => m.otp_request_id === id);
        if (!msgs.length) continue; // the SMS is not in the inbox yet
        code = msgs.reduce((a, b) => (b.seq > a.seq ? b : a)).code;
      }
      typed.add(id);
      answers.push(await typeCode(page, id, code, { paste }));
    }
  }
}

// serverWasDown: the test took this server down on purpose, so Chromium's own console line
// for each refused reconnect to its /ws is expected; nothing else is excused.
export function assertNoPageProblems(page, { serverWasDown = null } = {}) {
  let problems = page.problems;
  if (serverWasDown) {
    const refused = `console: WebSocket connection to '${serverWasDown.base.replace(/^http/, 'ws')}/ws' failed: `
      + 'Error in connection establishment: net::ERR_CONNECTION_REFUSED';
    problems = problems.filter((p) => p !== refused);
  }
  assert.deepEqual(problems, [], 'no console errors, page errors or CSP violations');
}

export { os };
