// A slow consumer (docs/protocol.md "Back-pressure"): one client stops reading while a
// burst of deltas flows (50 jobs, no OTPs, 1 ms sim latency), subscribed by it and by a
// fast client. The fast client gets every delta of every job in order, and the jobs end,
// while the slow one is still stopped: a slow client slows neither the engine nor another
// client. When the slow client reads again it converges to every job's committed state; it
// may get snapshots with reason "resync" in place of deltas, and no seq ever goes back.
//
// JW_E2E_SLOW_TX (default 20) sets the transactions per job: the burst must be larger than
// the socket buffers plus the 1 MiB queue for a resync to happen (reported, not required).
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import {
  Client, JobView, Server, TERMINAL, assertCleanStream, diffState, pool, settle, sleep,
} from '../lib/index.mjs';

const JOBS = 50;
const TX = Number(process.env.JW_E2E_SLOW_TX || 20);

let server;
before(async () => {
  server = new Server({ name: 'slow_consumer', sim: 'latency_ms=1,otp=none,voucher_polls=0' });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

test('11. a paused client does not hold up the engine or a fast client, and converges when it reads again', { timeout: 120_000 }, async (t) => {
  const u = server.user();
  const fast = await Client.open(server, u.token, { label: 'fast' });
  let slow = await Client.open(server, u.token, { label: 'slow' });
  const pausedAt = performance.now();
  slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then the server's queue
  assert.ok(!slow.ws._socket.readableFlowing);

  const ids = await pool(Array.from({ length: JOBS }), 10, async (_, i) => {
    const j = await server.createJob(u.token, { count: TX, amount: 100 + i });
    fast.send({ type: 'subscribe', job_id: j.job_id, ref: `f${i}` });
    slow.send({ type: 'subscribe', job_id: j.job_id, ref: `s${i}` });
    return j.job_id;
  });

  // The fast client sees every job to its end; the slow one reads nothing until then, or
  // for 8 s at most (test 11b holds a 30 s pause).
  const committed = new Map();
  const fastDone = (async () => {
    for (const id of ids) committed.set(id, await settle(server, fast, id, { token: u.token, timeout: 60_000 }));
  })();
  let capTimer;
  const cap = new Promise((resolve) => {
    capTimer = setTimeout(resolve, 8000);
  });
  await Promise.race([fastDone.catch(() => {}), cap]);
  clearTimeout(capTimer);
  const pausedFor = (performance.now() - pausedAt) / 1000;
  const doneWhilePaused = committed.size;
  assert.equal(slow.messages.length, 1, 'the slow client read nothing but its hello while paused');
  if (!slow.closed) slow.ws._socket.resume();
  try {
    await fastDone;
  } catch (e) {
    assert.equal(fast.closed, null, `the fast client, which reads all the time, was closed ${JSON.stringify(fast.closed)} after ${fast.messages.length} messages (${fast.messages.filter((x) => x.msg.reason === 'resync').length} resync snapshots)`);
    throw e;
  }
  const bytesToFast = fast.frames.reduce((n, f) => n + (f.text ? Buffer.byteLength(f.text) : 0), 0);
  for (const [id, c] of committed) assert.equal(c.job.status, 'completed', `job ${id} completed`);

  await t.test('the fast client got every delta of every job, in order, no resync', () => {
    assertCleanStream(fast);
    ids.forEach((id, i) => {
      const msgs = fast.jobMessages(id);
      assert.equal(msgs[0].type, 'snapshot', `fast, job ${i}: a snapshot first`);
      assert.equal(msgs[0].ref, `f${i}`);
      assert.equal(msgs.filter((m) => m.type === 'snapshot').length, 1,
        `fast, job ${i}: no resync for a client that reads (it got ${fast.messages.length} messages, ${(bytesToFast / 1048576).toFixed(1)} MiB in ${fast.frames.length} frames; ${doneWhilePaused}/${JOBS} jobs done within the ${pausedFor.toFixed(1)} s pause)`);
      const seqs = msgs.slice(1).map((m) => m.seq);
      assert.deepEqual(seqs, Array.from({ length: committed.get(id).seq - msgs[0].seq }, (_, k) => msgs[0].seq + 1 + k),
        `fast, job ${i}: every delta after its snapshot, in order`);
      assert.deepEqual(diffState(fast.view(id), committed.get(id)), [], `fast, job ${i}: state = GET`);
    });
  });

  await t.test('the slow client converges to every job\'s committed state', async (tt) => {
    // The slow client converges: on the same connection, or - if the server closed it with
    // 4008, which it may only after 10 s over the bound - by resuming on a new one with since.
    let reader = slow;
    try {
      for (const id of ids) await settle(server, slow, id, { token: u.token, timeout: 60_000 });
    } catch (e) {
      if (!slow.closed) throw e;
      const closedAfter = (slow.closed.at - (pausedAt - slow.t0)) / 1000;
      assert.equal(slow.closed.code, 4008, `the slow client was closed: ${JSON.stringify(slow.closed)}`);
      assert.ok(closedAfter >= 60, `closed with 4008 ${closedAfter.toFixed(1)} s after it stopped reading; the bound is 60 s behind`);
      tt.diagnostic(`the slow client was closed with 4008 ${closedAfter.toFixed(1)} s after it stopped reading; resuming on a new connection`);
      assertCleanStream(slow);
      reader = await Client.open(server, u.token, { label: 'slow, reconnected' });
      for (const id of ids) {
        reader.view(id, slow.view(id));
        reader.send({ type: 'subscribe', job_id: id, since: slow.view(id).seq ?? 0 });
      }
      for (const id of ids) await settle(server, reader, id, { token: u.token, timeout: 60_000 });
    }
    assert.equal(reader.closed, null, `the slow client is connected at the end (${JSON.stringify(reader.closed)})`);

    assertCleanStream(reader); // no gap, no duplicate, no seq back, snapshots included
    let resyncs = 0;
    ids.forEach((id, i) => {
      const v = reader.view(id);
      const msgs = [...(reader === slow ? [] : slow.jobMessages(id)), ...reader.jobMessages(id)];
      assert.equal(msgs[0].type, 'snapshot', `slow, job ${i}: a snapshot first`);
      const snaps = msgs.filter((m) => m.type === 'snapshot');
      snaps.slice(1).forEach((x) => assert.ok(x.reason === 'resync' || reader !== slow,
        `slow, job ${i}: a later snapshot is a resync: ${JSON.stringify({ ...x, job: undefined, steps: undefined, otp_requests: undefined })}`));
      resyncs += snaps.filter((x) => x.reason === 'resync').length;
      assert.ok(v instanceof JobView);
      assert.deepEqual(diffState(v, committed.get(id)), [], `slow, job ${i}: converged to GET`);
      assert.ok(TERMINAL.has(v.job.status));
    });
    const bytesToSlow = slow.frames.reduce((n, f) => n + (f.text ? Buffer.byteLength(f.text) : 0), 0);
    tt.diagnostic(`paused ${pausedFor.toFixed(1)} s (${doneWhilePaused}/${JOBS} jobs done by then); ${JOBS} jobs x ${TX} transactions; fast got ${fast.messages.length} messages (${(bytesToFast / 1048576).toFixed(1)} MiB), slow ${slow.messages.length} (${(bytesToSlow / 1048576).toFixed(1)} MiB) with ${resyncs} resync snapshot(s)`);
    slow = reader;
  });
  await slow.ping();
  await fast.ping();
  await Promise.all([fast.closeAndWait(), slow.closeAndWait()]);
});

// The scenario: a client stops reading for 30 s while deltas keep flowing - a new
// job every second for 25 s, each about 650 deltas, so well over 1,000 deltas (and more
// bytes than the kernel's loopback buffers hold) pass while it is stopped. Throughout, a reading client gets every delta in order, and each job's final
// state reaches it before the paused client reads anything again (the pause holds up no
// one). Its delivery latency (arrival - delta ts) is reported, not asserted. The paused
// client then converges through resync snapshots without being closed (60 s allowed).
// This server's queue bound is 64 KiB, so the backlog passes it despite the kernel's
// loopback buffers, and the snapshot path is taken.
test('11b. a client stopped for 30 s while 1,000+ deltas flow: others unaffected, it converges', { timeout: 180_000 }, async (t) => {
  const server = new Server({
    name: 'slow_consumer_30s',
    sim: 'latency_ms=1,otp=none,voucher_polls=0',
    args: ['--ws-max-queue', '65536'],
  });
  await server.start();
  t.after(() => server.stop());
  const u = server.user();
  const fast = await Client.open(server, u.token, { label: 'fast30' });
  const slow = await Client.open(server, u.token, { label: 'slow30' });
  slow.ws._socket.pause();
  const pausedAt = fast.now();
  const ids = [];
  for (let i = 0; i < 25; i++) {
    const j = await server.createJob(u.token, { count: 40, amount: 300 + i });
    fast.send({ type: 'subscribe', job_id: j.job_id, ref: `F${i}` });
    slow.send({ type: 'subscribe', job_id: j.job_id, ref: `S${i}` });
    ids.push(j.job_id);
    await sleep(1000);
  }
  const committed = new Map();
  for (const id of ids) committed.set(id, await settle(server, fast, id, { token: u.token, timeout: 60_000 }));
  const fastDoneAt = fast.now();
  const left = 30_000 - (fastDoneAt - pausedAt);
  if (left > 0) await sleep(left);
  assert.equal(slow.messages.length, 1, 'the paused client read nothing but its hello for 30 s');
  const resumedAt = slow.now() ;
  slow.ws._socket.resume();

  const deltas = fast.messages.filter((m) => m.msg.type === 'delta');
  assert.ok(deltas.length >= 1000, `over 1,000 deltas flowed during the pause (${deltas.length})`);
  assertCleanStream(fast);
  ids.forEach((id, i) => {
    const msgs = fast.jobMessages(id);
    assert.equal(msgs.filter((m) => m.type === 'snapshot').length, 1, `fast, job ${i}: no resync`);
    assert.deepEqual(diffState(fast.view(id), committed.get(id)), [], `fast, job ${i}: state = GET`);
  });
  // Every job's last delta reached the reading client before the paused one read again.
  assert.ok(fastDoneAt < resumedAt + (slow.t0 - fast.t0), 'the reading client was done before the pause ended');

  for (const id of ids) await settle(server, slow, id, { token: u.token, timeout: 60_000 });
  assert.equal(slow.closed, null, `not closed (${JSON.stringify(slow.closed)})`);
  assertCleanStream(slow);
  let resyncs = 0;
  ids.forEach((id, i) => {
    resyncs += slow.jobMessages(id).filter((m) => m.type === 'snapshot' && m.reason === 'resync').length;
    assert.deepEqual(diffState(slow.view(id), committed.get(id)), [], `slow, job ${i}: converged to GET`);
  });
  assert.ok(resyncs >= 1, 'the paused client converged through at least one resync snapshot');
  const lat = deltas.map((m) => Date.now() * 1000 - m.msg.ts - (fast.now() - m.at) * 1000)
    .map((us) => us / 1000).sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(p * (lat.length - 1)))].toFixed(2);
  t.diagnostic(`${deltas.length} deltas to the reading client during the pause: latency p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms; paused client: ${resyncs} resync snapshot(s), ${slow.messages.length} messages`);
  await Promise.all([fast.closeAndWait(), slow.closeAndWait()]);
});
