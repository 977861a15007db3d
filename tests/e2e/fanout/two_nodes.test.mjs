// The cross-node fan-out (docs/architecture.md, "From the owner to a client on another
// node"): two jobwire nodes on one database, jobs driven by node A, clients on node B.
//   1. jobwire.v1 clients on B see every job's deltas gapless, once each, equal to the
//      journal, and end at A's committed state - while B's LISTEN connection is killed
//      mid-run (pg_terminate_backend of B's 'jobwire-cluster' backend only): the
//      catch-up reads what the lost notifications pointed at;
//   2. a supabase-js channel on B pinned to a job of A gets every change after its join,
//      in seq order, each once, row for row the journal's;
//   3. a subscribe with since on B replays the missing deltas; a snapshot on B equals A's;
//   4. B's metrics count what it fetched; A's the notifications it sent;
//   5. a wildcard channel on B gets a new job of its user whole, and nothing of another's;
//      joined while an older job of A waits, it gets every change of it after the join;
//   6. a job changing hands while watched (C stops, D takes it over): contiguous on D;
//   7. a crowd of clients subscribing on B at once to a job of A: all answered, no 'busy'.
// Before B starts, A is alone on the database: its commits notify nobody (db/commit.c,
// "Alone"); once B listens and says hello, A notifies again (test 4 counts what it sent).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import {
  Client, Server, assertCleanStream, diffJournal, diffState, journal, normalize, psql, settle, sleep,
} from '../lib/index.mjs';
import { subscribe, supabase, until } from '../supabase/lib.mjs';

const SIM = 'latency_ms=30,voucher_polls=1,poll_after_ms=30';
const CROWD = 600; // test 7: clients of one user subscribing on B at once
let A;
let B;
const sbClients = [];

before(async () => {
  A = new Server({ name: 'fanout_a', sim: SIM });
  B = new Server({ name: 'fanout_b', sim: SIM, db: A.db, args: ['--max-ws-per-user', String(CROWD + 10), '--max-connections-per-ip', '0', '--connection-rate-per-ip', '0'] });
  await A.start();
  // Alone: a job's commits on A are not notified, and counted as skipped.
  const solo = A.user();
  await A.createJob(solo.token, { count: 1 });
  const deadline = Date.now() + 20_000;
  let m = await metrics(A);
  while (!(m.jobwire_cluster_notifications_skipped_total > 0)) {
    assert.ok(Date.now() < deadline, `A alone skipped no notification: ${JSON.stringify(m)}`);
    await sleep(50);
    m = await metrics(A);
  }
  assert.equal(m.jobwire_cluster_notifications_sent_total, 0, 'A alone sent no jw_events notification');
  await B.start();
});

after(async () => {
  for (const c of sbClients) await c.removeAllChannels();
  if (B) await B.stop();
  if (A) await A.stop();
});

// A user of both nodes: the same id, a token for each node's secret.
function bothUser() {
  const u = A.user();
  return { id: u.id, a: u.token, b: B.mint(u.id) };
}

