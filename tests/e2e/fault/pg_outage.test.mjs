// PostgreSQL stopped for 20 s in the middle of 100 running jobs, then started again
// (DESIGN.md "Threads": the db thread reconnects with backoff and drops nothing queued;
// "Durability rules": a delta reaches clients only after it committed; docs/protocol.md
// "Ordering and resuming"; docs/operations.md "The store", "Health").
//
// 100 jobs of 10 users, each 5 transactions (one 8) whose payments need an OTP, answered over
// the socket (otp.submit) with the codes of the sim's inbox; some of them only once the
// outage has begun. Each user's connection
// watches its 10 jobs, two admin connections watch all 100. While the jobs run,
// `$JW_PG_SCRIPT stop`, 20 s, `$JW_PG_SCRIPT start`. Then:
//   - no socket closed, on any client;
//   - every client's stream of every job: one snapshot, then deltas seq+1, seq+2, ... to
//     the end (nothing lost, repeated or reordered), and every delta is in job_events as
//     sent (only committed changes reached a client);
//   - every job completed, and every client's final state of it equals GET /api/jobs/{id};
//   - /readyz answered 503 throughout the outage, 200 after;
//   - every otp.submit got exactly one otp.result, ok;
// and it reports what the server did while PostgreSQL was down (diagnostics): OTP answers,
// the API (commands that change a job refused at once, 503), a subscribe with `since`
// that needs the journal.
//
// It stops the cluster every other test uses: registered RUN_SERIAL in tests/CMakeLists.txt.
// If it fails half-way, the cluster is started again before the process exits.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import {
  Client, JobView, Server, TERMINAL, assertCheckerCatches, assertCleanStream, diffJournal, diffState, env,
  hostPort, http, metrics, pg, pgEnv, pgSync, pool, sleep, waitReady,
} from './lib.mjs';

const USERS = 10;
const JOBS_PER_USER = 10;
const COUNT = 5; // transactions per job
const RUNNER_COUNT = 8; // the first job runs ahead: 8 transactions, every OTP answered at once
// Before the outage the test holds back some payment OTPs, so that no job can finish
// before it and some OTP answers are sent while PostgreSQL is down: every fifth job waits
// at its first payment, the others at their fourth, the runner at its last.
const gateOf = (i) => (i === 0 ? RUNNER_COUNT : i % 5 === 0 ? 1 : 4);
const countOf = (i) => (i === 0 ? RUNNER_COUNT : COUNT);
const OUTAGE_MS = 20_000;

let server;
let pgDown = false; // we stopped the cluster and did not start it again yet

// Whatever happens, leave the shared cluster running.
process.on('exit', () => {
  if (!pgDown) return;
  const r = pgSync('start');
  process.stderr.write(`# pg_outage: started the cluster again on exit (status ${r.status})\n`);
});

before(async () => {
  pgEnv();
  // Slow enough that the jobs are mid-flight when PostgreSQL goes: 150 ms per provider
  // call, two voucher polls 250 ms apart, an OTP for every payment.
  server = new Server({ name: 'fault_pg', sim: 'latency_ms=150,otp=process_payment,voucher_polls=2,poll_after_ms=250' });
  await server.start();
});
after(async () => {
  if (pgDown) {
    const r = await pg('start');
    pgDown = r.code !== 0;
  }
  if (server) await server.stop();
});

// Committed deltas of many jobs at once (lib/db.mjs journal() in one query):
// Map job_id -> [{seq, ts, table, op, row}] in seq order.
function journals(ids) {
  const list = ids.map((id) => {
    assert.match(id, /^[0-9a-f-]{36}$/);
    return `'${id}'`;
  }).join(',');
  const r = spawnSync('psql', ['-XqAt', '-v', 'ON_ERROR_STOP=1', server.db, '-c', `SELECT coalesce(json_object_agg(j, evs), '{}') FROM (
      SELECT job_run_id::text AS j, json_agg(json_build_object('seq', seq,
             'ts', floor(extract(epoch FROM ts))::bigint * 1000000 + (extract(microseconds FROM ts))::bigint % 1000000,
             'table', table_name, 'op', op, 'row', row_data) ORDER BY seq) AS evs
        FROM job_events WHERE job_run_id IN (${list}) GROUP BY job_run_id) t`],
  { encoding: 'utf8', timeout: 60_000, maxBuffer: 512 * 1024 * 1024 });
  assert.ok(!r.error && r.status === 0, `psql: ${r.error ? r.error.message : r.stderr}`);
  return new Map(Object.entries(JSON.parse(r.stdout)));
}

