// The authorization matrix (docs/api.md "Authentication", docs/protocol.md
// "Authorization"): four principals - anonymous (no credential), user A, user B, the
// admin key - against every HTTP route of the table server/app.c builds (the /api/ routes
// of server/api.c spelled out) and every jobwire.v1 client message, aimed at A's job and
// A's OTP requests. The expected answer of every cell is written in the tables below; the
// tests walk the tables. Then every way a token can be wrong, on HTTP and on both ways
// of authenticating a socket.
//
// Cells that change state (cancel, retry, an accepted OTP) get a fixture of their own,
// so no cell depends on another; a refused cell is also checked to have changed nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Client, Server, assertCleanStream, badTokens, failJobByWrongOtps, goodForged, pool,
  rawFetch, uuid,
} from './lib.mjs';

let server;
let A;
let B;
let jobA; // A's job, waiting for its login OTPs: the target of the read-only cells
const P = ['anon', 'A', 'B', 'admin'];
const token = (p) => ({ anon: undefined, A: A.token, B: B.token, admin: server.adminKey })[p];

// --- fixtures: a fresh one per state-changing cell -----------------------------------

// A job of A waiting for a code, with the request and its code: {job, otp, code}.
async function pausedJobOfA() {
  const { job_id: id } = await server.createJob(A.token, { count: 1 });
  const j = await server.waitPaused(id);
  const otp = j.otp_requests.find((o) => o.status === 'requested');
  const { code } = await server.waitCode(otp.id);
  return { job: id, otp: otp.id, code };
}

// A failed job of A (its OTPs answered wrong until the attempt limits failed it).
async function failedJobOfA() {
  const { job_id: id } = await server.createJob(A.token, { count: 1 });
  await server.waitPaused(id);
  await failJobByWrongOtps(server, id);
  return { job: id };
}

const otpRow = async (fx) => (await server.getJob(fx.job)).otp_requests.find((o) => o.id === fx.otp);

// --- expectations ------------------------------------------------------------------------

// '404 not_found' -> {status: 404, code: 'not_found'}; '200' -> {status: 200}.
const parse = (s) => {
  const [status, code] = s.split(' ');
  return { status: Number(status), code };
};

function assertErrorBody(r, code, where) {
  assert.ok(r.json && r.json.error, `${where}: an error object, got ${r.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(r.json), ['error'], `${where}: only "error"`);
  assert.equal(r.json.error.code, code, `${where}: error code`);
  assert.equal(typeof r.json.error.message, 'string', `${where}: a message`);
}

// The HTTP matrix. Each row: name, method, path(fx), body(fx) or null, fixture (a function
// making one per cell, or null: the shared jobA), the four answers, and optional checks:
// ok(r, fx, p) after a 2xx, refused(fx, p) after a 4xx (nothing changed).
const owner = (want) => (r, fx, p) => {
  const j = r.json.job || r.json;
  assert.equal(j.user_id, want === 'self' ? (p === 'B' ? B.id : A.id) : A.id, 'the job\'s owner');
};
const jobsHold = (has) => (r) => {
  const ids = r.json.jobs.map((x) => x.id);
  assert.equal(ids.includes(jobA), has, `the list ${has ? 'holds' : 'does not hold'} A's job`);
};
const newJobOwner = (want) => async (r, fx, p) => {
  const id = r.json.jobId;
  const j = await server.getJob(id);
  assert.equal(j.job.user_id, want === 'self' ? (p === 'B' ? B.id : A.id) : A.id, 'the started job\'s owner');
};
const stillRunning = async (fx) => {
  const j = await server.getJob(fx.job);
  assert.equal(j.job.cancel_requested, false, 'a refused cancel changed nothing');
  assert.ok(['initiated', 'validating', 'processing'].includes(j.job.status), `still running: ${j.job.status}`);
};
const stillFailed = async (fx) => {
  const j = await server.getJob(fx.job);
  assert.equal(j.job.status, 'failed', 'a refused retry changed nothing');
  assert.equal(j.job.retry_count, 0);
};
const otpUntouched = async (fx) => {
  const o = await otpRow(fx);
  assert.equal(o.status, 'requested', 'the OTP request still waits');
  assert.equal(o.attempts_count, 0, 'no attempt was used');
};
const otpVerified = async (fx) => {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const o = await otpRow(fx);
    if (o.status === 'verified') return;
    assert.ok(Date.now() < deadline, `the accepted OTP becomes verified (is ${o.status})`);
    await new Promise((r) => setTimeout(r, 30));
  }
};
const BODY = { transaction_amount: 1500, transaction_count: 1 };
const CONFIG = { transactionAmount: 1500, transactionCount: 1 };

