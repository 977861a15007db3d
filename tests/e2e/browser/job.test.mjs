// The web page in a real browser (headless Chromium), served by jobwire itself: sign in
// through the #token= link, start jobs with the form, answer every OTP by typing the code
// from the sim inbox, watch the job to its end; a wrong code then the right one; a job of
// 6 transactions shows 6; cancel; another user's job is "not found".
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DESKTOP, PHONE, Server, assertNoPageProblems, driveJob, launch, openPage, openPrompts, shot,
  startJob, typeCode, until, waitStatus, waitText,
} from './lib.mjs';

let server;
let browser;
let alice;
before(async () => {
  server = new Server({ name: 'br_job', sim: 'latency_ms=30,voucher_polls=1,poll_after_ms=30' });
  await server.start();
  browser = await launch();
  alice = server.user();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('the page is served by jobwire with its CSP, and the sign-in link signs in and leaves the address bar', async () => {
  const r = await fetch(`${server.base}/`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/html/);
  assert.match(r.headers.get('content-security-policy') || '', /script-src 'self'/);
  await r.arrayBuffer();

  const page = await openPage(browser, server, alice.token);
  await waitText(page, '#conn', /^Live$/, 'the connection live');
  assert.doesNotMatch(page.url(), /token/, 'the token is gone from the address bar');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('jobwire.token')), alice.token, 'kept in sessionStorage');
  // Reloading keeps the session (sessionStorage), without the link.
  await page.reload();
  await waitText(page, '#conn', /^Live$/, 'live after a reload');
  assert.equal(await page.isVisible('#start-form'), true);
  // Form validation before the server: 0 and 51 are refused with a message.
  await page.fill('#start-amount', '0');
  await page.fill('#start-count', '51');
  await page.click('#start-submit');
  await waitText(page, '#start-amount-error', /from 1 to 1,000,000/);
  await waitText(page, '#start-count-error', /from 1 to 50/);
  assert.equal(await page.evaluate(() => location.hash), '', 'no job was started');
  assertNoPageProblems(page);
  await page.context().close();
});

test('a 4-transaction job: every OTP typed into the page, live progress to Completed, 4 of 4 done', { timeout: 240_000 }, async () => {
  const page = await openPage(browser, server, alice.token);
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 1500, count: 4 });

  // 4 transactions x 4 steps, following transaction_count, before any of them started.
  await until(page, () => document.querySelectorAll('#d-steps .group.tx').length === 4, null, '4 transaction sections');
  assert.equal(await page.locator('#d-steps .group.tx[data-tx="4"] .step').count(), 4);

  // The first prompt: announced, focused, with the masked phone, a countdown, attempts left.
  await until(page, () => document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'an OTP prompt');
  const first = (await openPrompts(page))[0];
  await until(page, () => !!document.activeElement?.closest('form.otp'), null, 'the OTP input focused');
  await waitText(page, '#announce', /code needed/i, 'the prompt announced (aria-live)');
  const meta = await page.textContent(`form.otp[data-otp-id="${first}"] .otp-meta`);
  assert.match(meta, /\*{6}4821/, 'the masked phone hint');
  assert.match(meta, /expires in \d+:\d\d/, 'a countdown');
  assert.match(meta, /3 attempts left/);
  const input = page.locator(`form.otp[data-otp-id="${first}"] input`);
  assert.equal(await input.getAttribute('inputmode'), 'numeric');
  assert.equal(await input.getAttribute('autocomplete'), 'one-time-code');
  await shot(page, 'job-otp-desktop');

  // The list shows the job live too.
  await until(page, (jid) => !!document.querySelector(`#job-list li[data-job-id="${jid}"]`), id, 'the job in the list');

  const { status, answers } = await driveJob(page, server, id, { paste: true });
  assert.equal(status, 'completed', `answers: ${answers.join(' | ')}`);
  for (const a of answers) assert.match(a, /accepted/i);
  await waitText(page, '#d-done', /^4 of 4 transactions done$/);
  assert.equal(await page.getAttribute('#d-progress', 'value'), '100');
  for (let i = 1; i <= 4; i++) {
    assert.equal(await page.locator(`#d-steps .group.tx[data-tx="${i}"] .step[data-status="completed"]`).count(), 4, `transaction ${i}: 4 steps done`);
  }
  assert.equal(await page.locator('#d-steps .group[data-group="validation"] .step[data-status="completed"]').count(), 3);
  assert.equal(await page.isVisible('#d-cancel'), false, 'no Cancel on a finished job');
  assert.equal(await page.isVisible('#d-retry'), false, 'no Retry on a completed job');
  await until(page, (jid) => document.querySelector(`#job-list li[data-job-id="${jid}"]`)?.dataset.status === 'completed', id, 'the list says completed');
  assert.match(await page.textContent('#d-timeline'), /Job completed/);
  assert.match(await page.textContent('#d-timeline-count'), /\d+ events/);
  // The page's state is the committed one.
  const committed = await server.getJob(id, alice.token);
  assert.equal(committed.job.status, 'completed');
  assert.equal(committed.job.completed_transactions, 4);
  await shot(page, 'job-completed-desktop');
  await page.setViewportSize(PHONE);
  await shot(page, 'job-completed-phone');
  // Nothing wider than the phone's screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at 390 px (${overflow} px too wide)`);
  assertNoPageProblems(page);
  await page.context().close();
});

