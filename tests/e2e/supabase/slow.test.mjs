// A supabase-js client that stops reading while thousands of changes flow: its queue stays
// bounded, its channel gets phx_error (supabase-js joins it again by itself) instead of the
// connection being closed, it is live again afterwards; a client reading meanwhile gets
// every change of every job, in order, and is never told to rejoin.
//
// Nothing here depends on how fast the machine is (jobwire, ASan or not, PostgreSQL, node):
// - The reading client paces the load. It watches job_runs of every job (about 21 KB of
//   changes for a job of TX transactions, the last one its `completed`), and a job starts
//   only once the reading client has received the `completed` of the job IN_FLIGHT jobs
//   back. What it has not read yet - the most the server can have queued for it - is
//   therefore at most IN_FLIGHT jobs' job_runs changes (about 85 KB), at any speed of either
//   side; the test measures it and requires it to be at most a quarter of the 1 MiB queue
//   bound (`the load's construction`). So the reading client cannot be told to rejoin, at
//   any speed: the margin is in bytes, not in time. (Its kernel buffers only add room.)
// - The paused client watches every table of every job (about 190 KB a job) and reads
//   nothing: its connection's kernel buffers (on Linux's defaults up to about 4 MiB, less when
//   the kernel does not grow them) then its queue fill, however slowly the jobs run. Jobs start
//   until the server has counted a channel error (jobwire_realtime_channel_errors_total, a
//   condition, not a time: after about 25 jobs on Linux's defaults), then AFTER more. A
//   slower machine makes the test longer, never different.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, journal, maxWindowSum, sleep } from '../lib/index.mjs';
import { journalRows, subscribe, supabase, until } from './lib.mjs';

const BOUND = 1048576;
const TX = 10;
const IN_FLIGHT = 4;
const AFTER = 2; // jobs started after the overflow: the engine and the reading client go on
const MAX_JOBS = 600; // enough for kernel buffers far larger than Linux's defaults

const server = new Server({
  name: 'sb_slow',
  sim: 'latency_ms=1,otp=none,voucher_polls=0',
  args: ['--ws-max-queue', String(BOUND)],
});

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
});

async function admin(name, tables) {
  const sb = supabase(server, server.adminKey, { apikey: server.adminKey });
  await sb.realtime.setAuth();
  const got = [];
  const ch = sb.channel(name);
  for (const table of tables) ch.on('postgres_changes', { event: '*', schema: 'public', table }, (p) => got.push(p));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  return { sb, ch, got };
}

// Bytes of the postgres_changes messages of job_runs a client received, per job.
function jobRunsBytes(client) {
  const by = new Map();
  for (const f of client.sb.recorder.frames) {
    if (f.dir !== 'in') continue;
    const m = JSON.parse(f.text);
    const [event, payload] = Array.isArray(m) ? [m[3], m[4]] : [m.event, m.payload];
    const d = payload && payload.data;
    if (event !== 'postgres_changes' || !d || d.table !== 'job_runs' || !d.record) continue;
    by.set(d.record.id, (by.get(d.record.id) || 0) + Buffer.byteLength(f.text));
  }
  return by;
}