const HTTP = [
  // server/pages.c: /healthz, /readyz - anyone
  { name: 'GET /healthz', m: 'GET', path: () => '/healthz', want: { anon: '200', A: '200', B: '200', admin: '200' } },
  { name: 'HEAD /healthz', m: 'HEAD', path: () => '/healthz', want: { anon: '200', A: '200', B: '200', admin: '200' } },
  { name: 'GET /readyz', m: 'GET', path: () => '/readyz', want: { anon: '200', A: '200', B: '200', admin: '200' } },
  // /metrics - the admin key only
  { name: 'GET /metrics', m: 'GET', path: () => '/metrics', want: { anon: '401 unauthorized', A: '403 forbidden', B: '403 forbidden', admin: '200' } },
  { name: 'HEAD /metrics', m: 'HEAD', path: () => '/metrics', want: { anon: '401', A: '403', B: '403', admin: '200' } },
  // the web page - anyone (it holds no data; the page signs in with a token it is given)
  { name: 'GET / (the page)', m: 'GET', path: () => '/', want: { anon: '200', A: '200', B: '200', admin: '200' } },
  { name: 'GET /app.js', m: 'GET', path: () => '/app.js', want: { anon: '200', A: '200', B: '200', admin: '200' } },
  { name: 'GET /no-such-file.js', m: 'GET', path: () => '/no-such-file.js', want: { anon: '404 not_found', A: '404 not_found', B: '404 not_found', admin: '404 not_found' } },
  // /api/ - server/api.c
  { name: 'GET /api/jobs', m: 'GET', path: () => '/api/jobs?limit=100', want: { anon: '401 unauthorized', A: '200', B: '200', admin: '200' },
    ok: (r, fx, p) => jobsHold(p !== 'B')(r) },
  { name: 'GET /api/jobs?user_id=<A>', m: 'GET', path: () => `/api/jobs?limit=100&user_id=${A.id}`, want: { anon: '401 unauthorized', A: '200', B: '403 forbidden', admin: '200' },
    ok: jobsHold(true) },
  { name: 'POST /api/jobs', m: 'POST', path: () => '/api/jobs', body: () => BODY, want: { anon: '401 unauthorized', A: '201', B: '201', admin: '400 missing_field' },
    ok: owner('self') },
  { name: 'POST /api/jobs {user_id: A}', m: 'POST', path: () => '/api/jobs', body: () => ({ ...BODY, user_id: A.id }), want: { anon: '401 unauthorized', A: '201', B: '403 forbidden', admin: '201' },
    ok: owner('A') },
  { name: 'GET /api/jobs/{A\'s job}', m: 'GET', path: () => `/api/jobs/${jobA}`, want: { anon: '401 unauthorized', A: '200', B: '404 not_found', admin: '200' },
    ok: owner('A') },
  { name: 'HEAD /api/jobs/{A\'s job}', m: 'HEAD', path: () => `/api/jobs/${jobA}`, want: { anon: '401', A: '200', B: '404', admin: '200' } },
  { name: 'POST /api/jobs/{A\'s job}/cancel', m: 'POST', path: (fx) => `/api/jobs/${fx.job}/cancel`, body: () => ({}), fixture: pausedJobOfA,
    want: { anon: '401 unauthorized', A: '200', B: '404 not_found', admin: '200' },
    ok: (r) => assert.equal(r.json.job.cancel_requested, true), refused: stillRunning },
  { name: 'POST /api/jobs/{A\'s failed job}/retry', m: 'POST', path: (fx) => `/api/jobs/${fx.job}/retry`, body: () => ({}), fixture: failedJobOfA,
    want: { anon: '401 unauthorized', A: '200', B: '404 not_found', admin: '200' },
    ok: (r) => assert.equal(r.json.job.retry_count, 1), refused: stillFailed },
  { name: 'POST /api/otp/{A\'s OTP}', m: 'POST', path: (fx) => `/api/otp/${fx.otp}`, body: (fx) => ({ otp: fx.code }), fixture: pausedJobOfA,
    want: { anon: '401 unauthorized', A: '200', B: '404 not_found', admin: '200' },
    ok: async (r, fx) => { assert.equal(r.json.ok, true); await otpVerified(fx); }, refused: otpUntouched },
  { name: 'POST /api/jobs/start-payment', m: 'POST', path: () => '/api/jobs/start-payment', body: () => ({ config: CONFIG }),
    want: { anon: '401 unauthorized', A: '200', B: '200', admin: '400 missing_field' }, ok: newJobOwner('self') },
  { name: 'POST /api/jobs/start-payment {userId: A}', m: 'POST', path: () => '/api/jobs/start-payment', body: () => ({ userId: A.id, config: CONFIG }),
    want: { anon: '401 unauthorized', A: '200', B: '403 forbidden', admin: '200' }, ok: newJobOwner('A') },
  { name: 'POST /api/jobs/otp-received {A\'s OTP}', m: 'POST', path: () => '/api/jobs/otp-received', body: (fx) => ({ otpRequestId: fx.otp, otpValue: fx.code }), fixture: pausedJobOfA,
    want: { anon: '401 unauthorized', A: '200', B: '404 not_found', admin: '200' },
    ok: async (r, fx) => { assert.equal(r.json.success, true); await otpVerified(fx); }, refused: otpUntouched },
  { name: 'GET /api/sim/inbox', m: 'GET', path: () => '/api/sim/inbox', want: { anon: '401 unauthorized', A: '403 forbidden', B: '403 forbidden', admin: '200' },
    ok: (r) => assert.ok(Array.isArray(r.json.messages)) },
  { name: 'GET /api/no-such-route', m: 'GET', path: () => '/api/no-such-route', want: { anon: '401 unauthorized', A: '404 not_found', B: '404 not_found', admin: '404 not_found' } },
];

