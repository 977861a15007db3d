// OTP brute force stops at the attempt limit (docs/api.md "POST /api/otp/{id}", limits:
// "OTP attempts: 3 per request"; DESIGN.md: "A wrong OTP increments attempts_count and
// asks again until the limit; the limit or the timeout fails the step (retry policy
// decides whether a fresh OTP is requested)"), on every channel a code can come in by:
// POST /api/otp/{id}, POST /api/jobs/otp-received and the socket's otp.submit.
//
//   - three wrong codes: 422 / otp.result with attempts_left 2, 1, 0; the request is
//     failed with attempts_count 3;
//   - after that every guess is refused (409 / otp_not_waiting) - the right code too;
//   - what follows, as documented: the step's retry policy (logins: 3 attempts) asks for
//     a fresh code under a new request id with a new SMS; the old code does not pass
//     there either; the new one does. When the step has no attempt left the job fails;
//   - guesses sent all at once do not get past the limit: one is judged at a time;
//   - a payment OTP guessed wrong to its limit charges nothing; the fresh code pays once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, Server, nextOtp, uuid, wrongCode } from './lib.mjs';

let server;
before(async () => {
  // The attempt limit per OTP request is what is tested here, not the per-user budget of
  // submissions (quotas.test.mjs), which would stop the guesses first.
  server = new Server({ name: 'sec_otp', sim: 'latency_ms=20,voucher_polls=1,poll_after_ms=10', args: ['--otp-rate-per-user', '100000', '--job-rate-per-user', '100000'] });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

// One guess on one channel: {judged, ok, attemptsLeft, refused, raw}.
async function guess(channel, otpId, value, { token, client }) {
  if (channel === 'ws') {
    const m = await client.request({ type: 'otp.submit', otp_request_id: otpId, value }, { timeout: 20_000 });
    if (m.type === 'otp.result') {
      if (!m.ok) assert.equal(m.error, 'invalid_otp', `ws verdict: ${JSON.stringify(m)}`);
      return { judged: true, ok: m.ok, attemptsLeft: m.attempts_left, raw: m };
    }
    assert.equal(m.type, 'error', JSON.stringify(m));
    assert.equal(m.code, 'otp_not_waiting', `ws refusal: ${JSON.stringify(m)}`);
    return { judged: false, refused: true, raw: m };
  }
  const r = channel === 'http'
    ? await server.api('POST', `/api/otp/${otpId}`, { token, body: { otp: value } })
    : await server.api('POST', '/api/jobs/otp-received', { token, body: { otpRequestId: otpId, otpValue: value } });
  const ok = channel === 'http' ? 'ok' : 'success';
  if (r.status === 200 || r.status === 422) {
    assert.equal(r.json[ok], r.status === 200, `${channel}: ${r.text}`);
    if (r.status === 422) assert.equal(r.json.error, 'invalid_otp', `${channel}: ${r.text}`);
    return { judged: true, ok: r.status === 200, attemptsLeft: r.json.attempts_left, raw: r.json };
  }
  assert.equal(r.status, 409, `${channel}: ${r.status} ${r.text}`);
  assert.equal(r.json.error.code, 'conflict');
  return { judged: false, refused: true, raw: r.json };
}

async function otpRow(jobId, otpId, pred, what) {
  const j = await server.waitJob(jobId, (x) => pred(x.otp_requests.find((o) => o.id === otpId)), { what });
  return j.otp_requests.find((o) => o.id === otpId);
}

const isLogin = (type) => (o) => o.otp_type === type;

// Three wrong codes on `channels` (one each, in order), then the checks after the limit.
async function exhaust(jobId, otp, code, channels, ctx) {
  for (let i = 0; i < 3; i++) {
    const g = await guess(channels[i % channels.length], otp.id, wrongCode(code, i + 1), ctx);
    assert.ok(g.judged, `wrong code ${i + 1}: judged, not refused: ${JSON.stringify(g.raw)}`);
    assert.equal(g.ok, false);
    assert.equal(g.attemptsLeft, 2 - i, `attempts_left after wrong code ${i + 1}`);
  }
  const row = await otpRow(jobId, otp.id, (o) => o.status === 'failed', 'the request failed');
  assert.equal(row.attempts_count, 3);
  assert.equal(row.max_attempts, 3);
  for (const ch of ['http', 'orig', 'ws']) {
    for (const [what, v] of [['a fourth wrong code', wrongCode(code, 7)], ['the right code', code]]) {
      const g = await guess(ch, otp.id, v, ctx);
      assert.ok(g.refused, `${ch}, ${what} after the limit: refused, got ${JSON.stringify(g.raw)}`);
    }
  }
  const after1 = (await server.getJob(jobId)).otp_requests.find((o) => o.id === otp.id);
  assert.equal(after1.status, 'failed', 'refusals changed nothing');
  assert.equal(after1.attempts_count, 3, 'refusals used no attempt');
}

// After the limit: a fresh request for the same step, with its own SMS; the old code
// does not pass there; the fresh one does.
async function freshCodeFollows(jobId, old, oldSms, ctx, channel) {
  const { otp: fresh, sms } = await nextOtp(server, jobId, { seen: new Set([old.id]), pred: (o) => o.job_step_id === old.job_step_id });
  assert.notEqual(fresh.id, old.id, 'a new request id');
  assert.equal(fresh.otp_type, old.otp_type);
  assert.equal(fresh.attempts_count, 0);
  assert.ok(sms.seq > oldSms.seq, 'a new SMS');
  const step = (await server.getJob(jobId)).steps.find((s) => s.id === old.job_step_id);
  assert.equal(step.attempt, 2, 'the step\'s second attempt asked for it');
  if (sms.code !== oldSms.code) { // equal with odds 1e-6: nothing to show then
    const g = await guess(channel, fresh.id, oldSms.code, ctx);
    assert.ok(g.judged && !g.ok, `the old code on the fresh request is wrong: ${JSON.stringify(g.raw)}`);
    assert.equal(g.attemptsLeft, 2);
  }
  const g = await guess(channel, fresh.id, sms.code, ctx);
  assert.ok(g.judged && g.ok, `the fresh code passes: ${JSON.stringify(g.raw)}`);
  return fresh;
}

test('HTTP: 3 wrong codes, then every guess refused (the right code too); a fresh code follows', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token);
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('gyftr_login') });
  const client = await Client.open(server, u.token, { label: 'owner' });
  const ctx = { token: u.token, client };
  await exhaust(job, otp, sms.code, ['http', 'http', 'http'], ctx);
  await freshCodeFollows(job, otp, sms, ctx, 'http');
  await client.closeAndWait();
});