test('a paused reader is told to rejoin, not dropped; a reading client misses nothing', { timeout: 240_000 }, async (t) => {
  const fast = await admin('fast', ['job_runs']);
  const slow = await admin('slow', ['job_runs', 'job_steps', 'otp_requests']);
  // Also when an assertion fails: supabase-js would reconnect forever, and the file not end.
  t.after(() => {
    fast.sb.realtime.disconnect();
    slow.sb.realtime.disconnect();
  });
  const socket = slow.sb.recorder.sockets[0];
  const received = () => slow.sb.recorder.frames.filter((f) => f.dir === 'in').length;
  const receivedBefore = received();
  socket._socket.pause(); // stops reading: the kernel's buffers fill, then jobwire's queue

  const ended = (id) => fast.got.some((p) => p.table === 'job_runs' && p.new.id === id && p.new.status === 'completed');
  const waitEnded = (id) => until(() => ended(id), {
    timeout: 60_000,
    what: `job ${id}'s completed on the reading client (statuses ${JSON.stringify(fast.ch.statuses)})`,
  });
  const jobs = [];
  let overflowAt = null;
  for (;;) {
    if (overflowAt === null && (await server.metric('jobwire_realtime_channel_errors_total')) > 0) overflowAt = jobs.length;
    if (overflowAt !== null && jobs.length >= overflowAt + AFTER) break;
    assert.ok(jobs.length < MAX_JOBS, `the paused channel never overflowed in ${jobs.length} jobs`);
    if (jobs.length >= IN_FLIGHT) await waitEnded(jobs[jobs.length - IN_FLIGHT]);
    jobs.push((await server.createJob(server.adminKey, { count: TX, userId: crypto.randomUUID() })).job_id);
  }
  for (const id of jobs) await waitEnded(id);
  assert.ok((await server.metric('jobwire_realtime_channel_errors_total')) >= 1, `the slow channel overflowed (after ${jobs.length} jobs)`);
  assert.equal(await server.metric('jobwire_realtime_slow_closes_total'), 0, 'no connection was closed');
  assert.equal(received(), receivedBefore, 'the paused client read nothing while paused');
  socket._socket.resume();

  // The load's construction: what the reading client had not read yet never passed a quarter
  // of the bound (any IN_FLIGHT consecutive jobs' job_runs changes).
  const unread = maxWindowSum(jobRunsBytes(fast), jobs, IN_FLIGHT);
  assert.ok(unread <= BOUND / 4, `the load's construction: at most ${unread} bytes were ever unread by the reading client, a quarter of the ${BOUND}-byte bound at most`);

  // supabase-js sees the error and joins again by itself, on the same socket.
  await until(() => slow.ch.statuses.filter((s) => s.status === 'SUBSCRIBED').length >= 2, {
    timeout: 60_000,
    what: `a second SUBSCRIBED (statuses: ${JSON.stringify(slow.ch.statuses)})`,
  });
  assert.ok(slow.ch.statuses.some((s) => s.status === 'CHANNEL_ERROR'), JSON.stringify(slow.ch.statuses));
  assert.equal(slow.sb.recorder.sockets.length, 1, 'the same connection');
  assert.equal(socket.closeInfo, null);

  // It is live again: the next job's changes reach it.
  const next = (await server.createJob(server.adminKey, { count: 1, userId: crypto.randomUUID() })).job_id;
  await until(() => slow.got.some((p) => p.table === 'job_runs' && p.new.id === next && p.new.status === 'completed'), {
    what: "the next job's end on the rejoined channel",
  });

  // The reading client got every job_runs change of every job, in commit order per job.
  await server.waitJob(next, (j) => j.job.status === 'completed');
  for (const id of [...jobs, next]) {
    const want = journalRows(journal(server, id), 'job_runs');
    await until(() => fast.got.filter((p) => p.new.id === id).length >= want.length, { what: `job ${id} on the fast client (${fast.got.filter((p) => p.new.id === id).length}/${want.length}, statuses ${JSON.stringify(fast.ch.statuses)})` });
    const got = fast.got.filter((p) => p.new.id === id);
    assert.deepStrictEqual(got.map((p) => p.new), want.map((w) => w.row), `job ${id}`);
  }
  assert.deepEqual(fast.ch.statuses.map((s) => s.status), ['SUBSCRIBED'], 'the fast channel was never errored');
  t.diagnostic(`${jobs.length} jobs x ${TX} transactions, ${IN_FLIGHT} at a time; the server counted the first channel error after ${overflowAt} jobs; at most ${(unread / 1024).toFixed(0)} KiB unread by the reading client (bound ${BOUND / 1024} KiB); the paused client's statuses: ${slow.ch.statuses.map((s) => s.status).join(', ')}`);
  await sleep(10);
  await fast.sb.removeAllChannels();
  await slow.sb.removeAllChannels();
});