test('PostgreSQL down 20 s under 100 running jobs: no socket dropped, no delta lost or reordered, all complete, /readyz 503 then 200', { timeout: 170_000 }, async (t) => {
  const note = (s) => t.diagnostic(s);
  const startUrl = env().databaseUrl;

  // --- 100 jobs, 12 connections ---------------------------------------------------------
  const users = Array.from({ length: USERS }, () => server.user());
  const jobs = []; // {id, owner, gate, count}
  const create = async (ui) => {
    const i = jobs.length;
    jobs.push(null);
    const j = await server.createJob(users[ui].token, { count: countOf(i), amount: 1000 + ui });
    jobs[i] = { id: j.job_id, owner: ui, gate: gateOf(i), count: countOf(i) };
  };
  await create(0); // the runner first
  await pool(users.flatMap((u, ui) => Array.from({ length: ui === 0 ? JOBS_PER_USER - 1 : JOBS_PER_USER }, () => ui)), 10, create);
  assert.equal(jobs.length, USERS * JOBS_PER_USER);

  const owners = await Promise.all(users.map((u, i) => Client.open(server, u.token, { label: `user${i}` })));
  const admins = await Promise.all([1, 2].map((i) => Client.open(server, server.adminKey, { label: `admin${i}` })));
  const clients = [...owners, ...admins];
  await Promise.all([
    ...owners.map(async (c, ui) => {
      for (const j of jobs.filter((x) => x.owner === ui)) {
        const first = await c.subscribe(j.id);
        assert.equal(first.type, 'snapshot', `${c.label}: the answer to subscribe ${j.id}`);
      }
    }),
    ...admins.map(async (c) => {
      for (const j of jobs) {
        const first = await c.subscribe(j.id);
        assert.equal(first.type, 'snapshot', `${c.label}: the answer to subscribe ${j.id}`);
      }
    }),
  ]);
  const subscriptions = (c) => (admins.includes(c) ? jobs.slice(0, USERS * JOBS_PER_USER) : jobs.filter((j) => j.owner === owners.indexOf(c)));

  // --- answering OTPs over the socket, all along -----------------------------------------
  let phase = 'before'; // before | outage | after: when an otp.submit was sent
  let gateOpen = false;
  let driving = true;
  const submitted = new Set(); // otp_request_id/inbox seq
  const submits = []; // {otp, phase, promise, answeredIn}
  const driver = (async () => {
    while (driving) {
      const todo = [];
      for (const j of jobs) {
        const c = owners[j.owner];
        const v = c.view(j.id);
        if (!v.job || TERMINAL.has(v.job.status)) continue;
        for (const o of v.otps.values()) {
          if (o.status !== 'requested') continue;
          const step = v.steps.get(o.job_step_id);
          if (!gateOpen && (!step || step.transaction_index >= j.gate)) continue;
          todo.push({ c, o });
        }
      }
      if (todo.length) {
        const inbox = await server.inbox();
        for (const { c, o } of todo) {
          const msgs = inbox.filter((m) => m.otp_request_id === o.id);
          if (!msgs.length) continue;
          const m = msgs.reduce((a, b) => (b.seq > a.seq ? b : a));
          const key = `${o.id}/${m.seq}`;
          if (submitted.has(key)) continue;
          submitted.add(key);
          const s = { otp: o.id, phase, answeredIn: null };
          s.promise = c.request({ type: 'otp.submit', otp_request_id: o.id, value: m.code }, { timeout: 150_000 })
            .then((res) => { s.answeredIn = phase; return res; }, (e) => ({ failed: e.message }));
          submits.push(s);
        }
      }
      await sleep(50);
    }
  })();

  try {
    // --- the outage, while every job runs ------------------------------------------------
    const A = admins[0];
    // Stop in the middle: every job processing, the held ones waiting for their first
    // payment's OTP, at least half of the others past their second transaction, the
    // runner more than 64 deltas (the replay ring) along.
    const runner = jobs[0];
    const heldWaiting = (j) => [...A.view(j.id).otps.values()].some((o) => o.status === 'requested');
    await A.waitFor(() => jobs.every((j) => A.view(j.id).job && A.view(j.id).job.status === 'processing') &&
      jobs.filter((j) => j.gate === 1).every(heldWaiting) && A.view(runner.id).seq >= 70 &&
      jobs.filter((j) => j.gate === 4 && A.view(j.id).job.completed_transactions >= 2).length >= jobs.filter((j) => j.gate === 4).length / 2, {
      timeout: 90_000, what: 'every job processing, the held ones at their OTP, half the others past 2 transactions, the runner past seq 70',
    });
    assert.ok(jobs.every((j) => !TERMINAL.has(A.view(j.id).job.status)), 'precondition: no job finished before the outage');
    const busy = jobs.filter((j) => [...A.view(j.id).steps.values()].some((s) => s.status === 'in_progress')).length;

    const down = await pg('stop');
    assert.equal(down.code, 0, `scripts/pg stop: ${down.stderr}`);
    pgDown = true;
    phase = 'outage';
    gateOpen = true; // the held payment OTPs are answered during the outage
    const stoppedAt = Date.now();
    const cursorAtStop = clients.map((c) => c.cursor);
    note(`PostgreSQL stopped with every job running (${busy} with a step in progress at the moment)`);

    const r503 = await waitReady(server, 503, { timeout: 15_000, what: 'PostgreSQL stopped' });
    note(`/readyz: 503 after ${r503.seen.length} polls (answers meanwhile: ${r503.seen.join(' ')}); reason: ${r503.last.json && r503.last.json.reason}`);

    // What works while PostgreSQL is down.
    const u0 = users[0];
    // The runner: since=1 reaches past the 64-delta ring, into the journal.
    const far = runner;
    const j0 = far.id;
    const health = await http(server, 'GET', '/healthz', { guardMs: 10_000 });
    assert.equal(health.status, 200, '/healthz while PostgreSQL is down');
    const getOne = await http(server, 'GET', `/api/jobs/${j0}`, { token: users[far.owner].token, guardMs: 10_000 });
    assert.equal(getOne.status, 200, `GET /api/jobs/{id} of a running job is served from memory: ${getOne.text || getOne.error}`);
    const list = await http(server, 'GET', '/api/jobs?limit=5', { token: u0.token, guardMs: 10_000 });
    assert.equal(list.status, 503, `GET /api/jobs (read from PostgreSQL) while it is down: ${list.text || list.error}`);
    note(`during the outage: /healthz 200, GET /api/jobs/{id} 200 (memory), GET /api/jobs ${list.status} ${list.json && list.json.error && list.json.error.code}`);
    // Commands that change a job are refused at once while PostgreSQL is known down
    // (docs/api.md "Deferred answers"): held for the outage, a client that gave up and
    // sent a create again would start a second job. Nothing is changed: the cancelled job
    // still completes below, and user 0 has no job but its own ten at the end.
    const refusals = [
      ['POST /api/jobs', await http(server, 'POST', '/api/jobs', { token: u0.token, body: { transaction_amount: 999, transaction_count: 1 }, guardMs: 10_000 })],
      ['POST /api/jobs/start-payment', await http(server, 'POST', '/api/jobs/start-payment', { token: u0.token, body: { config: { transactionAmount: 999, transactionCount: 1 } }, guardMs: 10_000 })],
      ['POST /api/jobs/{id}/cancel', await http(server, 'POST', `/api/jobs/${jobs[1].id}/cancel`, { token: users[jobs[1].owner].token, guardMs: 10_000 })],
      ['POST /api/jobs/{id}/retry', await http(server, 'POST', `/api/jobs/${jobs[2].id}/retry`, { token: users[jobs[2].owner].token, guardMs: 10_000 })],
    ];
    for (const [what, r] of refusals) {
      assert.equal(r.status, 503, `${what} while PostgreSQL is down: ${r.status ?? ''} ${r.text || r.error}`);
      assert.equal(r.json && r.json.error && r.json.error.code, 'unavailable', `${what}: ${r.text}`);
      assert.equal(r.headers.get('retry-after'), '5', `${what}: Retry-After`);
    }
    note(`during the outage: create, start-payment, cancel and retry answered 503 unavailable at once (${refusals[0][1].json.error.message})`);
    // A subscriber arriving during the outage, resuming from seq 1 (further back than the
    // 64-delta ring for most jobs: that replay needs the journal).
    const late = await Client.open(server, server.adminKey, { label: 'late' });
    const lateFrom = A.view(j0).seq;
    late.view(j0, JobView.at(j0, 1, { partial: true }));
    const lateFirst = await late.subscribe(j0, { since: 1, timeout: 30_000 });
    assert.ok(lateFirst.type === 'snapshot' || (lateFirst.type === 'delta' && lateFirst.seq === 2),
      `subscribe since 1 during the outage: a snapshot, or the replay from 2: ${JSON.stringify(lateFirst).slice(0, 200)}`);
    note(`during the outage: subscribe since=1 on a job at seq ${lateFrom} (${lateFrom - 1 > 64 ? 'beyond' : 'within'} the 64-delta ring) answered with ${lateFirst.type === 'snapshot' ? `a snapshot at seq ${lateFirst.seq}` : 'the replay'}${lateFirst.type === 'error' ? ` (${lateFirst.code})` : ''}`);
    await late.ping();
    clients.push(late);

    // The rest of the 20 s: /readyz must say 503 all along.
    const during = [];
    while (Date.now() - stoppedAt < OUTAGE_MS) {
      const r = await http(server, 'GET', '/readyz', { guardMs: 5000 });
      during.push(r.status ?? r.error);
      await sleep(500);
    }
    assert.ok(during.length > 0 && during.every((s) => s === 503), `/readyz during the outage: ${during.join(' ')}`);
    const mDown = await metrics(server);
    assert.equal(mDown.get('jobwire_db_connected'), 0, 'jobwire_db_connected during the outage');
    note(`metrics during the outage: jobwire_db_connected 0, jobwire_db_queued_batches ${mDown.get('jobwire_db_queued_batches')}`);
    const deltasInOutage = clients.reduce((n, c, i) =>
      n + c.messages.slice(cursorAtStop[i] ?? 0).filter((e) => e.msg.type === 'delta').length, 0);
    const answeredInOutage = submits.filter((s) => s.phase === 'outage' && s.answeredIn === 'outage').length;
    note(`while PostgreSQL was down: ${during.length} /readyz polls all 503; ${deltasInOutage} deltas reached clients (committed before the stop); ` +
      `${submits.filter((s) => s.phase === 'outage').length} otp.submit sent, ${answeredInOutage} answered before PostgreSQL came back; ` +
      'commands refused');

    const up = await pg('start');
    assert.equal(up.code, 0, `scripts/pg start: ${up.stderr}`);
    pgDown = false;
    phase = 'after';
    assert.equal(hostPort(up.stdout.split('\n').pop()), hostPort(startUrl),
      'the cluster came back on another address (another cluster took its port meanwhile?): jobwire cannot find it');
    const r200 = await waitReady(server, 200, { timeout: 60_000, what: 'PostgreSQL started again' });
    note(`/readyz 200 again after ${r200.seen.length} polls`);

    // --- every job to its end ------------------------------------------------------------
    const own = await http(server, 'GET', '/api/jobs?limit=100', { token: u0.token, guardMs: 10_000 });
    assert.equal(own.status, 200, `GET /api/jobs after the outage: ${own.text || own.error}`);
    assert.deepEqual(own.json.jobs.map((j) => j.id).sort(), jobs.filter((j) => j.owner === 0).map((j) => j.id).sort(),
      "user 0's jobs after the outage: its own ten, none from the refused creates");

    const committed = new Map();
    const pairs = clients.flatMap((c) => (c === late ? [[c, { id: j0 }]] : subscriptions(c).map((j) => [c, j])));
    await pool(pairs, 8, async ([c, j]) => {
      await c.waitTerminal(j.id, { timeout: 90_000 });
      const deadline = Date.now() + 30_000;
      for (;;) {
        const got = await server.getJob(j.id);
        if (got.seq === c.view(j.id).seq) {
          committed.set(j.id, got);
          return;
        }
        assert.ok(Date.now() < deadline, `${c.label}: job ${j.id} at seq ${c.view(j.id).seq}, committed ${got.seq}`);
        await c.waitSeq(j.id, got.seq, { timeout: 2000 }).catch(() => {});
      }
    });
    driving = false;
    await driver;

    // --- what every client saw -------------------------------------------------------------
    for (const c of clients) {
      assert.equal(c.closed, null, `${c.label}: its socket closed (${JSON.stringify(c.closed)})`);
      assert.deepEqual(c.errorEvents, [], `${c.label}: socket errors`);
      assertCleanStream(c); // no gap, no duplicate, no seq going back, every row known
      const errors = c.messages.filter((e) => e.msg.type === 'error').map((e) => e.msg);
      assert.deepEqual(errors, [], `${c.label}: error messages`);
    }
    let deltas = 0;
    for (const [c, j] of pairs) {
      const v = c.view(j.id);
      if (c !== late) assert.equal(v.snapshots.length, 1, `${c.label}: job ${j.id}: one snapshot (no resync), then deltas`);
      assert.deepEqual(diffState(v, committed.get(j.id)), [], `${c.label}: job ${j.id}: the final state = GET /api/jobs/{id}`);
      deltas += v.deltaSeqs.length;
    }
    for (const j of jobs.slice(0, USERS * JOBS_PER_USER)) {
      const got = committed.get(j.id);
      assert.equal(got.job.status, 'completed', `job ${j.id}: ${got.job.status} ${got.job.error_message || ''}`);
      assert.equal(got.job.completed_transactions, j.count);
    }

    // Only committed changes reached the clients, exactly as committed.
    const ids = [...new Set(pairs.map(([, j]) => j.id))];
    const journal = journals(ids);
    for (const id of ids) {
      const rows = journal.get(id) || [];
      assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: committed.get(id).seq }, (_, i) => i + 1), `job ${id}: job_events 1..seq`);
    }
    for (const c of clients) {
      for (const id of ids) {
        if (!c.views.has(id)) continue;
        assert.deepEqual(diffJournal(c.view(id).deltas, journal.get(id) || []), [], `${c.label}: job ${id}: every delta = job_events`);
      }
    }

    // The store lost and refused nothing; no client fell behind.
    const m = await metrics(server);
    assert.equal(m.get('jobwire_db_connected'), 1, 'jobwire_db_connected after the outage');
    assert.equal(m.get('jobwire_db_batches_failed_total'), 0, 'no batch refused (a refused batch halts its job)');
    assert.equal(m.get('jobwire_db_queued_batches'), 0, 'nothing left queued');
    assert.ok(m.get('jobwire_db_reconnects_total') >= 2, 'the store connected again');
    assert.equal(m.get('jobwire_ws_resyncs_total'), 0, 'no client was resynced');
    note(`metrics after: reconnects ${m.get('jobwire_db_reconnects_total')}, outage ${m.get('jobwire_db_outage_seconds_total')} s, batches committed ${m.get('jobwire_db_batches_committed_total')} in ${m.get('jobwire_db_commits_total')} commits`);

    // Every OTP answer came, once, and was accepted.
    const results = await Promise.all(submits.map((s) => s.promise));
    const bad = results.filter((r) => r.failed || r.type !== 'otp.result' || r.ok !== true);
    assert.deepEqual(bad, [], 'every otp.submit answered once with ok');
    const refs = clients.flatMap((c) => c.messages.filter((e) => e.msg.type === 'otp.result').map((e) => e.msg.ref));
    assert.equal(new Set(refs).size, refs.length, 'no otp.result twice');
    const by = (p, a) => submits.filter((s) => s.phase === p && (a === undefined || s.answeredIn === a)).length;
    note(`otp.submit: ${submits.length} in all; before the outage ${by('before')}; during it ${by('outage')} ` +
      `(answered during it ${by('outage', 'outage')}, after it ${by('outage', 'after')}); after it ${by('after')}`);
    note(`${jobs.length} jobs completed; ${clients.length} sockets, none closed; ${deltas} deltas checked in order; every final state = GET`);

    // The checker used above catches a lost, a repeated and a reordered delta.
    assertCheckerCatches(jobs[0].id, admins[0].jobMessages(jobs[0].id));
  } finally {
    driving = false;
    await driver.catch(() => {});
    await Promise.all(clients.map((c) => c.closeAndWait().catch(() => {})));
  }
});
