// The server killed (SIGKILL) and restarted mid-job, on the same database, port and
// secrets: the open page shows "Reconnecting", resumes (since = its last seq) by itself,
// and ends in the committed final state without a reload. The payment code the person
// received before the crash is refused after it - the sim lives inside jobwire and accepts
// only a code it has outstanding (docs/providers.md "OTP codes across a restart") - and the
// page shows the refusal, then the fresh prompt, whose code completes the job.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DESKTOP, Server, assertNoPageProblems, driveJob, launch, openPage, openPrompts, shot,
  startJob, typeCode, until, waitText,
} from './lib.mjs';

let server;
let browser;
before(async () => {
  // Voucher polls keep each transaction busy for a moment, so the crash lands mid-job.
  server = new Server({ name: 'br_restart', sim: 'latency_ms=30,voucher_polls=2,poll_after_ms=100' });
  await server.start();
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('kill -9 and restart mid-job: "Reconnecting", then back in sync and the right final state, no reload', { timeout: 240_000 }, async (t) => {
  const u = server.user();
  const page = await openPage(browser, server, u.token, { viewport: DESKTOP });
  await waitText(page, '#conn', /^Live$/, 'live');
  const id = await startJob(page, { amount: 1200, count: 3 });
  await page.evaluate(() => { window.__sameDocument = 'yes'; }); // gone if the page reloads

  // Answer the login codes and the first payment's, then stop at the second payment's prompt.
  const deadline = Date.now() + 90_000;
  let target = null;
  const typed = new Set();
  while (!target) {
    assert.ok(Date.now() < deadline, 'the second payment\'s prompt within 90 s');
    for (const otp of (await openPrompts(page)).filter((x) => !typed.has(x))) {
      const title = await page.textContent(`form.otp[data-otp-id="${otp}"] h3`);
      if (/Payment code \(transaction 2\)/.test(title)) {
        target = otp;
        break;
      }
      const { code } = await server.waitCode(otp);
      typed.add(otp);
      assert.match(await typeCode(page, otp, code), /accepted/i);
    }
    if (!target) await page.waitForTimeout(100);
  }
  const { code } = await server.waitCode(target); // the SMS the person got before the crash
  await waitText(page, '#d-done', /^1 of 3 transactions done$/);

  const port = server.port;
  await server.kill9();
  await waitText(page, '#conn', /Reconnecting/, 'the page says it is reconnecting', 20_000);
  assert.equal(await page.getAttribute('#conn', 'data-state'), 'reconnecting');
  await shot(page, 'restart-reconnecting-desktop');

  await server.start({ port });
  // The page reconnects by itself and catches up.
  await until(page, () => ['in-sync', 'live'].includes(document.getElementById('conn').dataset.state), null, 'back in sync', 60_000);
  t.diagnostic(`after the restart the page says: ${await page.textContent('#conn')}`);

  // The code received before the crash, typed after it into the re-armed prompt: the
  // restarted sim has no record of it, so the page shows the refusal; a new prompt follows.
  await until(page, () => document.querySelectorAll('form.otp[data-status="requested"]').length > 0, null, 'the payment prompt after the restart', 30_000);
  const prompts = await openPrompts(page);
  assert.equal(prompts[0], target, 'the same request is re-armed after the restart');
  const answer = await typeCode(page, prompts[0], code);
  t.diagnostic(`the page's answer to the code from before the crash: ${answer}`);
  await server.waitJob(id, (j) => j.otp_requests.some((o) => o.id === target && o.status === 'failed'), { token: u.token, what: 'the code from before the crash refused' });

  const { status } = await driveJob(page, server, id, { timeout: 120_000 });
  assert.equal(status, 'completed');
  await waitText(page, '#d-done', /^3 of 3 transactions done$/);
  assert.equal(await page.evaluate(() => window.__sameDocument), 'yes', 'the page was never reloaded');
  const committed = await server.waitJob(id, (j) => j.job.status === 'completed', { token: u.token });
  assert.equal(committed.job.completed_transactions, 3);
  for (let i = 1; i <= 3; i++) {
    assert.equal(await page.locator(`#d-steps .group.tx[data-tx="${i}"] .step[data-status="completed"]`).count(), 4, `transaction ${i}`);
  }
  // What the page's client holds is the committed state, row for row.
  const seen = await page.evaluate(() => document.getElementById('d-progress').value);
  assert.equal(seen, 100);
  await shot(page, 'restart-completed-desktop');
  // The console may show the refused reconnects while the server was down.
  assertNoPageProblems(page, { serverWasDown: server });
  await page.context().close();
});
