// Partial completion and Retry in the page: a job whose second transaction fails for good
// (the sim, seeded, spares the first redeem and fails the second) shows Failed, its error,
// "1 of 3 transactions done" and a Retry button. The server is then restarted without the
// failure on the same database and port; the page reconnects by itself, and Retry takes
// the job to "3 of 3 transactions done" live, without a reload, the finished transaction's
// steps untouched.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DESKTOP, Server, assertNoPageProblems, launch, openPage, shot, startJob, until, waitStatus, waitText,
} from './lib.mjs';

let server;
let browser;
before(async () => {
  server = new Server({
    name: 'br_retry',
    sim: 'latency_ms=20,otp=none,voucher_polls=0,fail_rate=0.5,seed=6,fail_steps=redeem_amazon_vouchers,fail_retryable=0',
  });
  await server.start();
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('a job failed at transaction 2 of 3: partial completion, Retry, and it finishes live', { timeout: 180_000 }, async () => {
  const u = server.user();
  const page = await openPage(browser, server, u.token, { viewport: DESKTOP });
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 500, count: 3 });
  await waitStatus(page, 'failed');
  const failed = await server.getJob(id, u.token);
  assert.equal(failed.job.status, 'failed');
  assert.equal(failed.job.completed_transactions, 1, 'precondition: the seeded sim fails transaction 2');
  assert.match(await page.textContent('#d-error'), /The job failed: redeem_amazon_vouchers failed: simulated failure\. 1 of 3 transactions done/);
  assert.equal(await page.isVisible('#d-retry'), true, 'a Retry button');
  // Instants, not strings: rows read back from PostgreSQL print +00:00 where the engine writes Z.
  const firstTx = failed.steps.filter((s) => s.transaction_index === 1).map((s) => [s.id, s.attempt, Date.parse(s.updated_at)]);
  await shot(page, 'job-failed-partial-desktop');

  // The same server without the failure, on the same address: the page follows by itself.
  await server.kill9();
  server.sim = 'latency_ms=20,otp=none,voucher_polls=0';
  await server.start({ port: server.port });
  await waitText(page, '#conn', /back in sync/i, 'back in sync', 30_000);
  await page.click('#d-retry');
  await waitText(page, '#d-summary', /3 of 3 transactions done/, 'the job finished after Retry', 60_000);
  await waitStatus(page, 'completed');
  const done = await server.getJob(id, u.token);
  assert.equal(done.job.status, 'completed');
  assert.equal(done.job.retry_count, 1);
  assert.deepEqual(done.steps.filter((s) => s.transaction_index === 1).map((s) => [s.id, s.attempt, Date.parse(s.updated_at)]), firstTx,
    'the finished transaction was not run again');
  assert.equal(await page.isVisible('#d-retry'), false, 'no Retry once completed');
  await shot(page, 'job-retried-desktop');
  // While the server was down, the page's reconnects were refused: Chromium logs each one.
  assertNoPageProblems(page, { serverWasDown: server });
});
