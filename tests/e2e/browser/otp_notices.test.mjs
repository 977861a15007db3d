// What the page says about codes that ended without being accepted (#d-otp-notices): one
// line per step, its latest; a step asked again does not stack its history; a code nobody
// tried, whose step stopped with the job, is not "not accepted".
//
// The Gyftr login code is answered wrong until the step gives up (every request of it uses
// its attempts; wrong codes are sent through the API, as a second device would), while the
// Amazon login code waits untouched. The job then fails, and the Amazon request ends with
// it, never tried.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DESKTOP, Server, assertNoPageProblems, launch, openPage, shot, startJob, until, waitStatus,
} from './lib.mjs';

let server;
let browser;
before(async () => {
  server = new Server({
    name: 'br_otp_notices',
    sim: 'latency_ms=20,voucher_polls=0,otp=gyftr_login+amazon_login',
    args: ['--retry-scale', '0.01'],
  });
  await server.start();
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

const notices = (page) => page.$$eval('#d-otp-notices p', (ps) => ps.map((p) => p.textContent));

test('codes not accepted: one notice per step, and none for a code its stopped step never used', { timeout: 120_000 }, async (t) => {
  const u = server.user();
  const page = await openPage(browser, server, u.token, { viewport: DESKTOP });
  await until(page, () => document.getElementById('conn')?.textContent === 'Live', null, 'live');
  const id = await startJob(page, { amount: 700, count: 1 });

  // Every Gyftr login request gets wrong codes until it has none left, until the job ends.
  let requests = 0;
  let sawRenewed = false;
  for (const deadline = Date.now() + 90_000; Date.now() < deadline;) {
    const j = await server.getJob(id, u.token);
    if (j.job.status === 'failed') break;
    assert.notEqual(j.job.status, 'completed', 'precondition: wrong codes fail the job');
    const gyftr = j.steps.find((s) => s.step_name === 'gyftr_login');
    const open = j.otp_requests.find((o) => o.job_step_id === gyftr.id && o.status === 'requested');
    if (!open) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    requests++;
    if (requests >= 3) {
      // The third request is open, two ended before it: the page shows one notice for the
      // step (its latest), with the new code, not one per ended request.
      await until(page, (oid) => !!document.querySelector(`form.otp[data-otp-id="${oid}"]`)
        && /A new code has been sent/.test(document.getElementById('d-otp-notices')?.textContent || ''), open.id, 'the third prompt');
      const shown = await notices(page);
      const gyftrLines = shown.filter((l) => l.startsWith('Gyftr login code'));
      assert.equal(gyftrLines.length, 1, `one Gyftr notice while its third code waits: ${JSON.stringify(shown)}`);
      assert.match(gyftrLines[0], /the code was not accepted \(3 attempts used\)\. A new code has been sent\./);
      sawRenewed = true;
    }
    for (let a = 0; a < 3; a++) {
      const r = await server.api('POST', `/api/otp/${open.id}`, { token: u.token, body: { otp: '000001' } });
      if (r.status !== 422) break; // out of attempts, or the request ended meanwhile
    }
  }
  assert.ok(requests >= 3, `precondition: the step asked for a code three times (${requests})`);
  assert.ok(sawRenewed);
  await waitStatus(page, 'failed');
  const failed = await server.getJob(id, u.token);
  const amazon = failed.steps.find((s) => s.step_name === 'amazon_login');
  const amazonOtps = failed.otp_requests.filter((o) => o.job_step_id === amazon.id);
  t.diagnostic(`amazon_login ${amazon.status}; its OTP requests: ${amazonOtps.map((o) => `${o.status}/${o.attempts_count}`).join(' ')}`);
  assert.ok(amazonOtps.length >= 1 && amazonOtps.every((o) => !o.attempts_count), 'precondition: the Amazon code was never tried');

  await until(page, () => !document.querySelector('form.otp'), null, 'no prompt left');
  const shown = await notices(page);
  assert.equal(shown.filter((l) => l.startsWith('Gyftr login code')).length, 1, JSON.stringify(shown));
  assert.deepEqual(shown.filter((l) => /Amazon/.test(l)), [], `no notice for the Amazon code nobody tried: ${JSON.stringify(shown)}`);
  assert.equal(shown.some((l) => /0 attempts used/.test(l)), false, JSON.stringify(shown));
  await shot(page, 'otp-notices-failed-desktop');
  assertNoPageProblems(page);
  await page.context().close();
});
