// Authorization (docs/protocol.md "Authorization"): a user subscribes to and answers OTPs
// of their own jobs only; another user's job or OTP request gets the same answer as one
// that does not exist (error not_found), so ids cannot be probed; the admin key may do
// both for any job.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, Server, assertCleanStream, newRef, settle, uuid } from '../lib/index.mjs';

let server;
let userA;
let userB;
let jobA; // A's job, waiting for its two login OTPs
before(async () => {
  server = new Server({ name: 'authz', sim: 'latency_ms=10,voucher_polls=1,poll_after_ms=10' });
  await server.start();
  userA = server.user();
  userB = server.user();
  jobA = (await server.createJob(userA.token, { count: 1 })).job_id;
  await server.waitPaused(jobA, { otpPred: () => true });
});
after(async () => {
  if (server) await server.stop();
});

// An answer with the ids in it replaced, so two answers about different ids compare.
const masked = (m, ...ids) => {
  let s = JSON.stringify({ ...m, ref: undefined });
  for (const id of ids) s = s.split(id).join('<id>');
  return JSON.parse(s);
};

// The not-found answer to otp.submit: docs/protocol.md lists it as `error` not_found; an
// otp.result {ok:false, error:"not_found"} is taken as the same answer.
const isOtpNotFound = (m) => (m.type === 'error' && m.code === 'not_found')
  || (m.type === 'otp.result' && m.ok === false && m.error === 'not_found');

test('5a. user B cannot subscribe to user A\'s job: error not_found, the same answer as a random uuid', { timeout: 60_000 }, async () => {
  const b = await Client.open(server, userB.token, { label: 'B' });
  const foreign = await b.subscribe(jobA, { ref: 'sa' });
  const random = uuid();
  const missing = await b.subscribe(random, { ref: 'sr' });
  assert.equal(foreign.type, 'error', `B subscribing to A's job: ${JSON.stringify(foreign)}`);
  assert.equal(foreign.code, 'not_found');
  assert.equal(foreign.ref, 'sa');
  assert.equal(missing.type, 'error');
  assert.equal(missing.code, 'not_found');
  assert.deepEqual(masked(foreign, jobA), masked(missing, random), 'A\'s job and no job answer alike');
  await b.ping();
  assert.deepEqual(b.jobMessages(jobA).filter((m) => m.type !== 'error'), [], 'B got nothing of A\'s job');
  // Nor does anything of it reach B later, when the job changes.
  await b.closeAndWait();
  assertCleanStream(b);
});

test('5b. user B cannot answer A\'s OTP: not_found like an unknown request, and no attempt is used', { timeout: 60_000 }, async () => {
  const j = await server.getJob(jobA, userA.token);
  const otp = j.otp_requests.find((o) => o.status === 'requested');
  assert.ok(otp, 'A\'s job waits for an OTP');
  const { code } = await server.waitCode(otp.id);

  const b = await Client.open(server, userB.token, { label: 'B' });
  const foreign = await b.request({ type: 'otp.submit', otp_request_id: otp.id, value: code });
  const random = uuid();
  const missing = await b.request({ type: 'otp.submit', otp_request_id: random, value: code });
  assert.ok(isOtpNotFound(foreign), `B submitting A's OTP: ${JSON.stringify(foreign)}`);
  assert.ok(isOtpNotFound(missing), `an unknown OTP request: ${JSON.stringify(missing)}`);
  assert.deepEqual(masked(foreign, otp.id), masked(missing, random), 'A\'s request and no request answer alike');
  await b.ping();
  await b.closeAndWait();
  assertCleanStream(b);

  const after1 = await server.getJob(jobA, userA.token);
  const same = after1.otp_requests.find((o) => o.id === otp.id);
  assert.equal(same.status, 'requested', 'A\'s OTP request still waits');
  assert.equal(same.attempts_count, otp.attempts_count, 'B used none of its attempts');

  // A answers it over the socket with the same code: accepted.
  const a = await Client.open(server, userA.token, { label: 'A' });
  const res = await a.request({ type: 'otp.submit', otp_request_id: otp.id, value: code });
  assert.equal(res.type, 'otp.result');
  assert.equal(res.ok, true, `A's own answer is accepted: ${JSON.stringify(res)}`);
  await a.closeAndWait();
});

test('5c. the admin key subscribes to any job and answers its OTPs', { timeout: 90_000 }, async () => {
  const admin = await Client.open(server, server.adminKey, { label: 'admin' });
  assert.equal(admin.messages[0].msg.user_id, null, 'hello.user_id is null for the admin key');
  const snap = await admin.subscribe(jobA);
  assert.equal(snap.type, 'snapshot', `admin subscribes to A's job: ${JSON.stringify(snap).slice(0, 200)}`);

  // The admin answers every OTP the job asks for, to the end.
  const done = new Set();
  const deadline = Date.now() + 60_000;
  while (!['completed', 'failed', 'cancelled'].includes(admin.view(jobA).job.status)) {
    for (const o of [...admin.view(jobA).otps.values()].filter((x) => x.status === 'requested' && !done.has(x.id))) {
      const { code } = await server.waitCode(o.id);
      done.add(o.id);
      const res = await admin.request({ type: 'otp.submit', otp_request_id: o.id, value: code, ref: newRef('ao') });
      assert.equal(res.type, 'otp.result');
      assert.equal(res.ok, true, `the admin's answer is accepted: ${JSON.stringify(res)}`);
    }
    assert.ok(Date.now() < deadline, 'the job ends within 60 s');
    await admin.waitFor((m) => m.job_id === jobA, { from: admin.cursor, timeout: 300 }).catch(() => {});
  }
  assert.ok(done.size >= 1, 'the admin answered at least one OTP');
  const committed = await settle(server, admin, jobA, { timeout: 60_000 });
  assert.equal(committed.job.status, 'completed');
  assertCleanStream(admin);
  await admin.closeAndWait();

  // A user's subscription to another user's job created by the admin is refused too.
  const jobB = (await server.createJob(server.adminKey, { count: 1, userId: userB.id })).job_id;
  const a = await Client.open(server, userA.token, { label: 'A' });
  const r = await a.subscribe(jobB);
  assert.equal(r.type, 'error');
  assert.equal(r.code, 'not_found');
  const b = await Client.open(server, userB.token, { label: 'B' });
  const ok = await b.subscribe(jobB);
  assert.equal(ok.type, 'snapshot', 'the owner (set by the admin) may subscribe');
  await a.closeAndWait();
  await b.closeAndWait();
});
