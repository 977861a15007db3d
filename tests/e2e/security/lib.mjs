// lib.mjs - helpers of the security suites (tests/e2e/security/*.test.mjs), on top of the
// e2e harness (../lib/index.mjs: Server, Client, psql, ...), which it re-exports.
//
//   - forged tokens: HS256 JWTs signed here with node's crypto (so a test can set any
//     header or claim), unsigned `alg: none` tokens, real RS256 tokens, broken shapes;
//   - a recorder of every HTTP exchange a test makes (status, headers, body);
//   - OTP helpers: a code that is surely wrong, failing a job by exhausting its OTPs;
//   - the database as text (every row of every table), for the secret search.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { TERMINAL, psql, sleep } from '../lib/index.mjs';

export * from '../lib/index.mjs';

// --- tokens ---------------------------------------------------------------------------

export const b64url = (buf) => Buffer.from(buf).toString('base64url');
const part = (obj) => b64url(typeof obj === 'string' ? obj : JSON.stringify(obj));
export const nowS = () => Math.floor(Date.now() / 1000);

// An HS256 (or HS384/HS512 with alg) JWT over exactly these header and payload values;
// strings are taken as the raw JSON text (for duplicate keys and broken JSON).
export function signHs({ header = { alg: 'HS256', typ: 'JWT' }, payload, secret, hash = 'sha256' }) {
  const input = `${part(header)}.${part(payload)}`;
  const sig = crypto.createHmac(hash, secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

let rsaKey = null;
// A real RS256 JWT, signed with a fresh RSA key the server has never seen.
export function signRs256(payload) {
  if (!rsaKey) rsaKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const input = `${part({ alg: 'RS256', typ: 'JWT' })}.${part(payload)}`;
  return `${input}.${b64url(crypto.sign('sha256', Buffer.from(input), rsaKey))}`;
}

// The tokens every endpoint must refuse (401 on HTTP; error unauthorized + close 4401 on
// the socket), each with why. sub is a real user's id, so only the named flaw is wrong;
// secret is the server's JWT secret.
export function badTokens({ sub, secret, adminKey }) {
  const now = nowS();
  const claims = { sub, iat: now - 10, exp: now + 3600 };
  const hs = (payload, header) => signHs({ payload, secret, header });
  const t = {
    'expired (exp 10 min ago)': hs({ sub, iat: now - 3600, exp: now - 600 }),
    'not yet valid (nbf in 10 min)': hs({ ...claims, nbf: now + 600 }),
    'issued in the future (iat in 10 min)': hs({ ...claims, iat: now + 600 }),
    'alg none, no signature': `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.`,
    'alg none, with the HS256 signature kept': (() => {
      const good = hs(claims);
      return `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.${good.split('.')[2]}`;
    })(),
    'alg "None"': `${part({ alg: 'None', typ: 'JWT' })}.${part(claims)}.`,
    'alg "hs256" (case)': hs(claims, { alg: 'hs256', typ: 'JWT' }),
    'alg HS384 with the right secret': signHs({ header: { alg: 'HS384', typ: 'JWT' }, payload: claims, secret, hash: 'sha384' }),
    'alg HS512 with the right secret': signHs({ header: { alg: 'HS512', typ: 'JWT' }, payload: claims, secret, hash: 'sha512' }),
    'alg RS256 (a real RSA signature)': signRs256(claims),
    'alg RS256 header, HMAC signature with the secret': hs(claims, { alg: 'RS256', typ: 'JWT' }),
    'no alg in the header': hs(claims, { typ: 'JWT' }),
    'typ JWS': hs(claims, { alg: 'HS256', typ: 'JWS' }),
    'crit header': hs(claims, { alg: 'HS256', typ: 'JWT', crit: ['exp'] }),
    'wrong secret': signHs({ payload: claims, secret: `${secret}-not` }),
    'empty secret': signHs({ payload: claims, secret: '' }),
    'signature of another payload': (() => {
      const other = hs({ ...claims, sub: crypto.randomUUID() }).split('.')[2];
      return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.${other}`;
    })(),
    'no exp': hs({ sub, iat: now - 10 }),
    'exp as a string': hs({ sub, iat: now - 10, exp: String(now + 3600) }),
    'no sub': hs({ iat: now - 10, exp: now + 3600 }),
    'sub not a UUID': hs({ ...claims, sub: 'admin' }),
    'duplicate sub in the payload': signHs({
      payload: `{"sub":"${sub}","iat":${now - 10},"exp":${now + 3600},"sub":"${crypto.randomUUID()}"}`,
      secret,
    }),
    'malformed: two parts': hs(claims).split('.').slice(0, 2).join('.'),
    'malformed: four parts': `${hs(claims)}.AAAA`,
    'malformed: empty signature': `${hs(claims).split('.').slice(0, 2).join('.')}.`,
    'malformed: header not JSON': `${b64url('{"alg":"HS256"')}.${part(claims)}.AAAA`,
    'malformed: payload not base64url': `${part({ alg: 'HS256', typ: 'JWT' })}.e30*.AAAA`,
    'malformed: garbage': `garbage-${crypto.randomBytes(12).toString('hex')}`,
    'the admin key with a character more': `${adminKey}x`,
    'the admin key but its last character': adminKey.slice(0, -1),
    'the admin key in upper case': adminKey.toUpperCase(),
  };
  return t;
}

// A valid token minted here (not by jw-mint-token): the control that shows the forging
// code makes tokens the server accepts, so the refusals above are about their flaw.
export const goodForged = ({ sub, secret }) => signHs({ payload: { sub, iat: nowS() - 10, exp: nowS() + 3600 }, secret });

// --- recording HTTP -----------------------------------------------------------------------

// Wraps server.api so every exchange is kept in log: {method, path, status, headers, text}.
export function recordHttp(server, log) {
  const orig = server.api.bind(server);
  server.api = async (method, p, opts = {}) => {
    const r = await orig(method, p, opts);
    log.push({ method, path: p, status: r.status, headers: Object.fromEntries(r.headers), text: r.text });
    return r;
  };
  return log;
}

// A raw fetch with any headers (for Origin, HEAD, OPTIONS, ...): {status, headers, text}.
export async function rawFetch(server, method, p, { headers = {}, body } = {}) {
  const r = await fetch(server.base + p, { method, headers, body, signal: AbortSignal.timeout(20_000) });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

// --- OTPs -----------------------------------------------------------------------------------

// A 6-digit code that is not code.
export const wrongCode = (code, k = 1) => String((Number(code) + k) % 1_000_000).padStart(6, '0');

// The OTP requests of a job object that wait for a code.
export const waiting = (j) => j.otp_requests.filter((o) => o.status === 'requested');

// Waits (bounded) until the job waits for a code on a request not in `seen`, with its SMS
// in the inbox; returns {job, otp, sms}.
export async function nextOtp(server, jobId, { seen = new Set(), timeout = 30_000, pred = () => true } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const j = await server.getJob(jobId);
    for (const o of waiting(j).filter((x) => !seen.has(x.id) && pred(x))) {
      const msgs = (await server.inbox()).filter((m) => m.otp_request_id === o.id);
      if (msgs.length) return { job: j, otp: o, sms: msgs.reduce((a, b) => (b.seq > a.seq ? b : a)) };
    }
    if (TERMINAL.has(j.job.status)) throw new Error(`job ${jobId} ended ${j.job.status} while a new OTP request was awaited`);
    if (Date.now() >= deadline) throw new Error(`job ${jobId}: no new OTP request within ${timeout} ms (status ${j.job.status}, seq ${j.seq})`);
    await sleep(30);
  }
}

// Fails a job by answering its OTP requests with wrong codes (over HTTP, with token) until
// the job is failed: the attempt limit fails each request, the step's retry policy asks
// again, and the last attempt fails the step and so the job. Returns the wrong codes sent.
export async function failJobByWrongOtps(server, jobId, token = server.adminKey, { timeout = 60_000 } = {}) {
  const deadline = Date.now() + timeout;
  const sent = [];
  for (;;) {
    const j = await server.getJob(jobId);
    if (j.job.status === 'failed') return sent;
    assert.ok(!TERMINAL.has(j.job.status), `job ${jobId} ended ${j.job.status}, not failed`);
    const inbox = await server.inbox();
    for (const o of waiting(j)) {
      const msgs = inbox.filter((m) => m.otp_request_id === o.id);
      if (!msgs.length) continue;
      const code = wrongCode(msgs.reduce((a, b) => (b.seq > a.seq ? b : a)).code, 1 + sent.length);
      const r = await server.api('POST', `/api/otp/${o.id}`, { token, body: { otp: code } });
      assert.ok([422, 409].includes(r.status), `a wrong code for ${o.id}: ${r.status} ${r.text}`);
      sent.push(code);
      break; // one guess per look: the job moves on
    }
    assert.ok(Date.now() < deadline, `job ${jobId} not failed within ${timeout} ms of wrong codes`);
    await sleep(20);
  }
}

// --- the database as text ---------------------------------------------------------------------

// Every base table of the public schema.
export function tables(url) {
  return psql(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1")
    .split('\n').filter(Boolean);
}

// Every row of every table as JSON text, one row a line: {table, rows: [line...]}.
export function dumpRows(url) {
  const out = {};
  for (const t of tables(url)) {
    assert.match(t, /^[a-z_][a-z0-9_]*$/, 'table name');
    const text = psql(url, `SELECT row_to_json(x)::text FROM public.${t} x`);
    out[t] = text ? text.split('\n') : [];
  }
  return out;
}
