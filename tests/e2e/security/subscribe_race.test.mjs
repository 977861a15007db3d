// A subscribe that reads the database must not leave a foreign subscription behind.
//
// A job this process does not hold in memory (it finished before a restart) is looked up
// in PostgreSQL when someone subscribes; the subscription waits for that read. If the job
// comes into memory meanwhile (its owner retries it), the answer is taken from memory
// (server/ws.c on_subscribe_read -> subscribe_from_memory). That path refused another
// user with not_found but kept the subscription it had registered before the read, so
// user B then received every delta of user A's job.
//
// The order is made certain, not timed: a psql session holds an exclusive lock on
// job_runs, so the store's reads queue behind the first one (the retry's, seen waiting in
// pg_stat_activity); B's subscribe is known to be queued behind it once B's ping after it
// is answered (one connection, messages handled in order). Releasing the lock answers
// the retry's read first (the job comes into memory), then B's.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Client, Server, failJobByWrongOtps, psql, sleep } from './lib.mjs';

let server;
let locker = null; // the psql process holding the lock (ours; killed by PID)
before(async () => {
  server = new Server({ name: 'sec_race', sim: 'latency_ms=5,voucher_polls=1,poll_after_ms=10' });
  await server.start();
});
after(async () => {
  if (locker && locker.exitCode === null) process.kill(locker.pid, 'SIGKILL');
  if (server) await server.stop();
});

// Starts psql, takes the lock, resolves once it is held; release() rolls back.
async function lockJobRuns(url) {
  locker = spawn('psql', ['-XqAt', '-v', 'ON_ERROR_STOP=1', url], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  locker.stdout.on('data', (d) => { out += d; });
  locker.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => locker.on('exit', resolve));
  locker.stdin.write("BEGIN; LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n");
  const deadline = Date.now() + 20_000;
  while (!out.includes('locked')) {
    assert.ok(locker.exitCode === null, `psql exited: ${err}`);
    assert.ok(Date.now() < deadline, `the lock was not taken within 20 s: ${err}`);
    await sleep(20);
  }
  return async () => {
    locker.stdin.write('ROLLBACK;\n');
    locker.stdin.end();
    await exited;
  };
}

// Waits until the store's reads connection (db/reads.c: one, reads in order) waits for
// a lock. Not any session: the cluster thread's claim, once a second, waits on the same
// lock, and B's subscribe must queue behind the retry's read, not beside a claim.
async function waitBlockedRead(url, dbName) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const n = Number(psql(url, `SELECT count(*) FROM pg_stat_activity
      WHERE datname = '${dbName}' AND application_name = 'jobwire-reads'
        AND wait_event_type = 'Lock'`));
    if (n >= 1) return;
    assert.ok(Date.now() < deadline, 'the retry\'s read did not reach PostgreSQL within 20 s');
    await sleep(20);
  }
}

test('B subscribing to A\'s job while A\'s retry brings it into memory: not_found, and no delta of it ever', { timeout: 120_000 }, async () => {
  const A = server.user();
  const B = server.user();
  const { job_id: job } = await server.createJob(A.token, { count: 1 });
  await server.waitPaused(job);
  await failJobByWrongOtps(server, job);
  // A restart: the failed job is only in PostgreSQL now.
  await server.stop();
  await server.start();
  const dbName = server.db.replace(/^.*\//, '').replace(/\?.*$/, '');

  const b = await Client.open(server, B.token, { label: 'B' });
  const release = await lockJobRuns(server.db);
  const retry = server.api('POST', `/api/jobs/${job}/retry`, { token: A.token, body: {} });
  await waitBlockedRead(server.db, dbName);
  const from = b.cursor;
  b.send({ type: 'subscribe', job_id: job, ref: 'race' });
  await b.ping(); // the subscribe was handled: its read is queued behind the retry's
  await release();

  const r = await retry;
  assert.equal(r.status, 200, `A's retry: ${r.status} ${r.text.slice(0, 300)}`);
  const ans = await b.waitRef('race', { from, timeout: 20_000 });
  assert.equal(ans.type, 'error', `B's subscribe: ${JSON.stringify(ans).slice(0, 300)}`);
  assert.equal(ans.code, 'not_found');

  // The retried job runs on: it asks for a login code again (several commits later).
  await server.waitPaused(job);
  await b.ping();
  const leaked = b.messages.map((e) => e.msg).filter((m) => m.job_id === job && m.type !== 'error');
  assert.deepEqual(leaked.map((m) => `${m.type} seq ${m.seq}`), [], 'B received messages of A\'s job');
  const un = await b.request({ type: 'unsubscribe', job_id: job });
  assert.equal(un.type, 'error', `B holds no subscription to A's job: ${JSON.stringify(un)}`);
  assert.equal(un.code, 'not_subscribed');
  await b.closeAndWait();
});
