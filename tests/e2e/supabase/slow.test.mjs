// A supabase-js client that stops reading while thousands of changes flow: its queue stays
// bounded, its channel gets phx_error (supabase-js joins it again by itself) instead of the
// connection being closed, it is live again afterwards; a client reading meanwhile gets
// every change of every job, in order, and is never told to rejoin.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, journal, sleep } from '../lib/index.mjs';
import { journalRows, subscribe, supabase, until } from './lib.mjs';

const server = new Server({
  name: 'sb_slow',
  sim: 'latency_ms=1,otp=none,voucher_polls=0',
  args: ['--ws-max-queue', '1048576'],
});

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
});

async function metric(name) {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200);
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(r.text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

async function admin(name, tables) {
  const sb = supabase(server, server.adminKey, { apikey: server.adminKey });
  await sb.realtime.setAuth();
  const got = [];
  const ch = sb.channel(name);
  for (const table of tables) ch.on('postgres_changes', { event: '*', schema: 'public', table }, (p) => got.push(p));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  return { sb, ch, got };
}

test('a paused reader is told to rejoin, not dropped; a reading client misses nothing', { timeout: 240_000 }, async () => {
  const fast = await admin('fast', ['job_runs']);
  const slow = await admin('slow', ['job_runs', 'job_steps', 'otp_requests']);
  const socket = slow.sb.recorder.sockets[0];
  socket._socket.pause(); // stops reading: the kernel's buffers fill, then jobwire's queue

  const jobs = [];
  for (let round = 0; round < 8 && (await metric('jobwire_realtime_channel_errors_total')) === 0; round++) {
    const batch = await Promise.all(Array.from({ length: 40 }, () => server.createJob(server.adminKey, { count: 10, userId: crypto.randomUUID() })));
    jobs.push(...batch.map((j) => j.job_id));
    for (const id of jobs) await server.waitJob(id, (j) => j.job.status === 'completed', { timeout: 60_000 });
  }
  assert.ok((await metric('jobwire_realtime_channel_errors_total')) >= 1, `the slow channel overflowed (after ${jobs.length} jobs)`);
  assert.equal(await metric('jobwire_realtime_slow_closes_total'), 0, 'no connection was closed');
  socket._socket.resume();

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
  await sleep(10);
  await fast.sb.removeAllChannels();
  await slow.sb.removeAllChannels();
});
