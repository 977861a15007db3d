// postgres_changes through @supabase/supabase-js: every committed change of a job, in
// order and row for row equal to job_events, for job_runs, job_steps and otp_requests;
// in, event and ANDed filters; the opt-in initial rows; OTP codes in no frame.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, containsCode, journal } from '../lib/index.mjs';
import { assertSameChanges, journalRows, subscribe, supabase, until } from './lib.mjs';

const server = new Server({ name: 'sb_changes' });
const clients = [];
const codes = new Set();

before(async () => {
  await server.start();
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server.stop();
});

async function signedIn(token, opts) {
  const sb = supabase(server, token, opts);
  clients.push(sb);
  await sb.realtime.setAuth(); // the token in hand before the first join, as an app after sign-in
  return sb;
}

// Answers the job's OTPs over HTTP until it is completed, remembering every code.
async function finish(jobId, token) {
  const inboxBefore = await server.inbox();
  const done = await server.driveHttp(jobId, token, (j) => j.job.status === 'completed', { timeout: 90_000 });
  for (const m of await server.inbox()) if (m.job_id === jobId) codes.add(m.code);
  for (const m of inboxBefore) if (m.job_id === jobId) codes.add(m.code);
  return done;
}

function collect(channel, table, filter, event = '*', extra = {}) {
  const got = [];
  channel.on('postgres_changes', { event, schema: 'public', table, filter, ...extra }, (p) => {
    assert.equal(p.schema, 'public');
    assert.equal(p.table, table);
    assert.equal(typeof p.commit_timestamp, 'string');
    got.push({ eventType: p.eventType, new: p.new, old: p.old });
  });
  return got;
}

test('one channel per table: every change of a whole job arrives in commit order', async () => {
  const u = server.user();
  const job = await server.createJob(u.token, { count: 2 });
  const id = job.job_id;
  const paused = await server.waitPaused(id); // nothing changes until someone types an OTP
  const sb = await signedIn(u.token);

  const runs = sb.channel(`runs-${id}`);
  const gotRuns = collect(runs, 'job_runs', `id=eq.${id}`);
  const steps = sb.channel(`steps-${id}`);
  const gotSteps = collect(steps, 'job_steps', `job_run_id=eq.${id}`);
  const otps = sb.channel(`otps-${id}`);
  const gotOtps = collect(otps, 'otp_requests', `job_run_id=eq.${id}`);
  for (const ch of [runs, steps, otps]) assert.deepEqual(await subscribe(ch), { status: 'SUBSCRIBED', message: null });

  const done = await finish(id, u.token);
  const events = journal(server, id).filter((e) => e.seq > paused.seq);
  await until(() => gotRuns.length + gotSteps.length + gotOtps.length >= events.length, {
    what: `${events.length} changes after seq ${paused.seq}`,
  });
  assertSameChanges(gotRuns, journalRows(events, 'job_runs'), 'job_runs');
  assertSameChanges(gotSteps, journalRows(events, 'job_steps'), 'job_steps');
  assertSameChanges(gotOtps, journalRows(events, 'otp_requests'), 'otp_requests');
  assert.ok(gotOtps.some((c) => c.eventType === 'INSERT'), 'a later OTP request arrives as an INSERT');
  // An UPDATE's old record carries the primary key, as Supabase sends it by default.
  for (const c of [...gotRuns, ...gotSteps, ...gotOtps].filter((x) => x.eventType === 'UPDATE')) {
    assert.deepEqual(c.old, { id: c.new.id });
  }
  assert.equal(gotRuns.at(-1).new.status, 'completed');
  assert.deepStrictEqual(gotRuns.at(-1).new, done.job);
});