test('otp-received (the original route): the same limit', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token);
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('amazon_login') });
  const client = await Client.open(server, u.token, { label: 'owner' });
  const ctx = { token: u.token, client };
  await exhaust(job, otp, sms.code, ['orig'], ctx);
  await freshCodeFollows(job, otp, sms, ctx, 'orig');
  await client.closeAndWait();
});

test('socket: 3 wrong otp.submit, then otp_not_waiting for every guess; the socket sees the request fail and a new one', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token);
  const client = await Client.open(server, u.token, { label: 'owner' });
  assert.equal((await client.subscribe(job)).type, 'snapshot');
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('gyftr_login') });
  const ctx = { token: u.token, client };
  await exhaust(job, otp, sms.code, ['ws'], ctx);
  const fresh = await freshCodeFollows(job, otp, sms, ctx, 'ws');
  await client.waitFor(() => client.view(job).otps.get(fresh.id)?.status === 'verified', { what: 'the fresh request verified on the socket' });
  const rows = client.view(job).deltas.filter((d) => d.table === 'otp_requests' && d.row.id === otp.id).map((d) => d.row);
  assert.deepEqual(rows.map((r) => r.attempts_count).filter((n, i, a) => a.indexOf(n) === i), [0, 1, 2, 3], 'attempts_count went 1, 2, 3');
  assert.equal(rows.at(-1).status, 'failed');
  assert.ok(!client.view(job).deltas.some((d) => d.table === 'otp_requests' && d.row.id === otp.id && d.row.status === 'verified'), 'the failed request never became verified');
  await client.closeAndWait();
});

test('the step\'s last attempt: 3 requests x 3 wrong codes over all three channels fail the job; 9 judged guesses in all', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token);
  const client = await Client.open(server, u.token, { label: 'owner' });
  const ctx = { token: u.token, client };
  const channels = ['http', 'ws', 'orig'];
  const seen = new Set();
  let judged = 0;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const { otp, sms } = await nextOtp(server, job, { seen, pred: isLogin('gyftr_login') });
    seen.add(otp.id);
    for (let i = 0; i < 3; i++) {
      const g = await guess(channels[(attempt + i) % 3], otp.id, wrongCode(sms.code, i + 1), ctx);
      assert.ok(g.judged && !g.ok, JSON.stringify(g.raw));
      judged++;
    }
  }
  const j = await server.waitJob(job, (x) => x.job.status === 'failed', { what: 'failed' });
  assert.equal(judged, 9);
  const step = j.steps.find((s) => s.step_name === 'gyftr_login');
  assert.equal(step.status, 'failed');
  assert.equal(step.attempt, 3);
  assert.match(j.job.error_message || '', /OTP entered wrong 3 times/, 'the job says why');
  const gyftr = j.otp_requests.filter((o) => o.otp_type === 'gyftr_login');
  assert.deepEqual(gyftr.map((o) => [o.status, o.attempts_count]), [['failed', 3], ['failed', 3], ['failed', 3]]);
  assert.ok(!j.otp_requests.some((o) => o.status === 'requested' || o.status === 'received'), 'nothing waits for a code');
  // Nothing is judged any more, on any request of the job, with any value.
  const inbox = (await server.inbox()).filter((m) => m.job_id === job);
  for (const o of j.otp_requests) {
    for (const m of inbox.slice(-3)) {
      const g = await guess(channels[judged++ % 3], o.id, m.code, ctx);
      assert.ok(g.refused, `after the job failed, ${o.id} takes no code: ${JSON.stringify(g.raw)}`);
    }
  }
  await client.closeAndWait();
});

