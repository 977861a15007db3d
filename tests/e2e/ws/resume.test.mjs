// Resuming with `since` (docs/protocol.md "Ordering and resuming"): the deltas after
// since, then an `ack` with the ref, then live deltas, no snapshot - from the last 64 in
// memory or, further back, from job_events (up to 2,000 back); a snapshot when it cannot
// replay (since > the current seq; a job finished before this server started: see
// restart.test.mjs).
//   3a  disconnect mid-job, come back with since = the last seq seen;
//   3b  since = the current seq: the ack at once, then live deltas;
//   3c  since > the current seq: a snapshot;
//   3d  since 0 on a young job: every delta from seq 1, and they alone rebuild the job;
//   3e  both sides of the 64-delta ring on a running job (memory, then the journal);
//   3f  subscribe (journal replay) then unsubscribe at once: the unsubscribe wins;
//   3g  subscriptions whose replay is still being read count toward the limit;
//   3h  a delta replayed from the journal is the live delta, byte for byte, cts included.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Client, JobView, Server, assertCleanStream, diffJournal, diffKnownRows, diffState, driveOtpsOverSocket,
  journal, newRef, pool, settle,
} from '../lib/index.mjs';

let server;
let limited; // --ws-max-subscriptions 3, no OTPs
before(async () => {
  server = new Server({ name: 'resume', sim: 'latency_ms=10,voucher_polls=1,poll_after_ms=10' });
  limited = new Server({ name: 'resume_limited', sim: 'latency_ms=1,otp=none,voucher_polls=0', args: ['--ws-max-subscriptions', '3'] });
  await Promise.all([server.start(), limited.start()]);
});
after(async () => {
  await Promise.all([server && server.stop(), limited && limited.stop()]);
});

const isPayment = (o) => o.otp_type === 'payment';
const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

// The messages of a resumed subscription: the job's messages and the ack with ref, in
// arrival order, as "seq" for deltas, "ack", "snapshot@seq".
function shape(c, jobId, ref, from = 0) {
  return c.messages.slice(from).map((e) => e.msg)
    .filter((m) => m.job_id === jobId || (m.type === 'ack' && m.ref === ref))
    .map((m) => (m.type === 'delta' ? m.seq : m.type === 'ack' ? 'ack' : `${m.type}@${m.seq}`));
}

test('3a. disconnect mid-job, resume with since S: deltas S+1..now, ack, live deltas; no snapshot, gap or duplicate; right end state', { timeout: 120_000 }, async () => {
  const u = server.user();
  const a = await Client.open(server, u.token, { label: 'A' });
  const { job_id: id } = await server.createJob(u.token, { count: 2 });
  const snap = await a.subscribe(id);
  assert.equal(snap.type, 'snapshot');
  await server.waitPaused(id);
  await a.closeAndWait();
  const view = a.view(id);
  const S = view.seq;
  assert.ok(S >= snap.seq);

  // While A is away the job moves on: its login OTPs answered over HTTP, up to a payment OTP.
  await server.driveHttp(id, u.token, (j) => j.otp_requests.some((o) => isPayment(o) && o.status === 'requested'));
  const T = (await server.waitPaused(id, { otpPred: isPayment })).seq;
  assert.ok(T > S, `the job moved on while A was away (seq ${S} -> ${T})`);

  const b = await Client.open(server, u.token, { label: 'B' });
  b.view(id, view); // B continues A's view: any gap or duplicate shows as a problem
  const first = await b.subscribe(id, { since: S, ref: 'r3a' });
  assert.equal(first.type, 'delta', `deltas, no snapshot: ${JSON.stringify(first).slice(0, 200)}`);
  assert.equal(first.seq, S + 1);
  await b.waitRef('r3a');

  await driveOtpsOverSocket(server, b, id, { timeout: 90_000 });
  const committed = await settle(server, b, id, { token: u.token, timeout: 60_000 });
  assert.equal(committed.job.status, 'completed');
  assertCleanStream(b);
  assert.deepEqual(shape(b, id, 'r3a'), [...range(S + 1, T), 'ack', ...range(T + 1, committed.seq)],
    `B: the missed deltas ${S + 1}..${T}, the ack, then live ${T + 1}..${committed.seq}`);
  assert.deepEqual(diffState(view, committed), [], 'A\'s rows + B\'s deltas = GET');
  await b.closeAndWait();
});