// The socket matrix. anon connects without a token and sends the message first; the
// others connect with ?token= (auth: without, and authenticate with the message).
// want: 'hello' | 'snapshot' | 'ack' | 'pong' | 'otp ok' | an error code; 'close 4401'
// after an error means the connection is closed with 4401.
const WS = [
  { name: 'auth', want: { anon: 'unauthorized, close 4401', A: 'hello', B: 'hello', admin: 'hello' } },
  { name: 'subscribe {A\'s job}', want: { anon: 'auth_required, close 4401', A: 'snapshot', B: 'not_found', admin: 'snapshot' } },
  { name: 'unsubscribe {A\'s job} (after a subscribe)', want: { anon: 'auth_required, close 4401', A: 'ack', B: 'not_subscribed', admin: 'ack' } },
  { name: 'otp.submit {A\'s OTP, its code}', fixture: pausedJobOfA, want: { anon: 'auth_required, close 4401', A: 'otp ok', B: 'not_found', admin: 'otp ok' } },
  { name: 'ping', want: { anon: 'auth_required, close 4401', A: 'pong', B: 'pong', admin: 'pong' } },
];

const openB = []; // B's sockets, kept open to the end: nothing of A's job may reach them

before(async () => {
  // Two users act on every route in a few seconds: past the per-user budgets (quotas.test.mjs
  // tests those).
  server = new Server({ name: 'sec_matrix', sim: 'latency_ms=5,voucher_polls=1,poll_after_ms=10', args: ['--job-rate-per-user', '100000', '--otp-rate-per-user', '100000', '--max-live-jobs-per-user', '1000'] });
  await server.start();
  A = server.user();
  B = server.user();
  ({ job: jobA } = await pausedJobOfA());
});
after(async () => {
  for (const c of openB) c.terminate();
  if (server) await server.stop();
});

