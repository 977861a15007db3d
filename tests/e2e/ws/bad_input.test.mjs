// Bad client input (docs/protocol.md "Errors", "Limits", "Client → server"): every case
// gets its defined error code, exactly one answer, and afterwards the SAME connection
// still answers ping with pong and another connection is unaffected. The frame over
// 16 KiB is the one input that closes (frame_too_large, close 1009), on its own connection.
//
// Where docs/protocol.md does not pin one code (a field of the wrong JSON type:
// `bad_message` "unknown field type" vs the field's own invalid_* code) a case accepts
// the codes the text allows; each such case says so in its name.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Client, ERROR_CODES, JobView, Server, assertCleanStream, diffState, pool, uuid,
} from '../lib/index.mjs';

let server;
let user; // owns job, the job every case may name
let job; // waiting for its login OTPs
let otpA; // an OTP request of job that stays `requested` through the format cases
let otpB; // another one, answered over HTTP for the not-waiting case
let main; // the connection the cases use (re-opened if a case kills it, so one failure does not cascade)
let other; // a second connection, subscribed to job, that must not notice anything

before(async () => {
  // Test 8 starts 101 jobs for one user in seconds: past the per-user defaults.
  server = new Server({
    name: 'bad_input',
    sim: 'latency_ms=10,voucher_polls=1,poll_after_ms=10',
    args: ['--max-live-jobs-per-user', '200', '--job-rate-per-user', '1000'],
  });
  await server.start();
  user = server.user();
  job = (await server.createJob(user.token, { count: 1 })).job_id;
  const paused = await server.waitPaused(job);
  const waiting = paused.otp_requests.filter((o) => o.status === 'requested');
  assert.ok(waiting.length >= 2, `the job waits for both login OTPs (${waiting.length})`);
  [otpA, otpB] = waiting;
  other = await Client.open(server, user.token, { label: 'other' });
  assert.equal((await other.subscribe(job)).type, 'snapshot');
});
after(async () => {
  if (server) await server.stop();
});

async function conn() {
  if (!main || main.closed) main = await Client.open(server, user.token, { label: 'main' });
  return main;
}

// Sends one bad frame on the shared connection, then a ping: the answers until the pong
// must be exactly one error with a code in codes (and ref, and a message naming
// mentions); the pong proves the connection goes on; other's pong that it was not disturbed.
async function expectError(send, codes, { ref, mentions = [] } = {}) {
  const c = await conn();
  const from = c.cursor;
  send(c);
  // Answers carry the ref: wait for it (docs/protocol.md does not promise that answers
  // keep the order of the messages; a lookup in PostgreSQL may answer after a later ping).
  if (ref !== undefined) await c.waitRef(ref, { from });
  await c.ping();
  const answers = c.messages.slice(from).map((e) => e.msg).filter((m) => m.type !== 'pong');
  assert.equal(answers.length, 1, `exactly one answer before the pong: ${JSON.stringify(answers).slice(0, 600)}`);
  const [e] = answers;
  assert.equal(e.type, 'error', `an error: ${JSON.stringify(e).slice(0, 300)}`);
  assert.ok(codes.includes(e.code), `code ${e.code}, want ${codes.join(' or ')} (${e.message})`);
  assert.ok(ERROR_CODES.has(e.code));
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0, 'the error has a message');
  if (ref !== undefined) assert.deepEqual(e.ref, ref, 'the error echoes the ref');
  for (const part of mentions) assert.ok(e.message.includes(part), `the message names ${part}: ${e.message}`);
  await other.ping();
  return e;
}

const json = (obj) => (c) => c.send(JSON.stringify(obj));
const raw = (text) => (c) => c.sendRaw(text);

