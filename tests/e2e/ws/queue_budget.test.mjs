// The process' budget for queued output (--ws-max-queue-total, docs/operations.md "Memory
// for slow clients"): every connection's own bound (--ws-max-queue) is set out of reach
// (64 MiB), the process' to its minimum (1 MiB), and clients that stop reading are
// subscribed to a burst of real jobs. Once their kernel buffers are full the server queues
// for them; a message shared by many queues counts once, and past 1 MiB the connections
// furthest behind are shed as if past their own bound: jobwire.v1 clients are owed resync
// snapshots, a Supabase channel gets phx_error. Checked:
// - the sheds happen (jobwire_ws_queue_sheds_total), which nothing else here could cause;
// - /metrics never shows much more than the budget queued (jobwire_ws_queued_bytes,
//   sampled all along), and shows 0 once every client has read everything. "Much": what
//   the budget sheds is stream messages; replies are not shed (the resync snapshots a shed
//   client is owed, built a frame's worth - 64 KiB - at a time once it reads again, and
//   output queued outside a publish round until the check at the next turn of the loop).
//   Without the budget the paused clients' queues held 14 MB after three waves (checked);
// - nobody loses anything: every client, paused or not, converges to every job's committed
//   state with no gap and no duplicate; the Supabase channel joins again on its own.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  Client, Server, assertCleanStream, diffState, journal, pool, settle, sleep,
} from '../lib/index.mjs';
import { journalRows, subscribe, supabase, until } from '../supabase/lib.mjs';

const LIMIT = 1 << 20;
const SLACK = 512 << 10; // replies, not shed: a frame's worth for each of 5 clients, and more
const ARGS = ['--ws-max-queue', String(64 << 20), '--ws-max-queue-total', String(LIMIT)];
const SIM = 'latency_ms=1,otp=none,voucher_polls=0';

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});

async function start(name) {
  const server = new Server({ name, sim: SIM, args: ARGS });
  servers.push(server);
  await server.start();
  return server;
}