test('3b. since = the current seq: the ack at once, nothing replayed, then the live deltas', { timeout: 120_000 }, async () => {
  const u = server.user();
  const { job_id: id } = await server.createJob(u.token, { count: 1 });
  const paused = await server.waitPaused(id);
  const c = await Client.open(server, u.token, { label: 'C' });
  const base = await c.subscribe(id);
  assert.equal(base.type, 'snapshot');
  await c.closeAndWait();
  const S = c.view(id).seq;
  assert.equal(S, paused.seq, 'the snapshot of a paused job is at its committed seq');

  const d = await Client.open(server, u.token, { label: 'D' });
  d.view(id, c.view(id).clone());
  const ref = newRef('eq');
  const from = d.cursor;
  d.send({ type: 'subscribe', job_id: id, since: S, ref });
  const ack = await d.waitRef(ref, { from });
  assert.deepEqual(ack, { type: 'ack', ref }, 'an ack with the ref');
  await d.ping();
  assert.deepEqual(d.messages.slice(from).map((e) => e.msg).filter((m) => m.type !== 'pong'), [ack], 'the ack is all');

  await driveOtpsOverSocket(server, d, id, { timeout: 90_000 });
  const committed = await settle(server, d, id, { token: u.token, timeout: 60_000 });
  assertCleanStream(d);
  assert.deepEqual(shape(d, id, ref), ['ack', ...range(S + 1, committed.seq)], 'then the live deltas from S+1');
  assert.deepEqual(diffState(d.view(id), committed), []);
  await d.closeAndWait();
});

test('3c. since greater than the current seq is a snapshot request', { timeout: 60_000 }, async () => {
  const u = server.user();
  const { job_id: id } = await server.createJob(u.token, { count: 1 });
  const paused = await server.waitPaused(id);
  const c = await Client.open(server, u.token, { label: 'C' });
  const first = await c.subscribe(id, { since: paused.seq + 1000, ref: 'big' });
  assert.equal(first.type, 'snapshot');
  assert.equal(first.seq, paused.seq, 'the snapshot is at the current seq');
  assert.equal(first.ref, 'big');
  assert.deepEqual(diffState(c.view(id), paused), []);
  await c.closeAndWait();
});

test('3d. since 0 on a young job: every delta from seq 1, the ack, and the deltas alone rebuild the job', { timeout: 120_000 }, async () => {
  const u = server.user();
  const { job_id: id } = await server.createJob(u.token, { count: 1 });
  const paused = await server.waitPaused(id);
  const T = paused.seq;
  assert.ok(T <= 64, `precondition: a young job (seq ${T})`);
  const c = await Client.open(server, u.token, { label: 'C' });
  c.view(id, JobView.at(id, 0));
  const first = await c.subscribe(id, { since: 0, ref: 'zero' });
  assert.equal(first.type, 'delta', `deltas, not a snapshot: ${JSON.stringify(first).slice(0, 200)}`);
  assert.equal(first.seq, 1);
  assert.equal(first.table, 'job_runs', 'seq 1 is the job row');
  assert.equal(first.op, 'INSERT');
  await c.waitRef('zero');
  await driveOtpsOverSocket(server, c, id, { timeout: 90_000 });
  const committed = await settle(server, c, id, { token: u.token, timeout: 60_000 });
  assertCleanStream(c);
  assert.deepEqual(shape(c, id, 'zero'), [...range(1, T), 'ack', ...range(T + 1, committed.seq)]);
  assert.deepEqual(diffState(c.view(id), committed), [], 'INSERTs and UPDATEs from seq 1 = GET');
  assert.deepEqual(diffJournal(c.jobMessages(id), journal(server, id)), [], 'and they are job_events');
  await c.closeAndWait();
});

