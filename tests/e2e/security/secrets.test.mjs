// The secret search (DESIGN.md durability rule 5, docs/operations.md "OTP values",
// "Login reuse"): after a run that exercises everything - jobs with OTPs answered wrong and
// right over HTTP, the original route and the socket, logins whose provider sessions are
// sealed into auth_sessions, a job failed by wrong codes and retried, bad tokens, a
// restart that reads the sealed sessions back and reuses them - nothing secret is found
// in:
//   - the server's log (stdout and stderr, at --log-level debug), line by line;
//   - every WebSocket frame any client received;
//   - every HTTP response (status, headers, body);
//   - every row of every table (psql), job_events.row_data and auth_sessions included.
// Secrets: every OTP value used (right and wrong), the users' tokens (also their
// signatures alone), the bad tokens sent, the admin key, the JWT secret,
// JOBWIRE_SECRET_KEY (hex and base64), and the sim's login session tokens (providers:
// `ok {"session":{"token":"<64 hex>",...}}`), read back by decrypting auth_sessions
// here; and, for tokens this test cannot know (sessions replaced by a later login),
// any stand-alone run of 64 hex digits.
// The one allowed place for a code is the sim's simulated SMS log line, matched exactly,
// and the admin-only inbox. auth_sessions holds only AES-256-GCM ciphertext bound to its
// row: it opens with the key and that row's associated data, and with nothing else.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  Client, Server, TERMINAL, containsCode, dumpRows, failJobByWrongOtps, psql, recordHttp,
  sleep, uuid, waiting, wrongCode,
} from './lib.mjs';

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
// server/jw_log.c's prefix, then engine/providers/sim.c's send_sms line, exactly.
const SMS_LINE = new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z INFO  sim: SMS to \\*{6}\\d{4}: your (gyftr_login|amazon_login|payment) code is (\\d{6}) \\(job=(${UUID}) step=(${UUID})\\)$`);

let server;
const http = []; // every HTTP exchange
const clients = []; // every socket, open or closed
const wrong = new Set(); // every wrong code sent
const right = new Set(); // every right code sent
const sms = []; // every inbox message, across the restart
let A;
let B;
let badTokens;

before(async () => {
  server = new Server({
    name: 'sec_secrets',
    sim: 'latency_ms=5,voucher_polls=1,poll_after_ms=10',
    // Many jobs and codes in seconds: past the per-user budgets (quotas.test.mjs tests those).
    args: ['--log-level', 'debug', '--otp-rate-per-user', '100000', '--job-rate-per-user', '100000', '--max-live-jobs-per-user', '1000'],
  });
  recordHttp(server, http);
  await server.start();
  A = server.user();
  B = server.user();
  badTokens = {
    expired: server.mint(A.id, -600),
    foreign: server.mint(A.id, 3600, `other-${crypto.randomBytes(12).toString('hex')}`),
    garbage: `garbage-${crypto.randomBytes(16).toString('hex')}`,
  };
});
after(async () => {
  for (const c of clients) c.terminate();
  if (server) await server.stop();
});

async function open(token, label, { authMessage = false } = {}) {
  let c;
  if (authMessage) {
    c = await server.connect({ label });
    c.send({ type: 'auth', token });
    await c.waitFor((m) => m.type === 'hello', { what: 'hello' });
  } else {
    c = await Client.open(server, token, { label });
  }
  clients.push(c);
  return c;
}

// Answers every OTP request of a job, each first with a wrong code then the right one,
// taking turns over channels (['http' | 'orig' | ['ws', client]]), until the job is
// final. Records every code sent.
async function driveWrongThenRight(jobId, token, channels, { timeout = 60_000 } = {}) {
  const done = new Set();
  const deadline = Date.now() + timeout;
  let turn = 0;
  for (;;) {
    const j = await server.getJob(jobId);
    if (TERMINAL.has(j.job.status)) return j;
    const inbox = await server.inbox();
    for (const o of waiting(j)) {
      const msgs = inbox.filter((m) => m.otp_request_id === o.id);
      if (!msgs.length) continue;
      const m = msgs.reduce((a, b) => (b.seq > a.seq ? b : a));
      if (done.has(`${o.id}/${m.seq}`)) continue;
      done.add(`${o.id}/${m.seq}`);
      const ch = channels[turn++ % channels.length];
      const bad = turn % 2 ? wrongCode(m.code, 1 + turn) : `${wrongCode(m.code, turn)}${String(turn).padStart(2, '0')}`; // 6 or 8 digits
      for (const [value, ok] of [[bad, false], [m.code, true]]) {
        (ok ? right : wrong).add(value);
        let verdict;
        if (ch === 'http' || ch === 'orig') {
          const r = ch === 'http'
            ? await server.api('POST', `/api/otp/${o.id}`, { token, body: { otp: value } })
            : await server.api('POST', '/api/jobs/otp-received', { token, body: { otpRequestId: o.id, otpValue: value } });
          verdict = r.status;
        } else {
          const res = await ch[1].request({ type: 'otp.submit', otp_request_id: o.id, value });
          verdict = res.type === 'otp.result' ? (res.ok ? 200 : 422) : res.code;
        }
        assert.equal(verdict, ok ? 200 : 422, `${ok ? 'right' : 'wrong'} code on ${o.id} over ${ch === 'http' || ch === 'orig' ? ch : 'ws'}: ${verdict}`);
      }
    }
    assert.ok(Date.now() < deadline, `job ${jobId} not final within ${timeout} ms`);
    await sleep(20);
  }
}

async function keepInbox() {
  for (const m of await server.inbox()) if (!sms.some((x) => x.seq === m.seq && x.code === m.code && x.step_id === m.step_id)) sms.push(m);
}

test('the run: jobs, wrong and right codes on every channel, sealed logins, a failed job retried, bad tokens, a restart', { timeout: 100_000 }, async (t) => {
  const wsA = await open(A.token, 'A ?token=');
  const wsB = await open(B.token, 'B auth message', { authMessage: true });
  const wsAdmin = await open(server.adminKey, 'admin');

  // Job 1 (A, 2 transactions): logins and payments, each code wrong then right.
  const { job_id: job1 } = await server.createJob(A.token, { count: 2, metadata: { note: 'secret search' } });
  assert.equal((await wsA.subscribe(job1)).type, 'snapshot');
  assert.equal((await wsAdmin.subscribe(job1)).type, 'snapshot');
  let j = await driveWrongThenRight(job1, A.token, ['http', ['ws', wsA], 'orig']);
  assert.equal(j.job.status, 'completed');

  // Job 2 (A): both logins reused from memory; the admin answers the payment on a socket.
  const { job_id: job2 } = await server.createJob(A.token, { count: 1 });
  assert.equal((await wsAdmin.subscribe(job2)).type, 'snapshot');
  j = await driveWrongThenRight(job2, server.adminKey, [['ws', wsAdmin]]);
  assert.equal(j.job.status, 'completed');
  assert.ok(j.steps.filter((s) => s.step_data.reused_session).length === 2, 'job 2 reused both logins');

  // Job 3 (B): failed by wrong codes, retried, then completed.
  const { job_id: job3 } = await server.createJob(B.token, { count: 1 });
  assert.equal((await wsB.subscribe(job3)).type, 'snapshot');
  await server.waitPaused(job3);
  for (const c of await failJobByWrongOtps(server, job3, B.token)) wrong.add(c);
  const r = await server.api('POST', `/api/jobs/${job3}/retry`, { token: B.token, body: {} });
  assert.equal(r.status, 200, r.text);
  j = await driveWrongThenRight(job3, B.token, ['orig', ['ws', wsB]]);
  assert.equal(j.job.status, 'completed');

  // Bad tokens, on HTTP and both socket paths.
  for (const t of Object.values(badTokens)) {
    assert.equal((await server.api('GET', '/api/jobs', { token: t })).status, 401);
    assert.equal((await server.api('GET', '/metrics', { token: t })).status, 401);
    const c1 = await server.connect({ token: t, label: 'bad ?token=' });
    clients.push(c1);
    assert.equal((await c1.waitClose()).code, 4401);
    const c2 = await server.connect({ label: 'bad auth' });
    clients.push(c2);
    c2.send({ type: 'auth', token: t });
    assert.equal((await c2.waitClose()).code, 4401);
  }
  // Reads of every kind.
  for (const [p, t] of [['/metrics', server.adminKey], ['/readyz'], ['/healthz'], ['/api/jobs', A.token],
    ['/api/jobs', server.adminKey], [`/api/jobs/${job1}`, A.token], [`/api/jobs/${job3}`, server.adminKey], ['/']]) {
    const x = await server.api('GET', p, { token: t });
    assert.equal(x.status, 200, `${p}: ${x.status}`);
  }
  await keepInbox();
  for (const c of [wsA, wsB, wsAdmin]) await c.closeAndWait();

  // A restart: the sealed sessions are read back (with the key) and reused.
  await server.stop();
  await server.start();
  assert.match(server.logText(), /loaded 4 reusable login sessions/, 'the four sealed sessions open with the key');
  const wsA2 = await open(A.token, 'A after the restart');
  const { job_id: job4 } = await server.createJob(A.token, { count: 1 });
  assert.equal((await wsA2.subscribe(job4)).type, 'snapshot');
  j = await driveWrongThenRight(job4, A.token, ['http', ['ws', wsA2]]);
  assert.equal(j.job.status, 'completed');
  assert.equal(j.otp_requests.filter((o) => o.otp_type !== 'payment').length, 0, 'no login OTP: the stored sessions were reused');
  await keepInbox();
  await wsA2.closeAndWait();
  const stopped = await server.stop();
  assert.equal(stopped.code, 0, 'clean stop: the log is complete');

  assert.ok(right.size >= 9 && wrong.size >= 20, `codes used: ${right.size} right, ${wrong.size} wrong`);
  for (const c of wrong) assert.ok(!right.has(c), 'a wrong code is not also a right one');
  t.diagnostic(`${http.length} HTTP answers, ${clients.reduce((n, c) => n + c.frames.length, 0)} frames on ${clients.length} sockets, ${right.size} right and ${wrong.size} wrong codes, ${sms.length} SMS`);
});

// --- the haystacks -------------------------------------------------------------------------

const hex = (s) => Buffer.from(s).toString('hex');
const b64 = (s) => Buffer.from(s).toString('base64');

function haystacks() {
  const out = [];
  const lines = server.logText().split('\n');
  lines.forEach((line, i) => out.push({ where: `log line ${i + 1}`, text: line, log: true }));
  for (const c of clients) {
    c.frames.forEach((f, i) => out.push({ where: `${c.label} frame ${i}`, text: f.text ?? f.binary.toString('latin1') }));
  }
  http.forEach((x, i) => out.push({
    where: `HTTP #${i} ${x.method} ${x.path.replace(/\?.*/, '')} ${x.status}`,
    text: `${JSON.stringify(x.headers)}\n${x.text}`,
    inbox: x.path.startsWith('/api/sim/inbox'),
  }));
  const rows = dumpRows(server.db);
  for (const [t, list] of Object.entries(rows)) list.forEach((row, i) => out.push({ where: `${t} row ${i}`, text: row, db: t }));
  return out;
}