test('an in filter delivers the listed jobs and no other', async () => {
  const u = server.user();
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push((await server.createJob(u.token, { count: 1 })).job_id);
  const seqs = [];
  for (const id of jobs) seqs.push((await server.waitPaused(id)).seq);
  const sb = await signedIn(u.token);
  const ch = sb.channel('two-of-three');
  const got = [];
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=in.(${jobs[0]},${jobs[1]})` }, (p) =>
    got.push({ eventType: p.eventType, new: p.new }),
  );
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  await Promise.all(jobs.map((id) => finish(id, u.token)));
  const want = (i) => journalRows(journal(server, jobs[i]).filter((e) => e.seq > seqs[i]), 'job_runs');
  await until(() => got.length >= want(0).length + want(1).length, { what: 'both jobs complete' });
  assertSameChanges(got.filter((c) => c.new.id === jobs[0]), want(0), 'first job');
  assertSameChanges(got.filter((c) => c.new.id === jobs[1]), want(1), 'second job');
  assert.equal(got.filter((c) => c.new.id === jobs[2]).length, 0, 'the unlisted job is not delivered');
  assert.ok(want(2).length > 0, 'the unlisted job did change');
});

test('event and ANDed filters select changes as PostgreSQL would', async () => {
  const u = server.user();
  const id = (await server.createJob(u.token, { count: 2 })).job_id;
  const paused = await server.waitPaused(id);
  const sb = await signedIn(u.token);
  const ch = sb.channel(`filters-${id}`);
  const inserts = collect(ch, 'otp_requests', `job_run_id=eq.${id}`, 'INSERT');
  const updates = collect(ch, 'otp_requests', `job_run_id=eq.${id}`, 'UPDATE');
  const completed = collect(ch, 'job_steps', `job_run_id=eq.${id},status=eq.completed`);
  const notPending = collect(ch, 'job_steps', `job_run_id=eq.${id},status=neq.pending,transaction_index=gte.2`);
  const progress = collect(ch, 'job_runs', `id=eq.${id},progress_percentage=gt.50`);
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  await finish(id, u.token);

  const events = journal(server, id).filter((e) => e.seq > paused.seq);
  const rows = (table, pred) => journalRows(events, table).filter(pred);
  const want = {
    inserts: rows('otp_requests', (r) => r.op === 'INSERT'),
    updates: rows('otp_requests', (r) => r.op === 'UPDATE'),
    completed: rows('job_steps', (r) => r.row.status === 'completed'),
    notPending: rows('job_steps', (r) => r.row.status !== 'pending' && r.row.transaction_index !== null && r.row.transaction_index >= 2),
    progress: rows('job_runs', (r) => r.row.progress_percentage > 50),
  };
  const total = Object.values(want).reduce((n, w) => n + w.length, 0);
  await until(() => inserts.length + updates.length + completed.length + notPending.length + progress.length >= total, {
    what: `${total} filtered changes`,
  });
  for (const w of Object.values(want)) assert.ok(w.length > 0, 'every filter has something to select');
  assertSameChanges(inserts, want.inserts, 'INSERT only');
  assertSameChanges(updates, want.updates, 'UPDATE only');
  assertSameChanges(completed, want.completed, 'status=eq.completed');
  assertSameChanges(notPending, want.notPending, 'status=neq.pending,transaction_index=gte.2');
  assertSameChanges(progress, want.progress, 'progress_percentage=gt.50');
});

test('jobwire_initial_rows: the current rows right after SUBSCRIBED, only when asked', async () => {
  const u = server.user();
  const id = (await server.createJob(u.token, { count: 2 })).job_id;
  const now = await server.waitPaused(id);
  const sb = await signedIn(u.token);
  const ch = sb.channel(`initial-${id}`);
  const steps = collect(ch, 'job_steps', `job_run_id=eq.${id}`, '*', { jobwire_initial_rows: true });
  const runs = collect(ch, 'job_runs', `id=eq.${id}`, '*', { jobwire_initial_rows: true });
  const plain = collect(ch, 'otp_requests', `job_run_id=eq.${id}`);
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  await until(() => steps.length >= now.steps.length && runs.length >= 1, { what: 'the initial rows' });
  assert.deepStrictEqual(steps.map((c) => c.new), now.steps);
  assert.deepStrictEqual(runs.map((c) => c.new), [now.job]);
  assert.ok([...steps, ...runs].every((c) => c.eventType === 'INSERT'));
  assert.equal(plain.length, 0, 'a binding without the flag gets no initial rows');
  await finish(id, u.token);
});

test('no OTP code in any frame either way', () => {
  assert.ok(codes.size >= 6, `codes were used (${codes.size})`);
  let frames = 0;
  for (const c of clients) {
    for (const f of c.recorder.frames) {
      frames++;
      for (const code of codes) assert.ok(!containsCode(f.text, code), `code ${code} in a ${f.dir} frame`);
    }
  }
  assert.ok(frames > 100, `frames were captured (${frames})`);
});