describe('one bad message at a time, on one connection', () => {
  const cases = [
    ['malformed JSON', raw('{"type":"ping",'), ['bad_json']],
    ['not JSON at all', raw('hello'), ['bad_json']],
    ['an empty text frame', raw(''), ['bad_json']],
    ['a JSON array', raw('[{"type":"ping"}]'), ['bad_message']],
    ['a JSON string', raw('"ping"'), ['bad_message']],
    ['JSON null', raw('null'), ['bad_message']],
    ['a JSON number', raw('42'), ['bad_message']],
    ['missing type', json({ ref: 'm1' }), ['bad_message'], { ref: 'm1', mentions: ['type'] }],
    ['type not a string', json({ type: 7, ref: 'm2' }), ['bad_message'], { ref: 'm2', mentions: ['type'] }],
    ['unknown type', json({ type: 'nope', ref: 'm3' }), ['unknown_type'], { ref: 'm3' }],
    ['type in the wrong case', json({ type: 'PING', ref: 'm4' }), ['unknown_type'], { ref: 'm4' }],
    ['subscribe without job_id', json({ type: 'subscribe', ref: 's1' }), ['bad_message'], { ref: 's1', mentions: ['job_id'] }],
    ['subscribe, job_id a number (bad_message or invalid_job_id)', json({ type: 'subscribe', job_id: 123, ref: 's2' }), ['bad_message', 'invalid_job_id'], { ref: 's2' }],
    ['subscribe, job_id not a uuid', json({ type: 'subscribe', job_id: 'not-a-uuid', ref: 's3' }), ['invalid_job_id'], { ref: 's3' }],
    ['subscribe, job_id empty', json({ type: 'subscribe', job_id: '', ref: 's4' }), ['invalid_job_id'], { ref: 's4' }],
    ['subscribe, job_id a uuid with junk after it', json({ type: 'subscribe', job_id: `${uuid()}x`, ref: 's5' }), ['invalid_job_id'], { ref: 's5' }],
    ['subscribe, since negative', () => json({ type: 'subscribe', job_id: job, since: -1, ref: 's6' }), ['invalid_since'], { ref: 's6' }],
    ['subscribe, since a string (invalid_since or bad_message)', () => json({ type: 'subscribe', job_id: job, since: '5', ref: 's7' }), ['invalid_since', 'bad_message'], { ref: 's7' }],
    ['subscribe, since 1.5', () => json({ type: 'subscribe', job_id: job, since: 1.5, ref: 's8' }), ['invalid_since'], { ref: 's8' }],
    ['subscribe, since null (invalid_since or bad_message)', () => json({ type: 'subscribe', job_id: job, since: null, ref: 's9' }), ['invalid_since', 'bad_message'], { ref: 's9' }],
    ['subscribe, since 1e300', () => json({ type: 'subscribe', job_id: job, since: 1e300, ref: 's10' }), ['invalid_since'], { ref: 's10' }],
    ['subscribe to no such job', json({ type: 'subscribe', job_id: uuid(), ref: 's11' }), ['not_found'], { ref: 's11' }],
    ['unsubscribe of a job not subscribed', () => json({ type: 'unsubscribe', job_id: job, ref: 'u1' }), ['not_subscribed'], { ref: 'u1' }],
    ['unsubscribe without job_id', json({ type: 'unsubscribe', ref: 'u2' }), ['bad_message'], { ref: 'u2', mentions: ['job_id'] }],
    ['otp.submit without ref', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '123456' }), ['bad_message'], { mentions: ['ref'] }],
    ['otp.submit without value', () => json({ type: 'otp.submit', otp_request_id: otpA.id, ref: 'o1' }), ['bad_message'], { ref: 'o1', mentions: ['value'] }],
    ['otp.submit without otp_request_id', json({ type: 'otp.submit', value: '123456', ref: 'o2' }), ['bad_message'], { ref: 'o2', mentions: ['otp_request_id'] }],
    ['otp.submit, value with letters', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '12ab56', ref: 'o3' }), ['invalid_otp'], { ref: 'o3' }],
    ['otp.submit, value of 3 digits', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '123', ref: 'o4' }), ['invalid_otp'], { ref: 'o4' }],
    ['otp.submit, value of 11 digits', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '12345678901', ref: 'o5' }), ['invalid_otp'], { ref: 'o5' }],
    ['otp.submit, value empty', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '', ref: 'o6' }), ['invalid_otp'], { ref: 'o6' }],
    ['otp.submit, value with a space', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: ' 123456', ref: 'o7' }), ['invalid_otp'], { ref: 'o7' }],
    ['otp.submit, value of non-ASCII digits', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: '١٢٣٤٥٦', ref: 'o8' }), ['invalid_otp'], { ref: 'o8' }],
    ['otp.submit, value a number (invalid_otp or bad_message)', () => json({ type: 'otp.submit', otp_request_id: otpA.id, value: 123456, ref: 'o9' }), ['invalid_otp', 'bad_message'], { ref: 'o9' }],
    ['otp.submit, otp_request_id not a uuid (bad_message or not_found)', json({ type: 'otp.submit', otp_request_id: 'xyz', value: '123456', ref: 'o10' }), ['bad_message', 'not_found'], { ref: 'o10' }],
    ['otp.submit, otp_request_id a number (bad_message or not_found)', json({ type: 'otp.submit', otp_request_id: 42, value: '123456', ref: 'o11' }), ['bad_message', 'not_found'], { ref: 'o11' }],
    ['otp.submit, unknown OTP request', json({ type: 'otp.submit', otp_request_id: uuid(), value: '123456', ref: 'o12' }), ['not_found'], { ref: 'o12' }],
    ['ping, ref of 65 characters', json({ type: 'ping', ref: 'r'.repeat(65) }), ['bad_message'], { mentions: ['ref'] }],
    ['ping, ref an object', json({ type: 'ping', ref: { a: 1 } }), ['bad_message'], { mentions: ['ref'] }],
    ['ping, ref an array', json({ type: 'ping', ref: ['a'] }), ['bad_message'], { mentions: ['ref'] }],
    ['a nested array 8000 deep (within 16 KiB)', raw(`${'['.repeat(8000)}${']'.repeat(8000)}`), ['bad_json', 'bad_message']],
  ];
  for (const [name, sendOrLazy, codes, opts] of cases) {
    test(`8. ${name} -> ${codes.join('|')}`, { timeout: 20_000 }, async () => {
      // Lazy cases need ids that exist only after before() ran.
      const send = sendOrLazy.length === 0 ? sendOrLazy() : sendOrLazy;
      await expectError(send, codes, opts);
    });
  }

  test('8. a binary frame -> binary_not_supported', { timeout: 20_000 }, async () => {
    await expectError((c) => c.sendRaw(Buffer.from('{"type":"ping","ref":"bin"}'), { binary: true }), ['binary_not_supported']);
  });

  test('8. invalid UTF-8 in a text frame -> bad_json (docs: an error, and the connection goes on)', { timeout: 20_000 }, async () => {
    const bytes = Buffer.concat([Buffer.from('{"type":"ping","ref":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]);
    await expectError((c) => c.sendRaw(bytes, { binary: false }), ['bad_json', 'bad_message']);
  });

  test('8. the format cases used none of the OTP request\'s attempts', { timeout: 20_000 }, async () => {
    const j = await server.getJob(job, user.token);
    const o = j.otp_requests.find((x) => x.id === otpA.id);
    assert.equal(o.status, 'requested');
    assert.equal(o.attempts_count, otpA.attempts_count);
  });
});

describe('refs and fields', () => {
  test('8. a ref of 64 characters and a numeric ref are echoed', { timeout: 20_000 }, async () => {
    const c = await conn();
    const long = 'x'.repeat(64);
    const p1 = await c.request({ type: 'ping', ref: long });
    assert.deepEqual(p1, { type: 'pong', ref: long });
    const p2 = await c.request({ type: 'ping', ref: 7 });
    assert.equal(p2.type, 'pong');
    assert.equal(p2.ref, 7, 'a number stays a number');
    const from = c.cursor;
    c.send({ type: 'ping' });
    const p3 = await c.waitFor((m) => m.type === 'pong', { from });
    assert.equal(p3.ref, undefined, 'no ref, none echoed');
  });

  test('8. a frame of exactly 16 KiB is accepted (whitespace padding)', { timeout: 20_000 }, async () => {
    const c = await conn();
    const head = '{"type":"ping","ref":"big16k"}';
    const text = head + ' '.repeat(16 * 1024 - head.length);
    assert.equal(Buffer.byteLength(text), 16384);
    const from = c.cursor;
    c.sendRaw(text);
    const m = await c.waitFor((x) => x.ref === 'big16k', { from });
    assert.equal(m.type, 'pong');
    await other.ping();
  });

  test('8. extra unknown fields: tolerated or refused (bad_message naming the field), the same way for every type', { timeout: 20_000 }, async (t) => {
    const c = await conn();
    const ping = await c.request({ type: 'ping', ref: 'x1', colour: 'red' });
    const sub = await c.request({ type: 'subscribe', job_id: job, ref: 'x2', colour: 'red' });
    const verdict = (m, ok) => {
      if (m.type === 'error') {
        assert.equal(m.code, 'bad_message', JSON.stringify(m));
        assert.ok(m.message.includes('colour'), `the message names the field: ${m.message}`);
        return 'refused';
      }
      assert.equal(m.type, ok, JSON.stringify(m).slice(0, 200));
      return 'tolerated';
    };
    const v1 = verdict(ping, 'pong');
    const v2 = verdict(sub, 'snapshot');
    if (v2 === 'tolerated') assert.equal((await c.request({ type: 'unsubscribe', job_id: job })).type, 'ack');
    const unsub = await c.request({ type: 'unsubscribe', job_id: job, ref: 'x3', colour: 'red' });
    const v3 = unsub.type === 'error' && unsub.code === 'not_subscribed' ? v1 : verdict(unsub, 'ack');
    assert.equal(v2, v1, 'ping and subscribe treat unknown fields alike');
    assert.equal(v3, v1, 'unsubscribe too');
    t.diagnostic(`unknown fields are ${v1}`);
    await c.ping();
    await other.ping();
  });

  test('8. a 16 KiB-bounded object nested 2600 deep in an extra field: an error or a pong, and the connection goes on', { timeout: 20_000 }, async () => {
    const c = await conn();
    const text = `{"type":"ping","ref":"deep","x":${'{"a":'.repeat(2600)}1${'}'.repeat(2600)}}`;
    assert.ok(Buffer.byteLength(text) < 16384);
    const from = c.cursor;
    c.sendRaw(text);
    await c.ping();
    const answers = c.messages.slice(from).map((e) => e.msg).filter((m) => !(m.type === 'pong' && m.ref !== 'deep'));
    assert.equal(answers.length, 1, JSON.stringify(answers).slice(0, 300));
    const [m] = answers;
    assert.ok(m.type === 'pong' || (m.type === 'error' && ['bad_json', 'bad_message'].includes(m.code)), JSON.stringify(m).slice(0, 300));
    await other.ping();
  });

  test('8. auth after already being authenticated: an error or a hello, never a mixed identity', { timeout: 30_000 }, async (t) => {
    const c = await conn();
    const from = c.cursor;
    c.send({ type: 'auth', token: user.token, ref: 'a1' });
    await c.ping();
    const same = c.messages.slice(from).map((e) => e.msg).filter((m) => m.type !== 'pong');
    assert.equal(same.length, 1, `one answer to a second auth: ${JSON.stringify(same)}`);
    assert.ok(same[0].type === 'hello' || (same[0].type === 'error' && ERROR_CODES.has(same[0].code)), JSON.stringify(same[0]));
    t.diagnostic(`a second auth (same token) is answered with ${JSON.stringify(same[0])}`);

    // With another user's token: either refused (still the first user) or switched wholly.
    const other2 = server.user();
    const from2 = c.cursor;
    c.send({ type: 'auth', token: other2.token, ref: 'a2' });
    await c.ping();
    const ans = c.messages.slice(from2).map((e) => e.msg).filter((m) => m.type !== 'pong');
    assert.equal(ans.length, 1, JSON.stringify(ans));
    const s = await c.subscribe(job);
    if (ans[0].type === 'hello') {
      assert.equal(ans[0].user_id, other2.id, 'a hello after re-auth names the new user');
      assert.equal(s.type, 'error', 'switched to the other user: the first user\'s job is not_found');
      assert.equal(s.code, 'not_found');
      t.diagnostic('a second auth with another token switches the identity');
      main.close();
      main = null;
    } else {
      assert.equal(s.type, 'snapshot', 'refused: still the first user, who may subscribe to their job');
      assert.equal((await c.request({ type: 'unsubscribe', job_id: job })).type, 'ack');
      t.diagnostic(`a second auth with another token is refused: ${JSON.stringify(ans[0])}`);
    }
    await other.ping();
  });

  test('8. otp.submit of an OTP request that no longer waits -> otp_not_waiting', { timeout: 60_000 }, async () => {
    const { code } = await server.waitCode(otpB.id);
    const r = await server.api('POST', `/api/otp/${otpB.id}`, { token: user.token, body: { otp: code } });
    assert.equal(r.status, 200, r.text);
    await server.waitJob(job, (j) => j.otp_requests.find((o) => o.id === otpB.id).status === 'verified', { what: 'OTP verified' });
    const c = await conn();
    const m = await c.request({ type: 'otp.submit', otp_request_id: otpB.id, value: code, ref: 'nw' });
    const ok = (m.type === 'error' && m.code === 'otp_not_waiting') || (m.type === 'otp.result' && m.ok === false && m.error === 'otp_not_waiting');
    assert.ok(ok, `otp_not_waiting: ${JSON.stringify(m)}`);
    await c.ping();
    await other.ping();
  });

  test('8. a wrong (well-formed) code: otp.result ok:false invalid_otp, attempts_left goes down by one', { timeout: 60_000 }, async () => {
    const { code } = await server.waitCode(otpA.id);
    const wrong = code === '000000' ? '000001' : '000000';
    const c = await conn();
    const m = await c.request({ type: 'otp.submit', otp_request_id: otpA.id, value: wrong, ref: 'wr' });
    assert.equal(m.type, 'otp.result', JSON.stringify(m));
    assert.equal(m.ref, 'wr');
    assert.equal(m.ok, false);
    assert.equal(m.error, 'invalid_otp');
    assert.equal(m.attempts_left, otpA.max_attempts - otpA.attempts_count - 1);
    assert.ok(!JSON.stringify(m).includes(code) && !JSON.stringify(m).includes(wrong), 'the answer holds neither code');
    const good = await c.request({ type: 'otp.submit', otp_request_id: otpA.id, value: code, ref: 'gd' });
    assert.equal(good.type, 'otp.result');
    assert.equal(good.ok, true, JSON.stringify(good));
  });
});

describe('limits', () => {
  test('8. a frame over 16 KiB: error frame_too_large, close 1009; another connection is unaffected', { timeout: 30_000 }, async () => {
    for (const size of [16 * 1024 + 1, 1024 * 1024]) {
      const c = await Client.open(server, user.token, { label: `big${size}` });
      const head = '{"type":"ping","ref":"big"}';
      c.sendRaw(head + ' '.repeat(size - head.length));
      const e = await c.waitFor((m) => m.type === 'error', { what: 'frame_too_large', closeOk: true });
      const close = await c.waitClose();
      assert.ok(e, `${size} bytes: an error before the close (${close.code})`);
      assert.equal(e.code, 'frame_too_large');
      assert.equal(close.code, 1009, `${size} bytes: close 1009`);
      assert.ok(!c.messages.some((m) => m.msg.ref === 'big'), 'the big ping was not answered');
      await other.ping();
    }
  });

  test('8. 100 subscriptions per connection: the 101st gets too_many_subscriptions; unsubscribing makes room', { timeout: 120_000 }, async () => {
    const v = server.user();
    const ids = (await pool(Array.from({ length: 101 }), 8, () => server.createJob(v.token, { count: 1 }))).map((j) => j.job_id);
    const c = await Client.open(server, v.token, { label: 'subs' });
    const from = c.cursor;
    ids.slice(0, 100).forEach((id, i) => c.send({ type: 'subscribe', job_id: id, ref: `m${i}` }));
    for (let i = 0; i < 100; i++) {
      const m = await c.waitFor((x) => x.ref === `m${i}`, { from, what: `answer m${i}`, timeout: 30_000 });
      assert.equal(m.type, 'snapshot', `subscription ${i + 1} of 100: ${JSON.stringify(m).slice(0, 200)}`);
    }
    const e = await c.request({ type: 'subscribe', job_id: ids[100], ref: 'm100' });
    assert.equal(e.type, 'error');
    assert.equal(e.code, 'too_many_subscriptions');
    await c.ping();
    assert.equal((await c.request({ type: 'unsubscribe', job_id: ids[0] })).type, 'ack');
    assert.equal((await c.request({ type: 'subscribe', job_id: ids[100] })).type, 'snapshot', 'room for one again');
    const again = await c.request({ type: 'subscribe', job_id: ids[0] });
    assert.equal(again.type, 'error');
    assert.equal(again.code, 'too_many_subscriptions', 'and full again');
    await c.closeAndWait();
    assertCleanStream(c);
    await other.ping();
  });

  test('8. a flood of 200 subscribe/unsubscribe pairs: every one answered in order, the server stays responsive and consistent', { timeout: 120_000 }, async () => {
    const c = await Client.open(server, user.token, { label: 'flood' });
    const from = c.cursor;
    for (let i = 0; i < 200; i++) {
      c.send({ type: 'subscribe', job_id: job, ref: `fs${i}` });
      c.send({ type: 'unsubscribe', job_id: job, ref: `fu${i}` });
    }
    await c.waitFor((m) => m.ref === 'fu199', { from, timeout: 60_000, what: 'the last ack' });
    await c.ping();
    const got = c.messages.slice(from).map((e) => e.msg);
    assert.deepEqual(got.filter((m) => m.type === 'error'), [], 'no errors');
    const where = new Map();
    got.forEach((m, i) => {
      if (m.ref !== undefined) where.set(m.ref, { i, m });
    });
    for (let i = 0; i < 200; i++) {
      const s = where.get(`fs${i}`);
      const u = where.get(`fu${i}`);
      assert.ok(s && s.m.type === 'snapshot', `subscribe ${i} answered with a snapshot`);
      assert.ok(u && u.m.type === 'ack', `unsubscribe ${i} answered with an ack`);
      assert.ok(s.i < u.i, `pair ${i}: snapshot before ack`);
      if (i > 0) assert.ok(where.get(`fu${i - 1}`).i < s.i, `pair ${i} answered after pair ${i - 1}`);
    }
    const n = await c.request({ type: 'unsubscribe', job_id: job });
    assert.equal(n.type, 'error');
    assert.equal(n.code, 'not_subscribed', 'after the flood the connection is not subscribed');
    const committed = await server.waitPaused(job);
    const s = await c.subscribe(job);
    assert.equal(s.type, 'snapshot');
    const fresh = new JobView(job);
    fresh.apply(s);
    assert.deepEqual(diffState(fresh, committed), [], 'a fresh snapshot = GET');
    const health = await server.api('GET', '/healthz');
    assert.equal(health.status, 200);
    await c.closeAndWait();
    assertCleanStream(c);
    await other.ping();
  });
});

describe('afterwards', () => {
  test('8. the bystander connection saw a clean stream and still answers', { timeout: 20_000 }, async () => {
    await other.ping();
    assertCleanStream(other);
    assert.equal(other.closed, null);
    if (main && !main.closed) assertCleanStream(main);
  });
  test('8. the server process is still alive', () => {
    assert.ok(server.running);
  });
});

test('a broken otp.submit is refused without its code quoted back', { timeout: 20_000 }, async () => {
  const code = '987654';
  for (const text of [
    `{"type":"otp.submit","otp_request_id":"00000000-0000-4000-8000-000000000001","value":"${code}`,
    `{"type":"otp.submit","ref":"r","value":"${code}" "x"}`,
    `{"type":"otp.submit","value":${code}x}`,
  ]) {
    const e = await expectError(raw(text), ['bad_json']);
    assert.ok(!e.message.includes(code), `the error quotes the code: ${e.message}`);
  }
  assert.ok(!(await conn()).frames.some((f) => (f.text ?? '').includes(code)), 'no frame holds the code');
});
