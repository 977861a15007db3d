// Per-address and per-user limits (issue 12, items 4-8), each against the real server:
//
//   - per client address: open connections (HTTP and both WebSocket endpoints count) and
//     new connections per second; past either the socket is closed at accept, another
//     address is not affected, and /metrics counts each refusal by limit;
//   - per user: running jobs (429 too_many_live_jobs), job creations and retries per
//     minute (429 rate_limited + Retry-After), OTP submissions per minute over HTTP and
//     the socket together (429 / error rate_limited with retry_after_s), WebSocket
//     connections (error too_many_connections, close 4429); the admin key is not limited;
//   - jobwire.v1 replies (pongs here) count against the connection's queue bound like
//     deltas: a client that sends without reading is closed (4008), the server's memory
//     does not follow the flood;
//   - database reads: one connection has at most 8 at the store, the rest wait their turn
//     at the connection and are all answered in order; an unsubscribe drops the read of a
//     subscribe still waiting (answered unsubscribed); a commit is not held behind reads
//     stuck on a lock;
//   - GET /api/jobs?before= another user's job answers exactly like an unknown id.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Client, SANITIZED, Server, sleep, uuid } from './lib.mjs';

const metric = (text, name) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
};

async function metrics(server) {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200);
  return r.text;
}

// A raw TCP connection from `from` (a loopback address): resolves {sock, refused} once
// the server either keeps it open for `settleMs` (admitted) or closes it (refused).
function rawConnect(port, { from = '127.0.0.1', settleMs = 300 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let done = false;
    const finish = (refused) => {
      if (done) return;
      done = true;
      resolve({ sock, refused });
    };
    sock.on('connect', () => {
      // Admitted sockets answer a request; refused ones are closed before any answer.
      sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    sock.on('data', () => finish(false));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
    setTimeout(() => finish(false), settleMs + 5000).unref();
  });
}

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

describe('per client address', () => {
  let server;
  before(async () => {
    server = new Server({ name: 'sec_quota_ip', sim: 'latency_ms=5,otp=none,voucher_polls=0', args: ['--max-connections-per-ip', '6', '--connection-rate-per-ip', '1000'] });
    await server.start();
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('open connections: the 7th from one address is closed at accept, both WebSocket endpoints count, another address is served', { timeout: 60_000 }, async () => {
    // The test's own fetch() keeps pooled connections from 127.0.0.1: the held ones come
    // from an address of their own.
    const A = '127.0.0.5';
    const before0 = metric(await metrics(server), 'jobwire_limit_refusals_total{limit="ip_connections"}');
    const u = server.user();
    const held = [];
    for (let i = 0; i < 3; i++) held.push((await rawConnect(server.port, { from: A })).sock);
    const ws = await Client.open(server, u.token, { label: 'ws-held', localAddress: A });
    const rt = await Client.connect(server, { path: '/realtime/v1/websocket', protocol: null, query: { apikey: u.token, vsn: '1.0.0' }, label: 'rt-held', localAddress: A });
    // Five held: 3 raw HTTP, 1 jobwire.v1, 1 Supabase. One more fits, the one after does not.
    const sixth = await rawConnect(server.port, { from: A });
    assert.equal(sixth.refused, false, 'the 6th connection is admitted');
    const seventh = await rawConnect(server.port, { from: A });
    assert.equal(seventh.refused, true, 'the 7th connection from the address is closed at accept');
    const other = await rawConnect(server.port, { from: '127.0.0.2' });
    assert.equal(other.refused, false, 'another address is not affected');
    other.sock.destroy();
    // One closed: room for one again (the count follows closes of every kind).
    sixth.sock.destroy();
    ws.terminate();
    let again;
    for (let i = 0; i < 50; i++) {
      again = await rawConnect(server.port, { from: A });
      if (!again.refused) break;
      await sleep(100);
    }
    assert.equal(again.refused, false, 'admitted again once connections closed');
    again.sock.destroy();
    for (const s of held) s.destroy();
    rt.terminate();
    const m = await metrics(server);
    assert.ok(metric(m, 'jobwire_limit_refusals_total{limit="ip_connections"}') >= before0 + 1, 'counted in /metrics');
  });
});

describe('connection rate per client address', () => {
  let server;
  before(async () => {
    server = new Server({ name: 'sec_quota_rate', sim: 'latency_ms=5,otp=none,voucher_polls=0', args: ['--connection-rate-per-ip', '5'] });
    await server.start();
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('a burst past twice the rate is closed at accept; the address is served again a moment later', { timeout: 60_000 }, async () => {
    // The bucket holds twice the rate (10) and refills 5 a second from the first
    // connection on: the bound on admissions follows from how long the burst took,
    // so a slow machine widens it instead of failing the test.
    const results = [];
    const began = performance.now();
    for (let i = 0; i < 30; i++) {
      const r = await rawConnect(server.port, { from: '127.0.0.6', settleMs: 0 });
      results.push(r.refused);
      r.sock.destroy();
    }
    const elapsed = (performance.now() - began) / 1000;
    const admitted = results.filter((x) => !x).length;
    const most = 10 + Math.floor(5 * elapsed) + 1;
    assert.ok(results.slice(0, 10).every((x) => !x), 'the first ten (the bucket) are admitted');
    assert.ok(admitted <= most, `at most ${most} of a burst of 30 admitted in ${elapsed.toFixed(2)} s (${admitted})`);
    assert.ok(most < 30, `the burst took ${elapsed.toFixed(2)} s: too slow to tell`);
    const other = await rawConnect(server.port, { from: '127.0.0.3' });
    assert.equal(other.refused, false, 'another address is not affected');
    other.sock.destroy();
    await sleep(1100);
    const back = await rawConnect(server.port, { from: '127.0.0.6' });
    assert.equal(back.refused, false, 'served again once the bucket refilled');
    back.sock.destroy();
    const m = await metrics(server);
    assert.ok(metric(m, 'jobwire_limit_refusals_total{limit="ip_connection_rate"}') >= 30 - admitted);
  });
});

describe('per user', () => {
  let server; // logins wait for OTPs: jobs stay running
  let failing; // every job fails at once: creations that leave nothing running
  before(async () => {
    server = new Server({
      name: 'sec_quota_user',
      sim: 'latency_ms=5,voucher_polls=0',
      args: ['--max-live-jobs-per-user', '2', '--job-rate-per-user', '60', '--otp-rate-per-user', '3', '--max-ws-per-user', '2'],
    });
    failing = new Server({
      name: 'sec_quota_fail',
      sim: 'latency_ms=5,otp=none,voucher_polls=0,fail_rate=1,fail_steps=gyftr_login,fail_retryable=0',
      args: ['--job-rate-per-user', '1'], // one a minute
    });
    await Promise.all([server.start(), failing.start()]);
  });
  after(async () => {
    if (server) await server.stop();
    if (failing) await failing.stop();
  });

  test('running jobs: the 3rd is 429 too_many_live_jobs with Retry-After; the admin key is not limited; a finished job frees a slot', { timeout: 60_000 }, async () => {
    const u = server.user();
    const a = await server.createJob(u.token);
    await server.createJob(u.token);
    const r = await server.api('POST', '/api/jobs', { token: u.token, body: { transaction_amount: 100, transaction_count: 1 } });
    assert.equal(r.status, 429, r.text);
    assert.equal(r.json.error.code, 'too_many_live_jobs');
    assert.match(r.json.error.message, /--max-live-jobs-per-user/);
    assert.ok(Number(r.headers.get('retry-after')) >= 1, 'Retry-After');
    const byAdmin = await server.api('POST', '/api/jobs', { token: server.adminKey, body: { transaction_amount: 100, transaction_count: 1, user_id: u.id } });
    assert.equal(byAdmin.status, 201, 'the admin key is not limited');
    const c = await server.api('POST', `/api/jobs/${a.job_id}/cancel`, { token: u.token, body: {} });
    assert.equal(c.status, 200, c.text);
    await server.waitJob(a.job_id, (j) => j.job.status === 'cancelled', { what: 'cancelled' });
    // Cancelled: one of the user's own two slots is free again (the admin's job counts
    // for the user too, so two of three are running: one more is refused).
    const d = await server.api('POST', '/api/jobs', { token: u.token, body: { transaction_amount: 100, transaction_count: 1 } });
    assert.equal(d.status, 429, 'the admin-started job runs for the user too');
    const m = await metrics(server);
    assert.ok(metric(m, 'jobwire_limit_refusals_total{limit="user_live_jobs"}') >= 2);
  });

  test('creations and retries per minute: past the budget 429 rate_limited with Retry-After, a retry too; another user is not affected', { timeout: 60_000 }, async () => {
    const u = failing.user();
    const ids = [(await failing.createJob(u.token)).job_id];
    const r = await failing.api('POST', '/api/jobs', { token: u.token, body: { transaction_amount: 100, transaction_count: 1 } });
    assert.equal(r.status, 429, r.text);
    assert.equal(r.json.error.code, 'rate_limited');
    const after = Number(r.headers.get('retry-after'));
    assert.ok(after >= 1 && after <= 61, `Retry-After ${after} (one creation a minute)`);
    await failing.waitJob(ids[0], (j) => j.job.status === 'failed', { what: 'failed' });
    const retry = await failing.api('POST', `/api/jobs/${ids[0]}/retry`, { token: u.token, body: {} });
    assert.equal(retry.status, 429, `a retry spends the same budget: ${retry.text}`);
    assert.equal(retry.json.error.code, 'rate_limited');
    const v = failing.user();
    await failing.createJob(v.token);
    const byAdmin = await failing.api('POST', `/api/jobs/${ids[0]}/retry`, { token: failing.adminKey, body: {} });
    assert.equal(byAdmin.status, 200, `the admin key is not limited: ${byAdmin.text}`);
    const m = await metrics(failing);
    assert.ok(metric(m, 'jobwire_limit_refusals_total{limit="user_job_rate"}') >= 2);
  });

  test('OTP submissions per minute, HTTP and socket together: then 429 / error rate_limited', { timeout: 60_000 }, async () => {
    const u = server.user();
    const c = await Client.open(server, u.token, { label: 'otp' });
    for (let i = 0; i < 2; i++) {
      const r = await server.api('POST', `/api/otp/${uuid()}`, { token: u.token, body: { otp: '123456' } });
      assert.equal(r.status, 404, 'an unknown request still spends a submission');
    }
    const e1 = await c.request({ type: 'otp.submit', otp_request_id: uuid(), value: '123456' });
    assert.equal(e1.code, 'not_found', 'the 3rd, over the socket');
    const e2 = await c.request({ type: 'otp.submit', otp_request_id: uuid(), value: '123456' });
    assert.equal(e2.type, 'error');
    assert.equal(e2.code, 'rate_limited');
    assert.ok(e2.retry_after_s >= 1 && e2.retry_after_s <= 21, `retry_after_s ${e2.retry_after_s} (one every 20 s)`);
    const r = await server.api('POST', `/api/otp/${uuid()}`, { token: u.token, body: { otp: '123456' } });
    assert.equal(r.status, 429);
    assert.equal(r.json.error.code, 'rate_limited');
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
    await c.ping(); // the connection goes on
    await c.closeAndWait();
  });

  test('WebSocket connections: the 3rd of a user gets too_many_connections and close 4429; a close makes room', { timeout: 60_000 }, async () => {
    const u = server.user();
    const a = await Client.open(server, u.token, { label: 'a' });
    const b = await Client.open(server, u.token, { label: 'b' });
    const c = await Client.connect(server, { token: u.token, label: 'c' });
    const e = await c.waitFor((m) => m.type === 'error', { what: 'the refusal', closeOk: true });
    assert.equal(e.code, 'too_many_connections');
    const closed = await c.waitClose();
    assert.equal(closed.code, 4429);
    await a.closeAndWait();
    let d;
    for (let i = 0; i < 50; i++) {
      d = await Client.connect(server, { token: u.token, label: 'd' });
      const first = await d.waitFor((m) => m.type === 'hello' || m.type === 'error', { closeOk: true });
      if (first && first.type === 'hello') break;
      await d.waitClose();
      await sleep(100);
    }
    assert.ok(d.messages.some((m) => m.msg.type === 'hello'), 'admitted once one closed');
    await Client.open(server, server.adminKey, { label: 'admin' }).then((x) => x.closeAndWait());
    await b.closeAndWait();
    await d.closeAndWait();
    const m = await metrics(server);
    assert.ok(metric(m, 'jobwire_limit_refusals_total{limit="user_websockets"}') >= 1);
  });
});

describe('replies are bounded like deltas', () => {
  let server;
  before(async () => {
    // No message budget here: the flood must reach the reply bound, not the rate limit.
    server = new Server({ name: 'sec_quota_replies', sim: 'latency_ms=5,otp=none,voucher_polls=0', args: ['--ws-max-queue', '65536', '--ws-message-rate', '0'] });
    await server.start();
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('a client that floods pings without reading is closed (4008); memory does not follow the flood', { timeout: 120_000 }, async () => {
    const u = server.user();
    const c = await Client.open(server, u.token, { label: 'flood' });
    const rss0 = rssKb(server.pid);
    c.ws._socket.pause(); // read nothing from now on
    const ping = JSON.stringify({ type: 'ping', ref: 'p'.repeat(200) });
    // 300,000 pings of ~220 bytes: ~66 MB of pongs, far past the socket buffers.
    for (let i = 0; i < 300; i++) {
      for (let k = 0; k < 1000; k++) c.ws.send(ping);
      await new Promise((resolve) => setImmediate(resolve));
      if (c.ws.readyState !== 1) break;
    }
    let slow = 0;
    for (let i = 0; i < 300 && !slow; i++) {
      slow = metric(await metrics(server), 'jobwire_ws_slow_closes_total');
      if (!slow) await sleep(100);
    }
    assert.equal(slow, 1, 'closed as a slow consumer');
    const grown = rssKb(server.pid) - rss0;
    if (!SANITIZED) assert.ok(grown < 64 * 1024, `server RSS grew ${grown} KB (< 64 MB)`);
    c.ws._socket.resume();
    const closed = await c.waitClose(30_000);
    assert.ok([4008, 1006].includes(closed.code), `closed (${closed.code})`);
    assert.ok(server.logText().includes('bytes of replies queued'), 'the close is logged with its cause');
    const other = await Client.open(server, u.token, { label: 'after' });
    await other.ping();
    await other.closeAndWait();
  });
});

describe('database reads', () => {
  let server;
  before(async () => {
    server = new Server({ name: 'sec_quota_reads', sim: 'latency_ms=5,otp=none,voucher_polls=0', args: ['--finished-job-ttl', '1'] });
    await server.start();
  });
  after(async () => {
    if (server) await server.stop();
  });

  // Holds an ACCESS EXCLUSIVE lock on otp_requests (a job read scans it, a job_runs
  // write never touches it) until release() is called.
  async function lockOtpRequests() {
    const p = spawn('psql', ['-XqAt', '-v', 'ON_ERROR_STOP=1', server.db], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stdin.write("BEGIN;\nLOCK TABLE otp_requests IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n");
    for (let i = 0; i < 100 && !out.includes('locked'); i++) await sleep(50);
    assert.ok(out.includes('locked'), 'the lock is held');
    return async () => {
      p.stdin.end('COMMIT;\n');
      await new Promise((resolve) => p.on('exit', resolve));
    };
  }

  test('one connection has at most 8 reads at the store, the rest wait their turn; an unsubscribe drops its read; commits go on', { timeout: 120_000 }, async () => {
    const u = server.user();
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push((await server.createJob(u.token)).job_id);
    for (const id of ids) await server.waitJob(id, (j) => j.job.status === 'completed', { what: 'completed' });
    for (let i = 0; i < 100; i++) {
      if (metric(await metrics(server), 'jobwire_jobs_in_memory') === 0) break;
      await sleep(100);
    }
    const c = await Client.open(server, u.token, { label: 'reads' });
    const release = await lockOtpRequests();
    let queued;
    try {
      const from = c.cursor;
      ids.forEach((id, i) => c.send({ type: 'subscribe', job_id: id, ref: `s${i}` }));
      // The store holds 8 of them (the first stuck on the lock); 4 wait at the connection.
      for (let i = 0; i < 100; i++) {
        queued = metric(await metrics(server), 'jobwire_db_reads_queued');
        if (queued === 8) break;
        await sleep(50);
      }
      assert.equal(queued, 8, 'at most 8 reads of one connection at the store');
      // Withdrawn before its read was sent: answered "unsubscribed" at once.
      const un = await c.request({ type: 'unsubscribe', job_id: ids[10], ref: 'u10' });
      assert.equal(un.type, 'ack');
      const gone = await c.waitFor((m) => m.ref === 's10', { from, what: 'the withdrawn subscribe' });
      assert.equal(gone.code, 'unsubscribed');
      // A commit is not held behind the stuck reads: a new job is created (201 after
      // its first batch committed).
      const j = await server.createJob(u.token);
      assert.ok(j.job_id, 'created while reads wait');
      assert.equal(metric(await metrics(server), 'jobwire_db_reads_queued'), 8, 'still waiting on the lock');
    } finally {
      await release();
    }
    for (let i = 0; i < 12; i++) {
      const s = await c.waitFor((m) => m.ref === `s${i}`, { timeout: 20_000 });
      if (i === 10) continue;
      assert.equal(s.type, 'snapshot', `s${i}: ${JSON.stringify(s).slice(0, 200)}`);
    }
    assert.equal(c.messages.filter((m) => m.msg.type === 'snapshot' && m.msg.job_id === ids[10]).length, 0, 'no snapshot of the withdrawn job');
    const order = c.messages.filter((m) => /^s\d+$/.test(m.msg.ref || '')).map((m) => Number(m.msg.ref.slice(1)));
    assert.deepEqual(order, [10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11], 'answered in order (the withdrawn one at once)');
    await c.closeAndWait();
  });
});

describe('GET /api/jobs?before=', () => {
  let server;
  before(async () => {
    server = new Server({ name: 'sec_quota_before', sim: 'latency_ms=5,otp=none,voucher_polls=0' });
    await server.start();
  });
  after(async () => {
    if (server) await server.stop();
  });

  test("another user's job id answers exactly like an unknown one", { timeout: 60_000 }, async () => {
    const a = server.user();
    const b = server.user();
    await server.createJob(a.token);
    const mine = await server.createJob(a.token);
    const theirs = await server.createJob(b.token);
    const list = (before) => server.api('GET', `/api/jobs?before=${before}`, { token: a.token });
    const foreign = await list(theirs.job_id);
    const unknown = await list(uuid());
    assert.equal(foreign.status, 200);
    assert.equal(foreign.text, unknown.text, 'the same answer');
    assert.deepEqual(foreign.json, { jobs: [], next_before: null });
    const own = await list(mine.job_id);
    assert.equal(own.json.jobs.length, 1, 'an own job id pages as before');
  });
});