test('guesses sent all at once over HTTP and two sockets: exactly 3 judged, every other one refused', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token);
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('gyftr_login') });
  const clients = [await Client.open(server, u.token, { label: 's1' }), await Client.open(server, u.token, { label: 's2' })];
  let verdicts = [];
  let refusals = 0;
  let k = 0;
  for (let burst = 0; burst < 20; burst++) {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => {
      const ch = ['http', 'orig', 'ws'][i % 3];
      return guess(ch, otp.id, wrongCode(sms.code, ++k), { token: u.token, client: clients[i % 2] });
    }));
    verdicts = verdicts.concat(results.filter((g) => g.judged));
    refusals += results.filter((g) => g.refused).length;
    if (results.every((g) => g.refused)) break;
  }
  assert.ok(verdicts.every((g) => !g.ok), 'no wrong code passed');
  assert.equal(verdicts.length, 3, `judged guesses: ${verdicts.length} (refused ${refusals})`);
  assert.deepEqual(verdicts.map((g) => g.attemptsLeft).sort(), [0, 1, 2]);
  const row = await otpRow(job, otp.id, (o) => o.status === 'failed', 'the request failed');
  assert.equal(row.attempts_count, 3);
  for (const ch of ['http', 'ws']) {
    const g = await guess(ch, otp.id, sms.code, { token: u.token, client: clients[0] });
    assert.ok(g.refused, `${ch}: the right code after the burst is refused`);
  }
  for (const c of clients) await c.closeAndWait();
});

test('a payment OTP guessed wrong to its limit charges nothing; the fresh code pays exactly once', { timeout: 90_000 }, async () => {
  const u = server.user();
  const { job_id: job } = await server.createJob(u.token, { count: 1 });
  // Log in (the two login codes, right), then the payment asks for its code.
  await server.driveHttp(job, u.token, (j) => j.otp_requests.some((o) => o.otp_type === 'payment'));
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('payment') });
  const client = await Client.open(server, u.token, { label: 'owner' });
  const ctx = { token: u.token, client };
  await exhaust(job, otp, sms.code, ['http', 'ws', 'orig'], ctx);
  const charged = () => server.logText().split('\n').filter((l) => l.includes('sim: charged') && l.includes(`job=${job}`)).length;
  assert.equal(charged(), 0, 'no charge for a payment whose codes were all wrong');
  await freshCodeFollows(job, otp, sms, ctx, 'http');
  await server.driveHttp(job, u.token, (j) => j.job.status === 'completed');
  assert.equal(charged(), 1, 'one charge for the one transaction');
  await client.closeAndWait();
});

test('guessing on a request of another user or an unknown id uses nobody\'s attempts', { timeout: 60_000 }, async () => {
  const a = server.user();
  const b = server.user();
  const { job_id: job } = await server.createJob(a.token);
  const { otp, sms } = await nextOtp(server, job, { pred: isLogin('gyftr_login') });
  const bc = await Client.open(server, b.token, { label: 'B' });
  for (let i = 1; i <= 5; i++) {
    const r = await server.api('POST', `/api/otp/${otp.id}`, { token: b.token, body: { otp: wrongCode(sms.code, i) } });
    assert.equal(r.status, 404, r.text);
    const m = await bc.request({ type: 'otp.submit', otp_request_id: otp.id, value: wrongCode(sms.code, i) });
    assert.equal(m.code, 'not_found', JSON.stringify(m));
    const x = await server.api('POST', `/api/otp/${uuid()}`, { token: a.token, body: { otp: sms.code } });
    assert.equal(x.status, 404);
  }
  const row = (await server.getJob(job)).otp_requests.find((o) => o.id === otp.id);
  assert.equal(row.status, 'requested');
  assert.equal(row.attempts_count, 0);
  const g = await guess('http', otp.id, sms.code, { token: a.token });
  assert.ok(g.judged && g.ok, 'the owner\'s right code still passes with every attempt left');
  assert.equal(g.attemptsLeft, 3);
  await bc.closeAndWait();
});