describe('HTTP: principal x route', () => {
  let fixtures; // row name -> principal -> fixture
  before(async () => {
    fixtures = new Map();
    const todo = [];
    for (const row of HTTP.filter((r) => r.fixture)) {
      const per = {};
      fixtures.set(row.name, per);
      for (const p of P) todo.push(async () => { per[p] = await row.fixture(); });
    }
    await pool(todo, 4, (f) => f());
  });

  for (const row of HTTP) {
    for (const p of P) {
      const want = parse(row.want[p]);
      test(`${row.name} as ${p} -> ${row.want[p]}`, { timeout: 60_000 }, async () => {
        const fx = row.fixture ? fixtures.get(row.name)[p] : {};
        const where = `${row.name} as ${p}`;
        let r;
        if (row.m === 'HEAD') {
          const headers = token(p) ? { Authorization: `Bearer ${token(p)}` } : {};
          r = await rawFetch(server, 'HEAD', row.path(fx), { headers });
          assert.equal(r.text, '', `${where}: HEAD has no body`);
        } else {
          r = await server.api(row.m, row.path(fx), { token: token(p), body: row.body ? row.body(fx) : undefined });
        }
        assert.equal(r.status, want.status, `${where}: ${r.status} ${r.text.slice(0, 300)}`);
        if (want.code) assertErrorBody(r, want.code, where);
        if (r.status < 300 && row.ok) await row.ok(r, fx, p);
        if (r.status >= 400 && row.refused) await row.refused(fx, p);
        if (r.status === 401) assert.ok(!r.text.includes(String(token(p))), `${where}: the answer does not echo the credential`);
      });
    }
  }

  test('B\'s 404 for A\'s job or OTP request is the 404 for an id that does not exist', { timeout: 60_000 }, async () => {
    const fx = await pausedJobOfA();
    const mask = (s, id) => s.split(id).join('<id>');
    for (const [name, m, path, body] of [
      ['GET job', 'GET', (id) => `/api/jobs/${id}`, null],
      ['cancel', 'POST', (id) => `/api/jobs/${id}/cancel`, () => ({})],
      ['retry', 'POST', (id) => `/api/jobs/${id}/retry`, () => ({})],
      ['otp', 'POST', (id) => `/api/otp/${id}`, () => ({ otp: fx.code })],
      ['otp-received', 'POST', () => '/api/jobs/otp-received', (id) => ({ otpRequestId: id, otpValue: fx.code })],
    ]) {
      const real = name.startsWith('otp') ? fx.otp : fx.job;
      const none = uuid();
      const a = await server.api(m, path(real), { token: B.token, body: body ? body(real) : undefined });
      const b = await server.api(m, path(none), { token: B.token, body: body ? body(none) : undefined });
      assert.equal(a.status, 404, `${name}: ${a.status} ${a.text}`);
      assert.equal(mask(a.text, real), mask(b.text, none), `${name}: A's and a missing id answer alike`);
    }
    await otpUntouched(fx);
    await stillRunning(fx);
  });
});

describe('WebSocket: principal x message', () => {
  let fixtures;
  before(async () => {
    fixtures = new Map();
    const todo = [];
    for (const row of WS.filter((r) => r.fixture)) {
      const per = {};
      fixtures.set(row.name, per);
      for (const p of P) todo.push(async () => { per[p] = await row.fixture(); });
    }
    await pool(todo, 4, (f) => f());
  });

  for (const row of WS) {
    for (const p of P) {
      const want = row.want[p];
      test(`${row.name} as ${p} -> ${want}`, { timeout: 60_000 }, async () => {
        const fx = row.fixture ? fixtures.get(row.name)[p] : {};
        const where = `${row.name} as ${p}`;
        const isAuth = row.name === 'auth';
        const c = p === 'anon' || isAuth
          ? await server.connect({ label: where })
          : await Client.open(server, token(p), { label: where });
        if (p === 'B') openB.push(c);
        const ref = `m-${p}`;
        let msg;
        if (isAuth) msg = p === 'anon' ? { type: 'auth', ref } : { type: 'auth', token: token(p), ref };
        else if (row.name.startsWith('subscribe')) msg = { type: 'subscribe', job_id: jobA, ref };
        else if (row.name.startsWith('unsubscribe')) {
          if (p !== 'anon') await c.subscribe(jobA, { ref: `pre-${p}` });
          msg = { type: 'unsubscribe', job_id: jobA, ref };
        } else if (row.name.startsWith('otp.submit')) msg = { type: 'otp.submit', otp_request_id: fx.otp, value: fx.code, ref };
        else msg = { type: 'ping', ref };
        const from = c.cursor;
        c.send(msg);
        const ans = await c.waitFor(
          (m) => m.ref === ref || m.type === 'hello' || (m.type === 'error' && m.ref === undefined),
          { from, what: `the answer to ${row.name}`, timeout: 20_000 },
        );
        const [expect, close] = want.split(', ');
        switch (expect) {
          case 'hello':
            assert.equal(ans.type, 'hello', `${where}: ${JSON.stringify(ans)}`);
            assert.equal(ans.user_id, p === 'admin' ? null : token(p) === A.token ? A.id : B.id);
            break;
          case 'snapshot':
            assert.equal(ans.type, 'snapshot', `${where}: ${JSON.stringify(ans).slice(0, 300)}`);
            assert.equal(ans.job_id, jobA);
            assert.equal(ans.job.user_id, A.id);
            break;
          case 'ack':
          case 'pong':
            assert.equal(ans.type, expect, `${where}: ${JSON.stringify(ans)}`);
            break;
          case 'otp ok':
            assert.equal(ans.type, 'otp.result', `${where}: ${JSON.stringify(ans)}`);
            assert.equal(ans.ok, true, `${where}: ${JSON.stringify(ans)}`);
            await otpVerified(fx);
            break;
          default:
            assert.equal(ans.type, 'error', `${where}: ${JSON.stringify(ans).slice(0, 300)}`);
            assert.equal(ans.code, expect, `${where}: ${JSON.stringify(ans)}`);
            if (fx.otp) await otpUntouched(fx);
        }
        if (close) {
          const cl = await c.waitClose();
          assert.equal(`close ${cl.code}`, close, `${where}: closed with ${cl.code}`);
          assert.ok(!c.messages.some((x) => x.msg.type === 'hello' || x.msg.type === 'pong' || x.msg.job_id === jobA),
            `${where}: nothing but the error reached an unauthenticated socket: ${c.tail()}`);
        } else {
          await c.ping(); // the connection goes on
          if (p !== 'B') await c.closeAndWait();
        }
        assertCleanStream(c);
      });
    }
  }

  test('after A\'s job changed, B\'s sockets hold nothing of it but the refusals', { timeout: 60_000 }, async () => {
    const before1 = await server.getJob(jobA);
    const otp = before1.otp_requests.find((o) => o.status === 'requested');
    const { code } = await server.waitCode(otp.id);
    const r = await server.api('POST', `/api/otp/${otp.id}`, { token: A.token, body: { otp: code } });
    assert.equal(r.status, 200, r.text);
    await server.waitJob(jobA, (j) => j.otp_requests.some((o) => o.id === otp.id && o.status === 'verified'),
      { what: 'the accepted OTP committed' });
    assert.ok(openB.length >= 4, 'B\'s sockets are open');
    for (const c of openB) {
      await c.ping();
      const leaked = c.messages.map((e) => e.msg).filter((m) => (m.job_id === jobA || m.job?.id === jobA) && m.type !== 'error');
      assert.deepEqual(leaked, [], `${c.label}: messages of A's job`);
      const rows = c.frames.filter((f) => f.text && f.text.includes(jobA) && !/"type":"error"/.test(f.text));
      assert.deepEqual(rows, [], `${c.label}: frames naming A's job`);
    }
  });
});