test('3e. a running job past seq 70: since N-64 (memory) and N-65, N-70, 0 (journal) replay as deltas, then the ack', { timeout: 180_000 }, async () => {
  const u = server.user();
  const { job_id: id } = await server.createJob(u.token, { count: 12 });
  // Answer OTPs over HTTP until the job is past seq 70 and waits for a payment OTP.
  await server.driveHttp(id, u.token, (j) => j.seq > 70 && j.otp_requests.some((o) => isPayment(o) && o.status === 'requested'), { timeout: 150_000 });
  const paused = await server.waitPaused(id, { otpPred: isPayment });
  const N = paused.seq;
  const rows = journal(server, id);

  const full = await Client.open(server, u.token, { label: 'full' });
  const snap = await full.subscribe(id);
  assert.equal(snap.type, 'snapshot');
  assert.equal(snap.seq, N);

  const resumed = [];
  for (const back of [64, 65, 70, N]) {
    const since = N - back;
    const c = await Client.open(server, u.token, { label: `since N-${back}` });
    c.view(id, since === 0 ? JobView.at(id, 0) : JobView.at(id, since, { partial: true }));
    const ref = `b${back}`;
    await c.subscribe(id, { since, ref });
    await c.waitRef(ref, { timeout: 20_000 });
    assert.deepEqual(shape(c, id, ref), [...range(since + 1, N), 'ack'], `since ${since}: deltas ${since + 1}..${N}, then the ack`);
    assert.deepEqual(c.view(id).problems, []);
    assert.deepEqual(diffJournal(c.jobMessages(id), rows), [], `since ${since}: the replayed deltas are job_events'`);
    resumed.push(c);
  }

  // All go on together to the end.
  await driveOtpsOverSocket(server, full, id, { timeout: 150_000 });
  const committed = await settle(server, full, id, { token: u.token, timeout: 60_000 });
  for (const c of resumed) await settle(server, c, id, { token: u.token, timeout: 60_000 });
  for (const c of [full, ...resumed]) {
    assertCleanStream(c);
    const v = c.view(id);
    assert.equal(v.seq, committed.seq);
    if (v.partial) assert.deepEqual(diffKnownRows(v, committed), [], `${c.label}: the rows it has = GET`);
    else assert.deepEqual(diffState(v, committed), [], `${c.label}: state = GET`);
    await c.closeAndWait();
  }
});

test('3f. subscribe (replayed from the journal) then unsubscribe at once: the unsubscribe applies, no subscription is left', { timeout: 120_000 }, async () => {
  const u = limited.user();
  const { job_id: id } = await limited.createJob(u.token, { count: 6 });
  const done = await limited.waitJob(id, (j) => j.job.status === 'completed', { what: 'completed' });
  assert.ok(done.seq > 64, `precondition: more deltas than the ring holds (${done.seq})`);
  const c = await Client.open(limited, u.token, { label: 'subscribe+unsubscribe' });
  const from = c.cursor;
  c.send({ type: 'subscribe', job_id: id, since: 0, ref: 'qs' });
  c.send({ type: 'unsubscribe', job_id: id, ref: 'qu' });
  const un = await c.waitRef('qu', { from });
  await c.waitRef('qs', { from, timeout: 20_000 });
  await c.ping();
  const again = await c.request({ type: 'unsubscribe', job_id: id, ref: 'qu2' });
  // Both at once, so a failure shows both: the first unsubscribe is acknowledged, and a
  // second finds no subscription left behind.
  assert.deepEqual(
    { unsubscribe: un.type === 'ack' ? 'ack' : un.code, 'unsubscribe again': again.type === 'ack' ? 'ack' : again.code },
    { unsubscribe: 'ack', 'unsubscribe again': 'not_subscribed' },
  );
  await c.closeAndWait();
});

