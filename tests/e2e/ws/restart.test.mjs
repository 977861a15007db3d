// Resuming across a crash (docs/protocol.md "Ordering and resuming", DESIGN.md "Durability
// rules"): jobwire is killed with SIGKILL in the middle of a job and started again on the
// same database and port; the client reconnects and subscribes with since = the last seq
// it saw. The in-memory ring died with the process, so a snapshot is an acceptable answer;
// either way no gap, no duplicate, no seq going back, and the end state is the committed one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Client, Server, TERMINAL, assertCleanStream, diffJournal, diffState, journal, settle,
} from '../lib/index.mjs';

let server;
let user;
let oldJob; // completed before the crash
before(async () => {
  // No OTPs: nothing waits for a person across the crash (the sim's codes die with it).
  // Voucher polls keep each transaction busy for a while, so the crash lands mid-job.
  server = new Server({ name: 'restart', sim: 'latency_ms=25,otp=none,voucher_polls=3,poll_after_ms=40' });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

test('4. kill -9 mid-job, restart on the same database and port, resume with since: no gap, no duplicate, right end state', { timeout: 180_000 }, async (t) => {
  const u = server.user();
  // A job that finishes before the crash, for 4b.
  const { job_id: old } = await server.createJob(u.token, { count: 1 });
  oldJob = await server.waitJob(old, (j) => j.job.status === 'completed', { what: 'completed' });
  user = u;

  const a = await Client.open(server, u.token, { label: 'A' });
  const { job_id: id } = await server.createJob(u.token, { count: 8 });
  const snap = await a.subscribe(id);
  assert.equal(snap.type, 'snapshot');

  // Crash once the client has seen the first transaction finish, while the job runs.
  await a.waitFor(() => {
    const j = a.view(id).job;
    return !!j && j.completed_transactions >= 1;
  }, { timeout: 60_000, what: 'the first transaction completed' });
  assert.ok(!TERMINAL.has(a.view(id).job.status), 'precondition: the job is still running at the crash');
  const port = server.port;
  await server.kill9();
  await a.waitClose(10_000);
  const view = a.view(id);
  const S = view.seq;
  const seenBefore = a.jobMessages(id).filter((m) => m.type === 'delta');

  await server.start({ port });
  assert.equal(server.port, port, 'the same port');

  const b = await Client.open(server, u.token, { label: 'B' });
  b.view(id, view); // B continues A's view
  const first = await b.subscribe(id, { since: S });
  if (first.type === 'snapshot') {
    assert.ok(first.seq >= S, `the snapshot after the restart is not older than what A saw (${first.seq} >= ${S})`);
    t.diagnostic(`after the restart: a snapshot at seq ${first.seq} (A had ${S})`);
  } else {
    assert.equal(first.type, 'delta');
    assert.equal(first.seq, S + 1, 'a replay starts right after what A saw');
    t.diagnostic(`after the restart: deltas from ${first.seq} (A had ${S})`);
  }

  const committed = await settle(server, b, id, { token: u.token, timeout: 120_000 });
  assert.equal(committed.job.status, 'completed');
  assertCleanStream(b);
  assert.deepEqual(view.problems, [], 'no gap, no duplicate, no seq back across the restart');
  assert.deepEqual(diffState(view, committed), [], 'A\'s rows + B\'s answer = GET');

  // What A saw before the crash was committed and survived it unchanged (rule 3).
  const rows = journal(server, id);
  assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: committed.seq }, (_, i) => i + 1), 'job_events 1..seq');
  assert.deepEqual(diffJournal(seenBefore, rows), [], 'every delta A saw before the crash is in job_events as sent');
  assert.deepEqual(diffJournal(b.jobMessages(id).filter((m) => m.type === 'delta'), rows), [], 'and every delta B saw');
  await b.closeAndWait();
});

test('4b. a job that finished before this server started: since N-1 gets a snapshot, since N an ack, a plain subscribe a snapshot', { timeout: 60_000 }, async () => {
  assert.ok(oldJob, 'test 4 ran (it creates the job and restarts the server)');
  const id = oldJob.job_id;
  const N = oldJob.seq;
  const c = await Client.open(server, user.token, { label: 'after restart' });

  const s1 = await c.subscribe(id, { since: N - 1, ref: 'o1' });
  assert.equal(s1.type, 'snapshot', `cannot replay a job finished before this server started: ${JSON.stringify(s1).slice(0, 200)}`);
  assert.equal(s1.seq, N);
  assert.equal(s1.ref, 'o1');
  const committed = await server.getJob(id, user.token);
  assert.equal(committed.seq, N);
  assert.deepEqual(diffState(c.view(id), committed), [], 'the snapshot = GET (from PostgreSQL)');
  assert.equal((await c.request({ type: 'unsubscribe', job_id: id })).type, 'ack');

  const from = c.cursor;
  c.send({ type: 'subscribe', job_id: id, since: N, ref: 'o2' });
  const ack = await c.waitRef('o2', { from });
  assert.deepEqual(ack, { type: 'ack', ref: 'o2' }, 'since = its seq: nothing to replay, the ack');
  assert.equal((await c.request({ type: 'unsubscribe', job_id: id })).type, 'ack');

  const s3 = await c.subscribe(id, { ref: 'o3' });
  assert.equal(s3.type, 'snapshot');
  assert.equal(s3.seq, N);
  assertCleanStream(c);
  await c.closeAndWait();
});
