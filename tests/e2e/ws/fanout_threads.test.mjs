// Publish rounds written by jobwire itself and shared with its fan-out helper threads
// (docs/operations.md, "Fan-out threads"; server/fanout.c, wsconn.c's direct writes):
//   1. a client message's reply is written straight to the socket, not after a WRITEABLE
//      callback (jobwire_fanout_direct_writes_total counts it), and answers in order;
//      the default (auto) is one helper fewer than the CPUs the server may run on, at most 8;
//   2. with one helper, 24 watchers of a job (rounds of 24 writes, past the 16 from which a
//      round is shared) each get the whole stream, identical, in order, and the rounds were
//      shared (jobwire_fanout_parallel_rounds_total);
//   3. with --fanout-threads 0 the same holds and no round was shared.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, test } from 'node:test';
import { Client, Server, assertCleanStream, diffState, settle } from '../lib/index.mjs';

const WATCHERS = 24;
const servers = [];

after(async () => {
  for (const s of servers) await s.stop();
});

// The CPUs process pid may run on, as sched_getaffinity counts them ("0-3,6": 5).
function allowedCpus(pid) {
  const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1];
  let n = 0;
  for (const part of list.split(',')) {
    const [a, b = a] = part.split('-').map(Number);
    n += b - a + 1;
  }
  return n;
}

async function start(name, args = []) {
  const s = new Server({ name, sim: 'latency_ms=5,otp=none,voucher_polls=1,poll_after_ms=5', args });
  servers.push(s);
  await s.start();
  return s;
}

// WATCHERS clients of one user follow one job of 3 transactions from its creation to its end;
// every client's stream is whole, in order, and the same as every other's.
async function crowd(server) {
  const u = server.user();
  const clients = await Promise.all(Array.from({ length: WATCHERS }, (_, i) => Client.open(server, u.token, { label: `w${i}` })));
  const created = await server.createJob(u.token, { count: 3 });
  const id = created.job_id;
  const firsts = await Promise.all(clients.map((c) => c.subscribe(id)));
  for (const f of firsts) assert.equal(f.type, 'snapshot');
  const committed = await settle(server, clients[0], id, { timeout: 60_000 });
  assert.equal(committed.job.status, 'completed');
  const streams = [];
  for (const [i, c] of clients.entries()) {
    await settle(server, c, id, { timeout: 30_000 });
    assertCleanStream(c);
    const deltas = c.jobMessages(id).slice(1);
    const first = firsts[i].seq;
    assert.deepEqual(deltas.map((m) => m.seq), Array.from({ length: committed.seq - first }, (_, k) => first + 1 + k),
      `${c.label}: deltas ${first + 1}..${committed.seq}, each once, in order`);
    assert.deepEqual(diffState(c.view(id), committed), [], `${c.label}: snapshot + deltas = GET /api/jobs/{id}`);
    streams.push(new Map(deltas.map((m) => [m.seq, JSON.stringify(m)])));
  }
  // Every seq any two clients both saw is the same message, byte for byte.
  for (const s of streams.slice(1)) {
    for (const [seq, text] of s) if (streams[0].has(seq)) assert.equal(text, streams[0].get(seq), `delta ${seq} is the same for every watcher`);
  }
  for (const c of clients) c.close();
  return committed.seq;
}

test('1. a reply leaves straight from the RECEIVE callback, in order', { timeout: 60_000 }, async () => {
  const server = await start('fanout_replies');
  const cpus = allowedCpus(server.pid);
  assert.equal(await server.metric('jobwire_fanout_threads'), Math.min(Math.max(cpus - 1, 0), 8),
    `auto: one helper fewer than the ${cpus} CPUs the server may run on, at most 8`);
  const c = await Client.open(server, server.user().token, { label: 'pinger' });
  const before = await server.metric('jobwire_fanout_direct_writes_total');
  for (let i = 0; i < 10; i++) await c.ping();
  const after = await server.metric('jobwire_fanout_direct_writes_total');
  assert.ok(after - before >= 10, `each pong was a direct write (${after - before} for 10 pings)`);
  assertCleanStream(c);
  c.close();
});

test(`2. ${WATCHERS} watchers, one helper: rounds shared, every stream whole and identical`, { timeout: 120_000 }, async () => {
  const server = await start('fanout_one', ['--fanout-threads', '1']);
  const before = await server.metric('jobwire_fanout_parallel_rounds_total');
  await crowd(server);
  const shared = (await server.metric('jobwire_fanout_parallel_rounds_total')) - before;
  assert.ok(shared > 0, `publish rounds to ${WATCHERS} sockets were shared with the helper (${shared})`);
});

test(`3. --fanout-threads 0: the loop thread writes alone, every stream whole and identical`, { timeout: 120_000 }, async () => {
  const server = await start('fanout_none', ['--fanout-threads', '0']);
  assert.equal(await server.metric('jobwire_fanout_threads'), 0);
  await crowd(server);
  assert.equal(await server.metric('jobwire_fanout_parallel_rounds_total'), 0, 'no round was shared');
  assert.ok((await server.metric('jobwire_fanout_direct_writes_total')) > 0, 'rounds still write directly');
});