// The stored sessions: {id, user, type, sealed (Buffer), row}.
function storedSessions() {
  const out = psql(server.db, `SELECT coalesce(json_agg(json_build_object('id', id, 'user', user_id, 'type', session_type,
    'hex', encode(auth_token_enc, 'hex'), 'data', session_data, 'ctx', browser_context_id)), '[]') FROM auth_sessions`);
  return JSON.parse(out).map((r) => ({ ...r, sealed: Buffer.from(r.hex || '', 'hex') }));
}

// docs/operations.md: AES-256-GCM under JOBWIRE_SECRET_KEY, nonce (12) || ciphertext || tag
// (16), the associated data "auth_sessions/<id>/<user>/<type>" (engine/sessions.c aad_of).
function open_(sealed, keyHex, aad) {
  const d = crypto.createDecipheriv('aes-256-gcm', Buffer.from(keyHex, 'hex'), sealed.subarray(0, 12));
  d.setAAD(Buffer.from(aad));
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]).toString('utf8');
}

let sessionTokens = [];

test('auth_sessions: only ciphertext, bound to its row; it opens with the key, and with nothing else', { timeout: 30_000 }, () => {
  const rows = storedSessions();
  const kinds = rows.map((r) => `${r.user}/${r.type}`).sort();
  assert.deepEqual(kinds, [`${A.id}/amazon`, `${A.id}/gyftr`, `${B.id}/amazon`, `${B.id}/gyftr`].sort(), 'one row per user and login');
  const nonces = new Set();
  for (const r of rows) {
    const where = `auth_sessions ${r.id} (${r.type})`;
    assert.ok(r.sealed.length > 28, `${where}: a sealed token is stored`);
    assert.deepEqual(r.data, {}, `${where}: session_data holds nothing`);
    assert.equal(r.ctx, null);
    const plain = open_(r.sealed, server.secretKey, `auth_sessions/${r.id}/${r.user}/${r.type}`);
    const session = JSON.parse(plain);
    assert.match(session.token, /^[0-9a-f]{64}$/, `${where}: the sim's session token`);
    sessionTokens.push(session.token);
    nonces.add(r.sealed.subarray(0, 12).toString('hex'));

    // The stored bytes are not the token, nor text.
    const raw = r.sealed.toString('latin1');
    for (const [enc, v] of [['plain', session.token], ['hex', hex(session.token)], ['base64', b64(session.token)], ['half', session.token.slice(0, 32)]]) {
      assert.ok(!raw.includes(v) && !r.hex.includes(v), `${where}: the stored bytes hold the token (${enc})`);
    }
    assert.throws(() => JSON.parse(r.sealed.toString('utf8')), `${where}: the stored bytes are not JSON`);
    const printable = [...r.sealed].filter((b) => b >= 0x20 && b < 0x7f).length / r.sealed.length;
    assert.ok(printable < 0.75, `${where}: ${Math.round(printable * 100)} % printable: looks like text`);
    assert.ok(!/token|expires/.test(raw), `${where}: field names in the stored bytes`);

    // Without the key, or moved to another row, it does not open.
    assert.throws(() => open_(r.sealed, crypto.randomBytes(32).toString('hex'), `auth_sessions/${r.id}/${r.user}/${r.type}`), `${where}: opens with another key`);
    assert.throws(() => open_(r.sealed, server.secretKey, `auth_sessions/${uuid()}/${r.user}/${r.type}`), `${where}: opens as another row`);
    assert.throws(() => open_(r.sealed, server.secretKey, `auth_sessions/${r.id}/${r.user === A.id ? B.id : A.id}/${r.type}`), `${where}: opens for another user`);
    const flipped = Buffer.from(r.sealed);
    flipped[14] ^= 1;
    assert.throws(() => open_(flipped, server.secretKey, `auth_sessions/${r.id}/${r.user}/${r.type}`), `${where}: a changed byte still opens`);
  }
  assert.equal(nonces.size, rows.length, 'every row has its own nonce');
  assert.equal(new Set(sessionTokens).size, sessionTokens.length, 'every session token differs');
});

