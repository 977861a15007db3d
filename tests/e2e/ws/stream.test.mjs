// The delta stream of one job (docs/protocol.md "Ordering and resuming", "Server → client"):
//   1. subscribe right after creating a job: a snapshot, then every delta with seq +1,
//      OTPs answered over the socket, and snapshot + deltas = the committed state;
//   2. two subscribers of one job receive identical deltas;
//   7. no frame the server sent during (1) holds an OTP code (DESIGN.md rule 5).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Client, Server, assertCleanStream, containsCode, diffJournal, diffState, driveOtpsOverSocket, journal, settle,
} from '../lib/index.mjs';

let server;
// What test 1 saw, for test 7.
let captured = null;

before(async () => {
  server = new Server({ name: 'stream', sim: 'latency_ms=20,voucher_polls=1,poll_after_ms=20' });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

test('1. subscribe after POST /api/jobs: snapshot, deltas seq+1 to the end, OTPs over the socket, state = GET', { timeout: 120_000 }, async () => {
  const u = server.user();
  const c = await Client.open(server, u.token, { label: 'A' });
  const hello = c.messages[0].msg;
  assert.equal(hello.type, 'hello');

  const created = await server.createJob(u.token, { count: 2 });
  const id = created.job_id;
  const first = await c.subscribe(id, { ref: 's1' });

  assert.equal(first.type, 'snapshot', `the first message for the job is a snapshot: ${JSON.stringify(first).slice(0, 300)}`);
  assert.equal(first.job_id, id);
  assert.equal(first.ref, 's1', 'the snapshot echoes the subscribe ref');
  assert.ok(Number.isInteger(first.seq) && first.seq >= created.seq,
    `snapshot seq ${first.seq} is an integer, not older than the 201's seq ${created.seq}`);
  assert.equal(first.job.id, id);
  assert.ok(Array.isArray(first.steps) && first.steps.length >= 1, 'snapshot has the steps');
  assert.ok(Array.isArray(first.otp_requests), 'snapshot has otp_requests');
  assert.equal(first.reason, undefined, 'a plain subscribe is not a resync');

  const { results, codes } = await driveOtpsOverSocket(server, c, id, { timeout: 90_000 });
  assert.ok(results.length >= 2, `OTPs were asked and answered over the socket (${results.length})`);
  for (const r of results) {
    assert.equal(r.type, 'otp.result', `otp.submit is answered by otp.result: ${JSON.stringify(r)}`);
    assert.equal(r.ok, true, `the right code is accepted: ${JSON.stringify(r)}`);
    assert.ok(Number.isInteger(r.attempts_left), `otp.result carries attempts_left: ${JSON.stringify(r)}`);
  }

  const committed = await settle(server, c, id, { token: u.token, timeout: 60_000 });
  assert.equal(committed.job.status, 'completed', 'the job ends completed');
  assert.equal(c.view(id).job.status, 'completed', 'the client saw it complete');

  assertCleanStream(c);
  const jobMsgs = c.jobMessages(id);
  assert.equal(jobMsgs[0].type, 'snapshot');
  assert.equal(jobMsgs.filter((m) => m.type === 'snapshot').length, 1, 'exactly one snapshot');
  const seqs = jobMsgs.slice(1).map((m) => m.seq);
  const want = Array.from({ length: committed.seq - first.seq }, (_, i) => first.seq + 1 + i);
  assert.deepEqual(seqs, want, `deltas ${first.seq + 1}..${committed.seq}, each once, in order`);
  assert.ok(jobMsgs.slice(1).every((m) => m.type === 'delta'), 'after the snapshot only deltas');

  assert.deepEqual(diffState(c.view(id), committed), [], 'snapshot + deltas = GET /api/jobs/{id}');
  const rows = journal(server, id);
  assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: committed.seq }, (_, i) => i + 1), 'job_events holds 1..seq');
  assert.deepEqual(diffJournal(jobMsgs.slice(1), rows), [], 'every delta is its job_events row (seq, ts, table, op, row)');
  // Live deltas carry their commit time: after the change, not after they arrived.
  for (const m of jobMsgs.slice(1)) {
    assert.ok(Number.isInteger(m.cts) && m.cts >= m.ts, `delta ${m.seq}: cts ${m.cts} >= ts ${m.ts}`);
    assert.ok(m.cts <= Date.now() * 1000, `delta ${m.seq}: cts not in the future`);
  }
  // Deltas of one transaction share it, and commits come in order.
  for (let i = 1; i < jobMsgs.length - 1; i++) assert.ok(jobMsgs[i + 1].cts >= jobMsgs[i].cts, `cts in commit order at seq ${jobMsgs[i + 1].seq}`);
  assert.deepEqual([...c.view(id).steps.keys()], committed.steps.map((s) => s.id), 'steps in creation order');
  assert.deepEqual([...c.view(id).otps.keys()], committed.otp_requests.map((o) => o.id), 'OTP requests in request order');

  const inboxCodes = (await server.inbox()).filter((m) => m.job_id === id).map((m) => m.code);
  captured = { frames: c.frames.map((f) => f.text ?? ''), codes: [...new Set([...codes, ...inboxCodes])], client: c };
  await c.closeAndWait();
});