test('a wrong code, then the right one: the page shows the attempts left; Cancel stops the job', { timeout: 120_000 }, async () => {
  const bob = server.user(); // a new user: his logins ask for OTPs
  const page = await openPage(browser, server, bob.token, { viewport: PHONE });
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 700, count: 2 });
  await until(page, () => document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'an OTP prompt');
  const otp = (await openPrompts(page))[0];
  const { code } = await server.waitCode(otp);
  const wrong = code === '000000' ? '111111' : '000000';
  const answer = await typeCode(page, otp, wrong);
  assert.match(answer, /Wrong code\. 2 attempts left\./);
  await waitText(page, `form.otp[data-otp-id="${otp}"] .attempts`, /^2 attempts left$/, 'the prompt counts the attempt');
  await until(page, (oid) => document.activeElement === document.querySelector(`form.otp[data-otp-id="${oid}"] input`), otp, 'focus back in the input');
  await shot(page, 'otp-wrong-phone');
  const right = await typeCode(page, otp, code);
  assert.match(right, /accepted/i);

  // Cancel while the job runs: the page shows Cancelled without a reload.
  await page.click('#d-cancel');
  await waitStatus(page, 'cancelled', 30_000);
  assert.equal(await page.isVisible('#d-cancel'), false);
  const committed = await server.getJob(id, bob.token);
  assert.equal(committed.job.status, 'cancelled');
  assertNoPageProblems(page);
  await page.context().close();
});

test('a job of 6 transactions shows 6, each with its 4 steps, to the end', { timeout: 240_000 }, async () => {
  const page = await openPage(browser, server, alice.token);
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 250, count: 6 });
  await until(page, () => document.querySelectorAll('#d-steps .group.tx').length === 6, null, '6 transaction sections');
  const { status } = await driveJob(page, server, id);
  assert.equal(status, 'completed');
  await waitText(page, '#d-done', /^6 of 6 transactions done$/);
  assert.equal(await page.locator('#d-steps .group.tx').count(), 6);
  assert.equal(await page.locator('#d-steps .group.tx .step[data-status="completed"]').count(), 24);
  assert.match(await page.textContent('#d-steps .group.tx[data-tx="6"] h4'), /Transaction 6 of 6/);
  assertNoPageProblems(page);
  await page.context().close();
});

test('another user\'s job, and an unknown one, show "not found"', { timeout: 60_000 }, async () => {
  const { job_id: aliceJob } = await server.createJob(alice.token, { count: 1 });
  const eve = server.user();
  const page = await openPage(browser, server, eve.token, { viewport: PHONE });
  await waitText(page, '#conn', /^Live$/, 'live');
  await page.evaluate((id) => { location.hash = `#/job/${id}`; }, aliceJob);
  await waitText(page, '#detail-title', /^Job not found$/, 'not found for another user\'s job');
  assert.equal(await page.isVisible('#d-missing'), true);
  assert.equal(await page.isVisible('#d-body'), false, 'nothing of the job is shown');
  assert.equal(await page.locator(`#job-list li[data-job-id="${aliceJob}"]`).count(), 0, 'not in her list');
  await shot(page, 'not-found-phone');
  await page.evaluate(() => { location.hash = '#/job/00000000-0000-4000-8000-000000000000'; });
  await waitText(page, '#detail-title', /^Job not found$/, 'not found for an unknown id');
  // A link that names no job, then an unknown job: each view says its own words (the
  // second used to keep the first's "job_id must be a UUID string").
  await page.evaluate(() => { location.hash = '#/job/not-a-uuid'; });
  await waitText(page, '#d-missing p', /^This link does not name a job/, 'a malformed id');
  assert.equal(await page.textContent('#detail-title'), 'Job not found');
  await page.evaluate(() => { location.hash = '#/job/00000000-0000-4000-8000-000000000001'; });
  await waitText(page, '#d-missing p', /^There is no job with this id, or it is not yours/, 'an unknown id after a malformed one');
  assertNoPageProblems(page);
  await page.context().close();
});
