// An OTP left to expire (jobwire with --otp-timeout-login 2 and --retry-scale 0.01): the
// page says the code expired, and shows where the job ends (its error, partial completion
// and a Retry button when it failed), without a reload.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DESKTOP, PHONE, Server, assertNoPageProblems, launch, openPage, shot, startJob, until, waitText,
} from './lib.mjs';

let server;
let browser;
before(async () => {
  server = new Server({
    name: 'br_expiry',
    sim: 'latency_ms=20,voucher_polls=1,poll_after_ms=20,otp=gyftr_login',
    args: ['--otp-timeout-login', '2'],
  });
  await server.start();
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('a login code left to expire: the page says it expired and shows the outcome', { timeout: 120_000 }, async (t) => {
  const u = server.user();
  const page = await openPage(browser, server, u.token, { viewport: DESKTOP });
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 900, count: 2 });
  await until(page, () => document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'the Gyftr login prompt');
  await waitText(page, 'form.otp h3', /Gyftr login code/);
  // Nobody types: the code expires after 2 s. The page says so, in words.
  await waitText(page, '#d-otp-notices', /Gyftr login code: the code expired before it was entered/, 'the expiry message', 30_000);
  await shot(page, 'otp-expired-desktop');

  // Wherever the retry policy takes the job, the page ends in the committed state.
  await until(page, () => ['failed', 'completed', 'cancelled'].includes(document.getElementById('d-status')?.dataset.status)
    || document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'a final status or a fresh prompt', 60_000);
  const committed = await server.waitJob(id, (j) => ['failed', 'completed', 'cancelled'].includes(j.job.status)
    || j.otp_requests.some((o) => o.status === 'requested'), { token: u.token, what: 'settled' });
  t.diagnostic(`after the expiry: ${committed.job.status}`);
  if (committed.job.status === 'failed') {
    await until(page, () => document.getElementById('d-status')?.dataset.status === 'failed', null, 'Failed');
    assert.match(await page.textContent('#d-error'), /The job failed: .+ 0 of 2 transactions done/);
    assert.equal(await page.isVisible('#d-retry'), true, 'a Retry button');
    assert.match(await page.textContent('#d-timeline'), /Gyftr login code expired/);
    await page.setViewportSize(PHONE);
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, 'job-failed-expired-phone');
    // Retry resumes it: the page shows it running again (and a fresh code prompt).
    await page.click('#d-retry');
    await until(page, () => ['validating', 'processing', 'initiated'].includes(document.getElementById('d-status')?.dataset.status),
      null, 'running again after Retry');
    await until(page, () => document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'a fresh prompt after Retry', 30_000);
  } else {
    // A fresh code was requested: the new prompt says the previous one expired.
    await waitText(page, '#d-otp-notices', /expired.*A new code has been sent/, 'the expiry and the new code');
  }
  assertNoPageProblems(page);
  await page.context().close();
});