test('2. two subscribers of one job receive identical delta sequences', { timeout: 120_000 }, async () => {
  const u = server.user();
  const a = await Client.open(server, u.token, { label: 'A' });
  const b = await Client.open(server, u.token, { label: 'B' });
  const admin = await Client.open(server, server.adminKey, { label: 'admin' });
  const { job_id: id } = await server.createJob(u.token, { count: 1 });
  const [sa, sb, sc] = await Promise.all([a.subscribe(id), b.subscribe(id), admin.subscribe(id)]);
  for (const s of [sa, sb, sc]) assert.equal(s.type, 'snapshot');

  await driveOtpsOverSocket(server, a, id, { timeout: 90_000 });
  const committed = await settle(server, a, id, { token: u.token, timeout: 60_000 });
  await settle(server, b, id, { token: u.token, timeout: 60_000 });
  await settle(server, admin, id, { timeout: 60_000 });
  for (const c of [a, b, admin]) assertCleanStream(c);

  const from = Math.max(sa.seq, sb.seq, sc.seq);
  const deltas = (c) => c.jobMessages(id).filter((m) => m.type === 'delta' && m.seq > from);
  assert.ok(deltas(a).length > 0, 'the job changed after both subscribed');
  assert.deepEqual(deltas(b), deltas(a), 'B received exactly what A received (seq, ts, table, op, row)');
  assert.deepEqual(deltas(admin), deltas(a), 'the admin subscriber too');
  for (const c of [a, b, admin]) {
    assert.equal(c.view(id).seq, committed.seq);
    assert.deepEqual(diffState(c.view(id), committed), [], `${c.label}: state = GET`);
    await c.closeAndWait();
  }
});

test('7. no frame sent during test 1 holds an OTP code, otp.result frames included', () => {
  assert.ok(captured, 'test 1 ran to its end (it captures the frames)');
  const { frames, codes, client } = captured;
  assert.ok(codes.length >= 2, 'the inbox had the job\'s codes');
  assert.ok(client.messages.some((e) => e.msg.type === 'otp.result'), 'otp.result frames were captured');
  const leaks = [];
  for (const code of codes) {
    frames.forEach((f, i) => {
      if (containsCode(f, code)) leaks.push(`frame ${i} holds code ${code}: ${f.slice(0, 300)}`);
    });
  }
  assert.deepEqual(leaks, [], 'OTP values never reach a client');
  // Nor do rows carry a field meant for one (rule 5; docs/protocol.md "Rows never contain...").
  const forbidden = new Set(['otp_value', 'otp_code', 'auth_token', 'session_token']);
  const found = [];
  const walk = (v, where) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`));
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (forbidden.has(k)) found.push(`${where}.${k}`);
        walk(x, `${where}.${k}`);
      }
    }
  };
  client.messages.forEach((e) => walk(e.msg, `#${e.i}(${e.msg.type})`));
  assert.deepEqual(found, [], 'no OTP value or session token field in any message');
});
