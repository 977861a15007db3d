// tls_client.mjs - a real client of a jobwire that serves TLS: the npm `ws` package over
// wss and node's https module, both trusting only the test's own self-signed certificate.
//
// Run by tests/integration/test_tls.sh (ctest: server_tls), which makes the certificate,
// starts jobwire with --tls-cert/--tls-key on 127.0.0.1 and passes:
//   JW_TLS_BASE   https://127.0.0.1:PORT
//   JW_TLS_CA     the certificate (PEM), the only CA trusted here
//   JW_ADMIN_KEY  the server's admin key (for the sim's SMS inbox)
//   JW_TOKEN      a user's JWT
// Prints "ok - ..." per check; exits 1 at the first failed one ("not ok - ..." and why).
// Not a *.test.mjs file: it needs a server started by that script.
//
// Every wait is bounded (a failure guard, never a timing assertion).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import WebSocket from 'ws';
import { Client, PROTOCOL, assertCleanStream, diffState, driveOtpsOverSocket, settle } from '../lib/index.mjs';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (tests/integration/test_tls.sh sets it)`);
  return v;
}

const base = need('JW_TLS_BASE');
const ca = fs.readFileSync(need('JW_TLS_CA'));
const adminKey = need('JW_ADMIN_KEY');
const token = need('JW_TOKEN');
const wssBase = base.replace(/^https:/, 'wss:');
const wsBase = base.replace(/^https:/, 'ws:');

let passed = 0;
async function check(what, fn) {
  try {
    await fn();
  } catch (e) {
    console.log(`not ok - ${what}`);
    console.log(String(e && e.stack ? e.stack : e).split('\n').slice(0, 12).map((l) => `#   ${l}`).join('\n'));
    process.exit(1);
  }
  passed++;
  console.log(`ok - ${what}`);
}