test('3g. subscriptions whose journal replay is still being read count toward the limit (--ws-max-subscriptions 3)', { timeout: 120_000 }, async () => {
  const u = limited.user();
  const jobs = await pool(Array.from({ length: 4 }), 4, () => limited.createJob(u.token, { count: 6 }));
  const ids = jobs.map((j) => j.job_id);
  const done = [];
  for (const id of ids) done.push(await limited.waitJob(id, (j) => j.job.status === 'completed', { what: 'completed' }));
  for (const j of done) assert.ok(j.seq > 64, `precondition: more deltas than the ring holds (${j.seq})`);

  const c = await Client.open(limited, u.token, { label: 'limited' });
  assert.equal(c.messages[0].msg.limits.max_subscriptions, 3, 'hello reports the limit in force');
  const from = c.cursor;
  ids.forEach((id, i) => c.send({ type: 'subscribe', job_id: id, since: 0, ref: `l${i}` }));
  const answers = [];
  for (let i = 0; i < 4; i++) answers.push(await c.waitRef(`l${i}`, { from, timeout: 20_000 }));
  await c.ping();
  const kinds = answers.map((m) => (m.type === 'error' ? m.code : m.type));
  assert.deepEqual(kinds.filter((k) => k === 'ack').length, 3, `three subscriptions: ${kinds}`);
  assert.deepEqual(kinds.filter((k) => k === 'too_many_subscriptions').length, 1, `the fourth refused: ${kinds}`);
  const refused = ids[kinds.indexOf('too_many_subscriptions')];
  assert.deepEqual(c.jobMessages(refused).filter((m) => m.type !== 'error'), [], 'nothing of the refused job');
  const un = await c.request({ type: 'unsubscribe', job_id: refused });
  assert.equal(un.type, 'error');
  assert.equal(un.code, 'not_subscribed', 'the refused job is not subscribed');
  await c.closeAndWait();
});

// The text of each delta of jobId a client received, by seq: the line as it came in its frame.
function rawDeltas(c, jobId) {
  const out = new Map();
  for (const f of c.frames) {
    if (f.text === undefined) continue;
    for (const line of f.text.split('\n')) {
      if (!line) continue;
      const m = JSON.parse(line);
      if (m.type === 'delta' && m.job_id === jobId) out.set(m.seq, line);
    }
  }
  return out;
}

test('3h. a delta replayed from the journal is the delta sent live, byte for byte, cts included', { timeout: 120_000 }, async () => {
  const u = limited.user();
  const live = await Client.open(limited, u.token, { label: 'live' });
  const { job_id: id } = await limited.createJob(u.token, { count: 10 });
  const snap = await live.subscribe(id);
  assert.equal(snap.type, 'snapshot');
  const S = snap.seq;
  await limited.waitJob(id, (j) => j.job.status === 'completed', { what: 'completed' });
  const committed = await settle(limited, live, id, { token: u.token, timeout: 60_000 });
  const N = committed.seq;
  assert.ok(N - S > 64, `precondition: the replay reaches past the 64 deltas in memory, so it is read from job_events (seq ${S} -> ${N})`);
  const sent = rawDeltas(live, id);
  assert.deepEqual([...sent.keys()], range(S + 1, N), 'the live client got every delta after its snapshot');

  const c = await Client.open(limited, u.token, { label: 'replayed' });
  c.view(id, JobView.at(id, S, { partial: true }));
  await c.subscribe(id, { since: S, ref: 'bytes' });
  await c.waitRef('bytes', { timeout: 20_000 });
  assert.deepEqual(shape(c, id, 'bytes'), [...range(S + 1, N), 'ack'], 'deltas S+1..N (all from the journal: the job is done), then the ack');
  const replayed = rawDeltas(c, id);
  const differ = range(S + 1, N).filter((seq) => replayed.get(seq) !== sent.get(seq));
  assert.deepEqual(differ.map((seq) => ({ seq, live: sent.get(seq), replayed: replayed.get(seq) })).slice(0, 2), [],
    `${differ.length} of ${N - S} replayed deltas differ from the live ones`);
  for (const seq of range(S + 1, N)) assert.match(sent.get(seq), /"ts":\d+,"cts":\d+,"table":/, `delta ${seq} carries cts`);
  await live.closeAndWait();
  await c.closeAndWait();
});