test('no token, key, secret or session token anywhere: log, frames, HTTP answers, rows', { timeout: 30_000 }, () => {
  assert.ok(sessionTokens.length === 4, 'the sessions were read (previous test)');
  const needles = {
    'the admin key': server.adminKey,
    'the JWT secret': server.jwtSecret,
    'JOBWIRE_SECRET_KEY (hex)': server.secretKey,
    'JOBWIRE_SECRET_KEY (base64)': Buffer.from(server.secretKey, 'hex').toString('base64'),
    "A's token": A.token,
    "A's token's signature": A.token.split('.')[2],
    "B's token": B.token,
    "B's token's signature": B.token.split('.')[2],
    ...Object.fromEntries(Object.entries(badTokens).map(([k, v]) => [`the ${k} token`, v])),
  };
  sessionTokens.forEach((t, i) => {
    needles[`session token ${i}`] = t;
    needles[`session token ${i} (hex of its text)`] = hex(t);
    needles[`session token ${i} (base64)`] = b64(t);
  });
  const hits = [];
  const hs = haystacks();
  assert.ok(hs.filter((h) => h.log).length > 500, 'the debug log was read');
  assert.ok(hs.filter((h) => h.db === 'job_events').length > 100, 'the journal was read');
  for (const h of hs) {
    for (const [name, v] of Object.entries(needles)) {
      if (h.text.includes(v)) hits.push(`${name} in ${h.where}: ${h.text.slice(Math.max(0, h.text.indexOf(v) - 80), h.text.indexOf(v) + 20)}`);
    }
  }
  assert.deepEqual(hits, []);

  // Tokens this test cannot know (a session replaced by a later login): no stand-alone
  // 64-hex run anywhere but the migrations' recorded SHA-256.
  const known = new Set(psql(server.db, 'SELECT sha256 FROM schema_migrations').split('\n').filter(Boolean));
  assert.ok(known.size >= 1);
  const runs = [];
  for (const h of hs) {
    for (const m of h.text.matchAll(/(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])/g)) {
      if (!(h.db === 'schema_migrations' && known.has(m[0]))) runs.push(`${h.where}: ${m[0]}`);
    }
  }
  assert.deepEqual(runs, [], '64-hex runs (a session token?)');

  const cookies = http.filter((x) => Object.keys(x.headers).some((k) => k.toLowerCase() === 'set-cookie'));
  assert.deepEqual(cookies.map((x) => x.path), [], 'no answer sets a cookie');
});