// GET /metrics as a Map name -> value.
async function metrics(server) {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200);
  const out = new Map();
  for (const line of r.text.split('\n')) {
    const m = /^([a-z_]+) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

// Waits (bounded) until /metrics shows name at value.
async function metricReaches(server, name, value, { timeout = 30_000 } = {}) {
  const deadline = Date.now() + timeout;
  let v;
  while ((v = (await metrics(server)).get(name)) !== value) {
    if (Date.now() >= deadline) assert.fail(`${name} is ${v}, not ${value}, after ${timeout} ms`);
    await sleep(20);
  }
}

// Reads /metrics until stop() is called; resolves to the queued-bytes samples.
function sampler(server) {
  let running = true;
  const samples = [];
  const done = (async () => {
    while (running) {
      samples.push((await metrics(server)).get('jobwire_ws_queued_bytes'));
      await sleep(20);
    }
    return samples;
  })();
  return { stop: () => { running = false; return done; } };
}

test('jobwire.v1: past the budget the furthest behind are shed; nobody loses anything', { timeout: 180_000 }, async (t) => {
  const server = await start('queue_budget_ws');
  const u = server.user();
  const reader = await Client.open(server, u.token, { label: 'reader' });
  const paused = [];
  for (let i = 0; i < 4; i++) {
    const c = await Client.open(server, u.token, { label: `paused${i}` });
    c.ws._socket.pause();
    paused.push(c);
  }
  const samples = sampler(server);

  // Waves of jobs until the budget has shed someone (each wave is about 8,000 deltas; the
  // paused sockets' kernel buffers take a few MB each before the server queues anything).
  const ids = [];
  for (let wave = 0; wave < 6 && (await metrics(server)).get('jobwire_ws_queue_sheds_total') === 0; wave++) {
    const batch = await pool(Array.from({ length: 25 }), 10, async (_, i) => {
      const j = await server.createJob(u.token, { count: 20, amount: 100 + wave * 25 + i });
      for (const c of [reader, ...paused]) c.send({ type: 'subscribe', job_id: j.job_id });
      return j.job_id;
    });
    ids.push(...batch);
    for (const id of batch) await settle(server, reader, id, { token: u.token, timeout: 60_000 });
  }
  const m = await metrics(server);
  assert.ok(m.get('jobwire_ws_queue_sheds_total') >= 1, `the budget shed a connection (after ${ids.length} jobs)`);
  assert.equal(m.get('jobwire_ws_slow_closes_total'), 0, 'nobody was closed');
  for (const c of paused) assert.equal(c.messages.length, 1, `${c.label} read nothing but its hello`);

  for (const c of paused) c.ws._socket.resume();
  const committed = new Map();
  for (const id of ids) committed.set(id, await server.getJob(id, u.token));
  let resyncs = 0;
  for (const c of [reader, ...paused]) {
    for (const id of ids) await settle(server, c, id, { token: u.token, timeout: 60_000 });
    assert.equal(c.closed, null, `${c.label} is still connected`);
    assertCleanStream(c);
    for (const id of ids) assert.deepEqual(diffState(c.view(id), committed.get(id)), [], `${c.label}, job ${id}: state = GET`);
    resyncs += c.messages.filter((x) => x.msg.type === 'snapshot' && x.msg.reason === 'resync').length;
  }
  assert.ok(resyncs >= 1, 'a shed connection was sent resync snapshots');

  // Everything read: nothing stays counted.
  await metricReaches(server, 'jobwire_ws_queued_bytes', 0);
  const got = await samples.stop();
  const max = Math.max(...got);
  assert.ok(max <= LIMIT + SLACK, `queued bytes stayed within the budget: max ${max} of ${got.length} samples`);
  t.diagnostic(`${ids.length} jobs; ${got.length} samples, max ${max} bytes queued; ${m.get('jobwire_ws_queue_sheds_total')} shed(s), ${resyncs} resync snapshot(s)`);
  await Promise.all([reader, ...paused].map((c) => c.closeAndWait()));
});

test('the Supabase endpoint counts against the same budget: its channel is told to join again', { timeout: 180_000 }, async (t) => {
  const server = await start('queue_budget_rt');
  const sb = supabase(server, server.adminKey, { apikey: server.adminKey });
  await sb.realtime.setAuth();
  const got = [];
  const ch = sb.channel('budget');
  for (const table of ['job_runs', 'job_steps', 'otp_requests']) {
    ch.on('postgres_changes', { event: '*', schema: 'public', table }, (p) => got.push(p));
  }
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  const socket = sb.recorder.sockets[0];
  socket._socket.pause();
  const samples = sampler(server);

  const jobs = [];
  for (let round = 0; round < 8 && (await metrics(server)).get('jobwire_ws_queue_sheds_total') === 0; round++) {
    const batch = await Promise.all(Array.from({ length: 40 }, () => server.createJob(server.adminKey, { count: 10, userId: crypto.randomUUID() })));
    jobs.push(...batch.map((j) => j.job_id));
    for (const id of jobs) await server.waitJob(id, (j) => j.job.status === 'completed', { timeout: 60_000 });
  }
  const m = await metrics(server);
  assert.ok(m.get('jobwire_ws_queue_sheds_total') >= 1, `the budget shed the connection (after ${jobs.length} jobs)`);
  assert.ok(m.get('jobwire_realtime_channel_errors_total') >= 1, 'its channel was told to join again');
  assert.equal(m.get('jobwire_realtime_slow_closes_total'), 0, 'it was not closed');
  socket._socket.resume();

  // supabase-js joins again by itself, on the same socket, and gets changes again.
  await until(() => ch.statuses.filter((s) => s.status === 'SUBSCRIBED').length >= 2, {
    timeout: 60_000, what: `a second SUBSCRIBED (${JSON.stringify(ch.statuses)})`,
  });
  assert.equal(sb.recorder.sockets.length, 1, 'the same connection');
  const next = (await server.createJob(server.adminKey, { count: 1, userId: crypto.randomUUID() })).job_id;
  await server.waitJob(next, (j) => j.job.status === 'completed');
  const want = journalRows(journal(server, next), 'job_runs');
  await until(() => got.filter((p) => p.table === 'job_runs' && p.new.id === next).length >= want.length, {
    what: "the next job's changes on the rejoined channel",
  });
  assert.deepStrictEqual(got.filter((p) => p.table === 'job_runs' && p.new.id === next).map((p) => p.new), want.map((w) => w.row));

  await metricReaches(server, 'jobwire_ws_queued_bytes', 0);
  const all = await samples.stop();
  const max = Math.max(...all);
  assert.ok(max <= LIMIT + SLACK, `queued bytes stayed within the budget: max ${max} of ${all.length} samples`);
  t.diagnostic(`${jobs.length} jobs; ${all.length} samples, max ${max} bytes queued; statuses ${ch.statuses.map((s) => s.status).join(',')}`);
  await sb.removeAllChannels();
});