describe('bad tokens on HTTP and both ways of authenticating a socket', () => {
  let cases;
  before(() => {
    cases = badTokens({ sub: A.id, secret: server.jwtSecret, adminKey: server.adminKey });
  });

  test('control: a token minted by this file with the server\'s secret is accepted', { timeout: 30_000 }, async () => {
    const t = goodForged({ sub: A.id, secret: server.jwtSecret });
    const r = await server.api('GET', `/api/jobs/${jobA}`, { token: t });
    assert.equal(r.status, 200, r.text);
    const c = await Client.open(server, t, { label: 'forged-good' });
    assert.equal(c.messages[0].msg.user_id, A.id);
    await c.closeAndWait();
  });

  // 31 kinds of wrong token; each on three channels.
  const names = Object.keys(badTokens({ sub: uuid(), secret: 'x'.repeat(16), adminKey: 'admin-0123456789abcdef' }));
  for (const name of names) {
    test(`${name}: HTTP 401, ?token= and auth message: unauthorized + close 4401`, { timeout: 30_000 }, async () => {
      const t = cases[name];
      const sig = t.split('.')[2];
      for (const path of [`/api/jobs/${jobA}`, '/metrics', '/api/sim/inbox']) {
        const r = await server.api('GET', path, { token: t });
        assert.equal(r.status, 401, `HTTP ${path}: ${r.status} ${r.text.slice(0, 300)}`);
        assertErrorBody(r, 'unauthorized', `HTTP ${path}`);
        assert.ok(!r.text.includes(t), 'the 401 does not echo the token');
        if (sig && sig.length >= 8) assert.ok(!r.text.includes(sig), 'the 401 does not echo the signature');
      }
      for (const how of ['?token=', 'auth message']) {
        const c = how === '?token='
          ? await server.connect({ token: t, label: `${name} ${how}` })
          : await server.connect({ label: `${name} ${how}` });
        if (how === 'auth message') c.send({ type: 'auth', token: t, ref: 'a1' });
        const e = await c.waitFor((m) => m.type === 'error', { what: 'error', closeOk: true });
        const close = await c.waitClose();
        assert.ok(e, `${how}: an error before the close (${close.code})`);
        assert.equal(e.code, 'unauthorized', `${how}: ${JSON.stringify(e)}`);
        assert.equal(close.code, 4401, `${how}: close ${close.code}`);
        assert.deepEqual(c.messages.map((x) => x.msg.type), ['error'], `${how}: the error is all it gets`);
        assert.ok(!JSON.stringify(e).includes(t), `${how}: the error does not echo the token`);
      }
    });
  }
});