// One HTTPS request, trusting only the test's certificate: {status, json, text}.
function api(method, path, { auth = token, body } = {}) {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers = { Authorization: `Bearer ${auth}` };
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(path, base), { method, headers, ca, timeout: 20_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => {
        let json = null;
        try {
          json = text ? JSON.parse(text) : null;
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode, json, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 20 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// What the harness's helpers (lib/drive.mjs: driveOtpsOverSocket, settle) ask of a server,
// over HTTPS.
const server = {
  adminKey,
  async getJob(id, auth = adminKey) {
    const r = await api('GET', `/api/jobs/${id}`, { auth });
    assert.equal(r.status, 200, `GET /api/jobs/${id}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json;
  },
  async inbox() {
    const r = await api('GET', '/api/sim/inbox', { auth: adminKey });
    assert.equal(r.status, 200, `GET /api/sim/inbox: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json.messages;
  },
};

// Opens a WebSocket; resolves {ws} on open, {refused: status} when the upgrade is answered
// with an HTTP status, {error} otherwise.
function open(url, opts) {
  const ws = new WebSocket(url, PROTOCOL, { handshakeTimeout: 10_000, perMessageDeflate: false, ...opts });
  return new Promise((resolve) => {
    let done = false;
    const settleWith = (v) => {
      if (done) return;
      done = true;
      if (!v.ws) ws.terminate();
      resolve(v);
    };
    ws.on('open', () => settleWith({ ws }));
    ws.on('unexpected-response', (req, res) => {
      settleWith({ refused: res.statusCode });
      req.destroy();
    });
    ws.on('error', (err) => settleWith({ error: err.message }));
    ws.on('close', (code) => settleWith({ error: `closed during the handshake (${code})` }));
    setTimeout(() => settleWith({ error: 'handshake timed out' }), 12_000).unref();
  });
}

const url = `${wssBase}/ws?token=${encodeURIComponent(token)}`;
// The page's own origin: jobwire derives the allowed Origin from --listen, https:// with TLS.
const pageOrigin = base;

await check('wss without the test certificate as CA is refused by the client (the server presents it)', async () => {
  const r = await open(url, { origin: pageOrigin });
  assert.ok(r.error && /self[- ]signed/i.test(r.error), `expected a self-signed certificate error, got ${JSON.stringify(r)}`);
});

await check('plain ws:// to the TLS port does not open', async () => {
  const r = await open(`${wsBase}/ws?token=${encodeURIComponent(token)}`, {});
  assert.ok(!r.ws, `a plain WebSocket opened on the TLS port: ${JSON.stringify(r)}`);
});

// jobwire drops a foreign Origin's upgrade (docs/protocol.md); test_tls.sh checks the log
// says why, and the next check opens the same URL with the https:// origin.
await check('wss from the http:// form of the page origin is refused (the default Origin is https://)', async () => {
  const r = await open(url, { ca, origin: base.replace(/^https:/, 'http:') });
  assert.ok(!r.ws, `the upgrade from an http:// Origin was accepted: ${JSON.stringify(r)}`);
});

let client;
await check('wss with the page origin connects, negotiates jobwire.v1 and says hello', async () => {
  const r = await open(url, { ca, origin: pageOrigin });
  assert.ok(r.ws, `wss did not open: ${JSON.stringify(r)}`);
  assert.equal(r.ws.protocol, PROTOCOL);
  client = new Client(server, r.ws, 'wss');
  const hello = await client.waitFor((m) => m.type === 'hello', { what: 'hello' });
  assert.equal(hello.protocol, PROTOCOL);
});

let jobId;
let first;
await check('POST /api/jobs over https creates a job (201), and subscribing over wss sends its snapshot', async () => {
  const r = await api('POST', '/api/jobs', { body: { transaction_amount: 1500, transaction_count: 2 } });
  assert.equal(r.status, 201, `POST /api/jobs: ${r.status} ${r.text.slice(0, 300)}`);
  jobId = r.json.job_id;
  first = await client.subscribe(jobId, { ref: 's1' });
  assert.equal(first.type, 'snapshot', `first message: ${JSON.stringify(first).slice(0, 300)}`);
  assert.equal(first.job_id, jobId);
});

// The Supabase endpoint over wss: its events leave as several whole frames per TLS write.
const sbEvents = [];
let sb;
await check('a Phoenix client joins the job over wss on /realtime/v1/websocket', async () => {
  const r = await new Promise((resolve) => {
    const ws = new WebSocket(`${wssBase}/realtime/v1/websocket?apikey=${encodeURIComponent(token)}&vsn=1.0.0`,
      { ca, origin: pageOrigin, handshakeTimeout: 10_000, perMessageDeflate: false });
    ws.on('open', () => resolve({ ws }));
    ws.on('error', (err) => resolve({ error: err.message }));
  });
  assert.ok(r.ws, `wss to the Supabase endpoint did not open: ${JSON.stringify(r)}`);
  sb = r.ws;
  const topic = `realtime:job-${jobId}`;
  const joined = new Promise((resolve, reject) => {
    sb.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'a text frame');
      const m = JSON.parse(data.toString()); // one whole Phoenix message per frame
      if (m.event === 'phx_reply' && m.ref === '1') resolve(m);
      else if (m.event === 'postgres_changes') sbEvents.push(m.payload.data);
    });
    sb.on('close', (code) => reject(new Error(`the Supabase socket closed (${code})`)));
    setTimeout(() => reject(new Error('no phx_reply within 20 s')), 20_000).unref();
  });
  sb.send(JSON.stringify({
    topic, event: 'phx_join', ref: '1', join_ref: '1',
    payload: {
      access_token: token,
      config: {
        postgres_changes: [
          { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` },
          { event: '*', schema: 'public', table: 'job_steps', filter: `job_run_id=eq.${jobId}` },
          { event: '*', schema: 'public', table: 'otp_requests', filter: `job_run_id=eq.${jobId}` },
        ],
      },
    },
  }));
  const reply = await joined;
  assert.equal(reply.payload.status, 'ok', JSON.stringify(reply));
});

let otp;
await check('the OTPs, read from the sim inbox over https, are answered with otp.submit over wss', async () => {
  otp = await driveOtpsOverSocket(server, client, jobId, { timeout: 120_000 });
  assert.ok(otp.results.length >= 2, `OTPs were asked and answered (${otp.results.length})`);
  for (const res of otp.results) {
    assert.equal(res.type, 'otp.result', JSON.stringify(res));
    assert.equal(res.ok, true, `the right code is accepted: ${JSON.stringify(res)}`);
  }
});

await check('the job ends completed; over wss came one snapshot, then every delta once, seqs gapless', async () => {
  const committed = await settle(server, client, jobId, { token, timeout: 60_000 });
  assert.equal(committed.job.status, 'completed', `job status ${committed.job.status}`);
  assert.equal(client.view(jobId).job.status, 'completed', 'the client saw it complete');
  assertCleanStream(client);
  const msgs = client.jobMessages(jobId).filter((m) => m.type === 'snapshot' || m.type === 'delta');
  assert.equal(msgs.filter((m) => m.type === 'snapshot').length, 1, 'exactly one snapshot');
  const seqs = msgs.slice(1).map((m) => m.seq);
  const want = Array.from({ length: committed.seq - first.seq }, (_, i) => first.seq + 1 + i);
  assert.ok(want.length > 0, 'the job changed after the snapshot');
  assert.deepEqual(seqs, want, `deltas ${first.seq + 1}..${committed.seq}, each once, in order`);
  assert.deepEqual(diffState(client.view(jobId), committed), [], 'snapshot + deltas = GET /api/jobs/{id}');
});

await check('over wss the Phoenix client got every change after its first, once, in order, to completed', async () => {
  const last = (await server.getJob(jobId)).seq;
  assert.ok(Number.isInteger(last), 'GET /api/jobs/{id} gives the committed seq');
  const deadline = Date.now() + 20_000;
  while ((sbEvents.at(-1)?.seq ?? 0) < last && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(sbEvents.length > 1, `events came (${sbEvents.length})`);
  const seqs = sbEvents.map((d) => d.seq);
  const want = Array.from({ length: last - seqs[0] + 1 }, (_, i) => seqs[0] + i);
  assert.deepEqual(seqs, want, `events ${seqs[0]}..${last}, each once, in order`);
  const jobRows = sbEvents.filter((d) => d.table === 'job_runs');
  assert.equal(jobRows.at(-1).record.status, 'completed', 'the last job_runs event says completed');
  sb.close(1000);
});

await check('the connection is still live (ping/pong) and closes cleanly', async () => {
  await client.ping();
  const closed = await client.closeAndWait();
  assert.equal(closed.code, 1000, `close code ${closed.code}`);
});

console.log(`# ${passed} checks passed`);
process.exit(0);
