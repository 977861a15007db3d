// Publish rounds written by jobwire itself and shared with its fan-out helper threads
// (docs/operations.md, "Fan-out threads"; server/fanout.c, wsconn.c's direct writes):
//   1. a client message's reply is written straight to the socket, not after a WRITEABLE
//      callback (jobwire_fanout_direct_writes_total counts it), and answers in order;
//      the default (auto) is one helper fewer than the CPUs the server may run on (its
//      affinity, or fewer under a cgroup CPU quota), at most 8;
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

// The whole CPUs a cgroup CPU quota gives process pid (0: none): the lowest quota of its
// cgroup and each parent, v2 (cpu.max under /sys/fs/cgroup or its unified/) or v1
// (cpu.cfs_quota_us / cpu.cfs_period_us under cpu/ or cpu,cpuacct/), to the nearest CPU.
function quotaCpus(pid) {
  const read = (f) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch { return null; } };
  let low = 0;
  const consider = (q, p) => {
    if (!(q > 0 && p > 0)) return;
    const n = Math.max(1, Math.floor((q + Math.floor(p / 2)) / p));
    if (!low || n < low) low = n;
  };
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line);
    if (!m) continue;
    const v2 = m[1] === '0' && m[2] === '';
    if (!v2 && !m[2].split(',').includes('cpu')) continue;
    const mounts = v2 ? ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'] : ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct', '/sys/fs/cgroup/cpuacct,cpu'];
    for (const mount of mounts) {
      for (let dir = m[3] === '/' ? '' : m[3]; ; dir = dir.slice(0, dir.lastIndexOf('/'))) {
        if (v2) {
          const [q, p] = (read(`${mount}${dir}/cpu.max`) ?? '').split(' ');
          consider(Number(q), Number(p));
        } else {
          consider(Number(read(`${mount}${dir}/cpu.cfs_quota_us`)), Number(read(`${mount}${dir}/cpu.cfs_period_us`)));
        }
        if (!dir) break;
      }
    }
  }
  return low;
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
  const quota = quotaCpus(server.pid);
  const cpus = quota > 0 ? Math.min(allowedCpus(server.pid), quota) : allowedCpus(server.pid);
  assert.equal(await server.metric('jobwire_fanout_threads'), Math.min(Math.max(cpus - 1, 0), 8),
    `auto: one helper fewer than the ${cpus} CPUs the server may use (affinity, CPU quota ${quota || 'none'}), at most 8`);
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
