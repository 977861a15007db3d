// job_events retention (docs/operations.md "Retention of job_events"), with the real
// binary: --events-retention 1s deletes the journal of finished jobs a second after their
// last change, in transactions of --events-retention-batch rows; a running job keeps its
// journal; job rows stay, so GET /api/jobs/{id} answers as before; a client resuming a
// pruned job gets a snapshot (from memory: the journal replay falls back; after a restart:
// the snapshot from the rows) that equals the committed state; /metrics counts it all.
//   R1  the settings: --help lists them, bad values are refused (exit 2) by their name;
//   R2  prune after the age, in batches; running job kept; rows, GET, metrics;
//   R3  resume with since of a pruned job: a snapshot, in memory and after a restart.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Client, Server, diffState, env, psql, sleep } from '../lib/index.mjs';

const BATCH = 40;
const RING = 64; // deltas of a job kept in memory for resumes (server/ws.c)

let server;
before(async () => {
  server = new Server({
    name: 'retention',
    sim: 'latency_ms=5,voucher_polls=1,poll_after_ms=10',
    args: ['--events-retention', '1s', '--events-retention-interval', '1', '--events-retention-batch', String(BATCH)],
  });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

async function metrics() {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200, `GET /metrics: ${r.status} ${r.text.slice(0, 200)}`);
  const out = new Map();
  for (const line of r.text.split('\n')) {
    const m = /^([a-z_]+) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

const eventsOf = (id) => Number(psql(server.db, `SELECT count(*) FROM job_events WHERE job_run_id = '${id}'`));

// Finished jobs, their committed state when they ended, and the running one (R2, R3).
const done = [];
const ended = new Map();
let running;

test('R1. the retention settings: listed in --help, bad values refused by name (exit 2)', () => {
  const { bin } = env();
  const help = spawnSync(bin, ['--help'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(help.status, 0);
  for (const name of ['JOBWIRE_EVENTS_RETENTION', 'JOBWIRE_EVENTS_RETENTION_BATCH', 'JOBWIRE_EVENTS_RETENTION_INTERVAL']) {
    assert.ok(help.stdout.includes(name), `--help lists ${name}`);
  }
  assert.match(help.stdout, /--events-retention=DURATION\n\s+env: JOBWIRE_EVENTS_RETENTION\s+default: 30d/);

  const run = (args, extraEnv = {}) => spawnSync(bin, ['--dev', ...args], {
    encoding: 'utf8',
    timeout: 10_000,
    env: { ...process.env, DATABASE_URL: 'postgresql://127.0.0.1:1/none', ...extraEnv },
  });
  for (const [args, extraEnv, name] of [
    [['--events-retention', '30x'], {}, '--events-retention'],
    [['--events-retention', '3651d'], {}, '--events-retention'],
    [[], { JOBWIRE_EVENTS_RETENTION: '-1' }, 'JOBWIRE_EVENTS_RETENTION'],
    [['--events-retention-batch', '0'], {}, '--events-retention-batch'],
    [['--events-retention-interval', '0'], {}, '--events-retention-interval'],
    [['--events-retention-interval', '2d'], {}, '--events-retention-interval'],
  ]) {
    const r = run(args, extraEnv);
    assert.equal(r.status, 2, `${JSON.stringify(args)} ${JSON.stringify(extraEnv)}: exit 2 (got ${r.status}: ${r.stderr})`);
    assert.ok(r.stderr.includes(`${name} must be`), `the message names ${name}: ${r.stderr}`);
  }
});

test('R2. finished jobs lose their journal after the age, in batches; a running job keeps it; rows and GET stay', { timeout: 120_000 }, async (t) => {
  const u = server.user();
  running = (await server.createJob(u.token, { count: 1 })).job_id;
  for (let i = 0; i < 2; i++) done.push((await server.createJob(u.token, { count: 8 })).job_id);
  for (const id of done) ended.set(id, await server.driveHttp(id, u.token, (j) => j.job.status === 'completed'));
  const paused = await server.waitPaused(running);
  assert.equal(paused.job.status, 'validating');

  // More deltas than the memory ring: a resume from seq 1 must go to the journal (R3).
  const deltas = [...ended.values()].map((j) => j.seq);
  for (const n of deltas) assert.ok(n > RING + 1, `an 8-transaction job has more than ${RING + 1} deltas (${n})`);
  const total = deltas.reduce((a, b) => a + b, 0);
  t.diagnostic(`an 8-transaction sim job with OTPs: ${deltas.join(' and ')} deltas`);

  // Pruning happens within a few seconds (age 1 s, a round every second).
  const deadline = Date.now() + 60_000;
  let m = await metrics();
  while ((m.get('jobwire_db_runs_pruned_total') || 0) < done.length) {
    assert.ok(Date.now() < deadline, `within 60 s the journal of ${done.length} finished jobs went (metrics: ${[...m].filter(([k]) => k.includes('prune')).join(' ')})`);
    await sleep(100);
    m = await metrics();
  }
  for (const id of done) assert.equal(eventsOf(id), 0, `job ${id}: no events left`);
  const stillRunning = await server.getJob(running);
  assert.ok(!['completed', 'failed', 'cancelled'].includes(stillRunning.job.status));
  assert.equal(eventsOf(running), stillRunning.seq, 'the running job keeps every event');

  // Counted, and in batches of at most BATCH rows.
  assert.equal(m.get('jobwire_db_events_pruned_total'), total);
  assert.equal(m.get('jobwire_db_runs_pruned_total'), done.length);
  assert.ok(m.get('jobwire_db_prune_batches_total') >= Math.ceil(total / BATCH),
    `${total} rows in batches of ${BATCH}: at least ${Math.ceil(total / BATCH)} transactions (got ${m.get('jobwire_db_prune_batches_total')})`);
  assert.ok(m.get('jobwire_db_prune_rounds_total') >= 1);

  // The rows stay: GET answers exactly what it did when the job ended.
  for (const id of done) {
    const now = await server.getJob(id, u.token);
    assert.deepEqual(now, ended.get(id), `GET /api/jobs/${id} unchanged by retention`);
    assert.equal(Number(psql(server.db, `SELECT last_seq FROM job_runs WHERE id = '${id}'`)), now.seq);
  }
});

test('R3. resuming a pruned job with since: a snapshot equal to the committed state, in memory and after a restart', { timeout: 120_000 }, async () => {
  assert.equal(done.length, 2, 'R2 ran');
  const token = server.mint(ended.get(done[0]).job.user_id);

  // In memory: since 1 is older than the ring, the journal no longer lines up: snapshot.
  const a = await Client.open(server, token, { label: 'A' });
  const first = await a.subscribe(done[0], { since: 1 });
  assert.equal(first.type, 'snapshot', `a snapshot, not a replay: ${JSON.stringify(first).slice(0, 200)}`);
  assert.equal(first.seq, ended.get(done[0]).seq);
  assert.deepEqual(diffState(a.view(done[0]), ended.get(done[0])), []);
  // Within the ring the memory still replays: the deltas after since, no snapshot.
  const b = await Client.open(server, token, { label: 'B' });
  const since = ended.get(done[0]).seq - 5;
  const replay = await b.subscribe(done[0], { since });
  assert.equal(replay.type, 'delta');
  assert.equal(replay.seq, since + 1);
  await b.waitSeq(done[0], ended.get(done[0]).seq);
  await a.closeAndWait();
  await b.closeAndWait();

  // After a restart the job is not in memory: the snapshot comes from its rows.
  const port = server.port;
  const stop = await server.stop();
  assert.equal(stop.code, 0, `jobwire exits 0 on SIGTERM (${JSON.stringify(stop)})`);
  await server.start({ port });
  const c = await Client.open(server, token, { label: 'C' });
  const again = await c.subscribe(done[1], { since: 1 });
  assert.equal(again.type, 'snapshot');
  assert.equal(again.seq, ended.get(done[1]).seq);
  assert.deepEqual(diffState(c.view(done[1]), ended.get(done[1])), []);
  // GET now reads the rows from PostgreSQL (timestamps spelled +00:00, not Z): compare states.
  assert.deepEqual(diffState(await server.getJob(done[1], token), ended.get(done[1])), []);
  // The running job was recovered with its journal whole.
  const r = await server.getJob(running);
  assert.equal(eventsOf(running), r.seq);
  await c.closeAndWait();
});