// /metrics of a node as {name: value} (unlabelled samples only).
async function metrics(server) {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200);
  const out = {};
  for (const line of r.text.split('\n')) {
    const m = /^([a-z_]+) ([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

// The local ports of a process's TCP connections to the database's port (ss -tnp).
function dbClientPorts(pid, dbPort) {
  const r = spawnSync('ss', ['-Htnp', 'state', 'established', `( dport = :${dbPort} )`], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, `ss: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => Number(/:(\d+)\s+\S+:\d+/.exec(l)[1]));
}

// Terminates node's LISTEN connection (application_name jobwire-cluster), and only its.
function killListen(node) {
  const dbPort = Number(new URL(node.db).port || 5432);
  const ports = dbClientPorts(node.pid, dbPort);
  assert.ok(ports.length >= 3, `${node.name}'s connections to PostgreSQL found: ${ports}`);
  const killed = psql(node.db, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE application_name = 'jobwire-cluster' AND client_port IN (${ports.join(',')})`);
  assert.equal(killed, '1', `exactly ${node.name}'s cluster connection terminated`);
}

// Answers a job's OTPs on its owner A over HTTP until it completed.
function finishOnA(id, token) {
  return A.driveHttp(id, token, (j) => j.job.status === 'completed', { timeout: 120_000 });
}

test('1. jobwire.v1 on B: jobs of A gapless, once, = journal, LISTEN killed mid-run', { timeout: 240_000 }, async () => {
  const u = bothUser();
  const before = await metrics(B);
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push((await A.createJob(u.a, { count: 2 })).job_id);
  const c = await Client.open(B, u.b, { label: 'B-user' });
  const admin = await Client.open(B, B.adminKey, { label: 'B-admin' });
  for (const id of jobs) {
    for (const cl of [c, admin]) {
      const first = await cl.subscribe(id);
      assert.equal(first.type, 'snapshot', `${cl.label}: a snapshot of ${id} first: ${JSON.stringify(first).slice(0, 200)}`);
    }
  }
  const driving = jobs.map((id) => finishOnA(id, u.a));
  // Mid-run: B's LISTEN connection dies; B listens again and catches up.
  await until(() => jobs.every((id) => (c.view(id).seq || 0) >= 6), { timeout: 60_000, what: 'every job past seq 6 on B' });
  const logBefore = B.logText().split('listening again').length;
  killListen(B);
  await until(() => B.logText().split('listening again').length > logBefore, { timeout: 30_000, what: "B's cluster listening again" });
  const done = await Promise.all(driving);

  for (const [i, id] of jobs.entries()) {
    for (const cl of [c, admin]) {
      const committed = await settle(A, cl, id, { timeout: 60_000 });
      assert.equal(committed.seq, done[i].seq);
      assert.deepEqual(diffState(cl.view(id), committed), [], `${cl.label} ${id}: snapshot + deltas = the owner's state`);
      const msgs = cl.jobMessages(id);
      const snap = msgs[0];
      const deltas = msgs.filter((m) => m.type === 'delta');
      assert.equal(msgs.filter((m) => m.type === 'snapshot').length, 1, `${cl.label} ${id}: one snapshot`);
      assert.deepEqual(
        deltas.map((m) => m.seq),
        Array.from({ length: committed.seq - snap.seq }, (_, k) => snap.seq + 1 + k),
        `${cl.label} ${id}: deltas ${snap.seq + 1}..${committed.seq}, each once, in order`,
      );
      assert.deepEqual(diffJournal(deltas, journal(A, id)), [], `${cl.label} ${id}: every delta is its journal row`);
      for (const m of deltas) assert.ok(Number.isInteger(m.cts) && m.cts >= m.ts, `delta ${m.seq} carries its cts`);
    }
  }
  for (const cl of [c, admin]) assertCleanStream(cl);
  const now = await metrics(B);
  assert.ok(now.jobwire_cluster_deltas_fetched_total > (before.jobwire_cluster_deltas_fetched_total || 0), 'B fetched deltas from the journal');
  assert.ok(now.jobwire_cluster_catchups_total > (before.jobwire_cluster_catchups_total || 0), 'B caught up');
  assert.ok(now.jobwire_cluster_delivery_delay_seconds_count > 0, 'B timed the cross-node delivery');
  assert.ok((await metrics(A)).jobwire_cluster_notifications_sent_total > 0, 'A notified its commits');
  assert.equal(now.jobwire_leases_held, 0, 'B drove none of them');
  // The page stays well-formed Prometheus text with the new histogram observed.
  const page = (await B.api('GET', '/metrics', { token: B.adminKey })).text;
  const awk = spawnSync('awk', ['-f', new URL('../../integration/prom_check.awk', import.meta.url).pathname], { input: page, encoding: 'utf8', timeout: 10_000 });
  assert.equal(awk.status, 0, `prom_check: ${awk.stdout}${awk.stderr}`);
  // Informational: the bucket holding the median and the 99th percentile of B's delays.
  const buckets = [...page.matchAll(/^jobwire_cluster_delivery_delay_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]);
  const total = now.jobwire_cluster_delivery_delay_seconds_count;
  const q = (f) => (buckets.find(([, n]) => n >= f * total) || ['?'])[0];
  console.log(`# cross-node delivery delay on B: ${total} deltas, p50 <= ${q(0.5)} s, p99 <= ${q(0.99)} s`);
  await c.closeAndWait();
  await admin.closeAndWait();
});

test('2. supabase-js on B: a channel pinned to a job of A gets every change in seq order, once', { timeout: 180_000 }, async () => {
  const u = bothUser();
  const { job_id: id } = await A.createJob(u.a, { count: 2 });
  const paused = await A.waitPaused(id); // nothing changes until someone types an OTP
  const sb = supabase(B, u.b);
  sbClients.push(sb);
  await sb.realtime.setAuth();
  const ch = sb.channel(`job-${id}`);
  const got = [];
  for (const [table, col] of [['job_runs', 'id'], ['job_steps', 'job_run_id'], ['otp_requests', 'job_run_id']]) {
    ch.on('postgres_changes', { event: '*', schema: 'public', table, filter: `${col}=eq.${id}` }, (p) => {
      got.push({ table: p.table, eventType: p.eventType, new: p.new });
    });
  }
  assert.deepEqual(await subscribe(ch), { status: 'SUBSCRIBED', message: null });
  const done = await finishOnA(id, u.a);
  const events = journal(A, id).filter((e) => e.seq > paused.seq);
  await until(() => got.length >= events.length, { timeout: 30_000, what: `${events.length} changes after seq ${paused.seq}` });
  await sb.recorder.roundTrip(); // anything more would have arrived by now
  // The wire's seq of each event (jobwire adds it to the event's data).
  const seqs = sb.recorder
    .received()
    .filter((m) => m.event === 'postgres_changes' && m.topic === `realtime:job-${id}`)
    .map((m) => m.payload.data.seq);
  assert.deepEqual(seqs, events.map((e) => e.seq), `seqs ${paused.seq + 1}..${done.seq}, each once, in order`);
  assert.equal(got.length, events.length);
  for (const [i, e] of events.entries()) {
    assert.equal(got[i].table, e.table);
    assert.equal(got[i].eventType, e.op);
    assert.deepStrictEqual(got[i].new, e.row, `change ${e.seq}: the journal's row`);
  }
});

test('3. on B: since replays what was missed; a snapshot equals the owner\'s', { timeout: 180_000 }, async () => {
  const u = bothUser();
  const { job_id: id } = await A.createJob(u.a, { count: 1 });
  const paused = await A.waitPaused(id); // its seq stays put until an OTP is typed
  // A snapshot on B (a job of A, read and mirrored) and on A (in A's memory).
  const cb = await Client.open(B, u.b, { label: 'B' });
  const ca = await Client.open(A, u.a, { label: 'A' });
  const sb = await cb.subscribe(id);
  const sa = await ca.subscribe(id);
  assert.equal(sb.type, 'snapshot');
  assert.equal(sa.type, 'snapshot');
  assert.equal(sb.seq, paused.seq);
  assert.equal(sa.seq, paused.seq);
  const body = (s) => normalize({ job: s.job, steps: s.steps, otp_requests: s.otp_requests, seq: s.seq });
  assert.deepStrictEqual(body(sb), body(sa), 'the snapshot on B is the snapshot on A');
  assert.deepEqual(sb.steps.map((s) => s.id), sa.steps.map((s) => s.id), 'steps in the same order');

  // A resume on B: since a seq in the middle replays the rest, each once, then ack, then live.
  const since = Math.floor(paused.seq / 2);
  const cr = await Client.open(B, u.b, { label: 'B-resume' });
  const first = await cr.subscribe(id, { since, ref: 'resume' });
  assert.equal(first.type, 'delta', `a resume starts with the next delta: ${JSON.stringify(first).slice(0, 200)}`);
  await cr.waitFor((m) => m.type === 'ack' && m.ref === 'resume', { what: 'the resume ack' });
  const done = await finishOnA(id, u.a);
  await settle(A, cr, id, { timeout: 60_000 });
  const replayed = cr.jobMessages(id).filter((m) => m.type === 'delta');
  assert.deepEqual(replayed.map((m) => m.seq), Array.from({ length: done.seq - since }, (_, k) => since + 1 + k));
  assert.deepEqual(diffJournal(replayed, journal(A, id)), []);

  // Finished and not in B's engine: answered as on a single node (a snapshot for since).
  const cf = await Client.open(B, u.b, { label: 'B-finished' });
  const fin = await cf.subscribe(id, { since: done.seq - 1 });
  assert.equal(fin.type, 'snapshot');
  assert.equal(fin.seq, done.seq);
  for (const cl of [ca, cb, cr, cf]) await cl.closeAndWait();
});

test('4. a job subscribed on B before A commits anything more: live from the first change', { timeout: 180_000 }, async () => {
  // The subscription on B starts from B's mirror: a job of A whose OTP waits, watched on B,
  // then answered on A - B's client sees the rest at once after its snapshot.
  const u = bothUser();
  const { job_id: id } = await A.createJob(u.a, { count: 1 });
  const paused = await A.waitPaused(id);
  const c = await Client.open(B, u.b, { label: 'B-live' });
  const first = await c.subscribe(id);
  assert.equal(first.type, 'snapshot');
  assert.equal(first.seq, paused.seq, 'the snapshot on B is at the owner\'s seq');
  const done = await finishOnA(id, u.a);
  const committed = await settle(A, c, id, { timeout: 60_000 });
  assert.equal(committed.seq, done.seq);
  assertCleanStream(c);
  const deltas = c.jobMessages(id).filter((m) => m.type === 'delta');
  assert.deepEqual(deltas.map((m) => m.seq), Array.from({ length: done.seq - paused.seq }, (_, k) => paused.seq + 1 + k));
  await c.closeAndWait();
});

test('5. a wildcard channel on B: a job its user creates on A arrives whole, from its INSERT', { timeout: 180_000 }, async () => {
  const u = bothUser();
  const other = bothUser();
  const sb = supabase(B, u.b);
  sbClients.push(sb);
  await sb.realtime.setAuth();
  const ch = sb.channel('all-my-jobs');
  const got = [];
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs' }, (p) => {
    got.push({ eventType: p.eventType, new: p.new });
  });
  assert.deepEqual(await subscribe(ch), { status: 'SUBSCRIBED', message: null });
  // Another user's job on A at the same time: never delivered to u.
  const { job_id: foreign } = await A.createJob(other.a, { count: 1 });
  const { job_id: id } = await A.createJob(u.a, { count: 1 });
  await Promise.all([finishOnA(id, u.a), finishOnA(foreign, other.a)]);
  const rows = journal(A, id).filter((e) => e.table === 'job_runs');
  await until(() => got.filter((g) => g.new.id === id).length >= rows.length, { timeout: 30_000, what: `${rows.length} job_runs changes` });
  await sb.recorder.roundTrip();
  const mine = got.filter((g) => g.new.id === id);
  assert.equal(mine[0].eventType, 'INSERT', 'the job\'s first row arrives');
  assert.deepEqual(mine.map((g) => [g.eventType, g.new]), rows.map((e) => [e.op, e.row]), 'every job_runs change, in order, once');
  assert.deepEqual(got.filter((g) => g.new.id === foreign), [], 'another user\'s job is not delivered');
  // Left, so that no wildcard channel is on B when the next test's job starts.
  await sb.removeAllChannels();
  sb.realtime.disconnect();
  sbClients.splice(sbClients.indexOf(sb), 1);
});

test('5b. a wildcard channel on B joined while a job of A waits: every change after the join, once', { timeout: 180_000 }, async () => {
  // The job is older than the channel: B learns of it from the first notice after the join,
  // whose changes B's read of the job's state already holds; the channel still gets them.
  const u = bothUser();
  const { job_id: id } = await A.createJob(u.a, { count: 1 });
  const paused = await A.waitPaused(id); // nothing changes until someone types an OTP
  const sb = supabase(B, u.b);
  sbClients.push(sb);
  await sb.realtime.setAuth();
  const ch = sb.channel('all-my-changes');
  for (const table of ['job_runs', 'job_steps', 'otp_requests']) {
    ch.on('postgres_changes', { event: '*', schema: 'public', table }, () => {});
  }
  assert.deepEqual(await subscribe(ch), { status: 'SUBSCRIBED', message: null });
  const done = await finishOnA(id, u.a);
  const events = journal(A, id).filter((e) => e.seq > paused.seq);
  const seqs = () => sb.recorder
    .received()
    .filter((m) => m.event === 'postgres_changes' && m.topic === 'realtime:all-my-changes')
    .filter((m) => (m.payload.data.table === 'job_runs' ? m.payload.data.record.id : m.payload.data.record.job_run_id) === id)
    .map((m) => m.payload.data.seq);
  await until(() => seqs().length >= events.length, { timeout: 30_000, what: `${events.length} changes after seq ${paused.seq}` });
  await sb.recorder.roundTrip();
  assert.deepEqual(seqs(), events.map((e) => e.seq), `seqs ${paused.seq + 1}..${done.seq}, each once, in order`);
  await sb.removeAllChannels();
  sb.realtime.disconnect();
  sbClients.splice(sbClients.indexOf(sb), 1);
});

test('6. ownership changes hands while watched: the stream on the new owner stays contiguous', { timeout: 180_000 }, async () => {
  // Two more nodes without OTPs, each step slow enough to be mid-job: C drives the jobs,
  // a client on D watches them (D mirrors them), C stops (SIGTERM: it hands its leases
  // back) and D takes them over - its engine's first deltas pass through its mirror.
  const sim = 'latency_ms=120,otp=none,voucher_polls=1,poll_after_ms=40';
  const C = new Server({ name: 'fanout_c', sim, args: ['--node-ttl', '3s'] });
  const D = new Server({ name: 'fanout_d', sim, db: C.db, args: ['--node-ttl', '3s'] });
  await C.start();
  await D.start();
  try {
    const u = C.user();
    const tokenD = D.mint(u.id);
    const jobs = [];
    for (let i = 0; i < 2; i++) jobs.push((await C.createJob(u.token, { count: 4 })).job_id);
    const c = await Client.open(D, tokenD, { label: 'D' });
    const snaps = {};
    for (const id of jobs) {
      snaps[id] = await c.subscribe(id);
      assert.equal(snaps[id].type, 'snapshot');
    }
    await until(() => jobs.every((id) => (c.view(id).seq || 0) >= snaps[id].seq + 3), { timeout: 60_000, what: 'deltas of both jobs on D' });
    await C.stop();
    const done = [];
    for (const id of jobs) {
      done.push(await D.waitJob(id, (j) => j.job.status === 'completed', { timeout: 90_000, what: 'completed on D' }));
    }
    for (const [i, id] of jobs.entries()) {
      const committed = await settle(D, c, id, { timeout: 60_000 });
      assert.equal(committed.seq, done[i].seq);
      assert.deepEqual(diffState(c.view(id), committed), [], `${id}: snapshot + deltas = the new owner's state`);
      const deltas = c.jobMessages(id).filter((m) => m.type === 'delta');
      assert.deepEqual(
        deltas.map((m) => m.seq),
        Array.from({ length: committed.seq - snaps[id].seq }, (_, k) => snaps[id].seq + 1 + k),
        `${id}: deltas ${snaps[id].seq + 1}..${committed.seq}, each once, in order, across the takeover`,
      );
      assert.deepEqual(diffJournal(deltas, journal(D, id)), []);
    }
    assertCleanStream(c);
    const m = await metrics(D);
    assert.ok(m.jobwire_takeovers_total >= 2, `D took both jobs over (${m.jobwire_takeovers_total})`);
    // Caught up with its own engine, D publishes those jobs without a mirror again.
    let left = -1;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
      left = (await metrics(D)).jobwire_cluster_mirrors;
      if (left === 0) break;
      await sleep(50);
    }
    assert.equal(left, 0, 'no mirror left on D once its engine drives the jobs');
    await c.closeAndWait();
  } finally {
    await D.stop();
    await C.stop();
  }
});

test('7. a crowd subscribes on B at once to a job of A: every one answered, one read shared', { timeout: 180_000 }, async () => {
  // The clients of a node that went reconnect to B and subscribe together: the first
  // subscribe reads the job from PostgreSQL and mirrors it, the others wait for that read
  // instead of each queuing one (the store's queue holds 256: they were refused 'busy').
  const u = bothUser();
  const { job_id: id } = await A.createJob(u.a, { count: 1 });
  const paused = await A.waitPaused(id);
  const before = (await metrics(B)).jobwire_ws_subscribes_parked_total;
  const clients = [];
  for (let i = 0; i < CROWD; i += 50) {
    clients.push(...await Promise.all(Array.from({ length: Math.min(50, CROWD - i) }, (_, k) =>
      Client.open(B, u.b, { label: `crowd-${i + k}` }))));
  }
  // The crowd arrives while PostgreSQL is slow to answer: job_runs is locked for 2 s, so
  // the subscribes' reads cannot finish before all of them came in.
  const locker = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', A.db, '-c',
    'BEGIN; LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;'], { stdio: 'ignore' });
  const unlocked = new Promise((resolve) => locker.on('exit', resolve));
  try {
    await until(() => psql(A.db, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
      WHERE c.relname = 'job_runs' AND l.mode = 'AccessExclusiveLock' AND l.granted`) === '1',
    { timeout: 10_000, what: 'job_runs locked' });
    const firsts = await Promise.all(clients.map((c) => c.subscribe(id, { timeout: 30_000 })));
    assert.equal(await unlocked, 0, 'the lock was held and released');
    const refused = firsts.filter((m) => m.type !== 'snapshot');
    assert.deepEqual(refused.slice(0, 2), [], `${refused.length} of ${CROWD} subscribes were not answered with a snapshot: ${JSON.stringify(refused[0])}`);
    assert.deepEqual([...new Set(firsts.map((m) => m.seq))], [paused.seq], 'every snapshot at the owner\'s seq');
    assert.ok((await metrics(B)).jobwire_ws_subscribes_parked_total > before, 'subscribes waited for a shared read');
    const done = await finishOnA(id, u.a);
    const want = Array.from({ length: done.seq - paused.seq }, (_, k) => paused.seq + 1 + k);
    for (const c of clients) {
      await c.waitSeq(id, done.seq, { timeout: 30_000 });
      assertCleanStream(c);
      assert.deepEqual(c.jobMessages(id).filter((m) => m.type === 'delta').map((m) => m.seq), want, `${c.label}: every change once`);
    }
  } finally {
    await unlocked;
    await Promise.all(clients.map((c) => c.closeAndWait()));
  }
});