test('OTP values: only in the simulated SMS log lines (matched exactly) and the admin inbox', { timeout: 30_000 }, () => {
  const codes = new Set(sms.map((m) => m.code));
  for (const c of right) assert.ok(codes.has(c), `the right code ${c} was sent by SMS`);
  const all = [...new Set([...codes, ...wrong])];
  const hs = haystacks();

  // The SMS lines: exactly one per SMS, each the code the inbox holds for that step.
  const smsLines = hs.filter((h) => h.log && SMS_LINE.test(h.text));
  const fromLog = smsLines.map((h) => {
    const [, type, code, job, step] = SMS_LINE.exec(h.text);
    return `${type}/${code}/${job}/${step}`;
  }).sort();
  const fromInbox = sms.map((m) => `${m.otp_type}/${m.code}/${m.job_id}/${m.step_id}`).sort();
  assert.deepEqual(fromLog, fromInbox, 'one SMS log line per simulated SMS, with its code');
  for (const c of wrong) {
    assert.ok(!smsLines.some((h) => SMS_LINE.exec(h.text)[2] === c), `the wrong code ${c} is in an SMS line`);
  }

  // Everywhere else: no code, right or wrong, standing alone. The admin inbox holds the
  // codes it sent (that is its purpose), and never a wrong one.
  const hits = [];
  for (const h of hs) {
    if (h.log && SMS_LINE.test(h.text)) continue;
    for (const c of h.inbox ? [...wrong].filter((x) => !codes.has(x)) : all) {
      if (containsCode(h.text, c)) hits.push(`${c} (${wrong.has(c) ? 'wrong' : 'right'}) in ${h.where}: ${h.text.slice(0, 300)}`);
    }
  }
  assert.deepEqual(hits, []);

  // The schema has no column for them.
  const cols = psql(server.db, `SELECT table_name || '.' || column_name FROM information_schema.columns
    WHERE table_schema = 'public' AND column_name ~ '(otp|code|token|secret|value)' ORDER BY 1`).split('\n');
  assert.deepEqual(cols, ['auth_sessions.auth_token_enc', 'otp_requests.otp_type'], 'columns that could hold a code or a token');
});
