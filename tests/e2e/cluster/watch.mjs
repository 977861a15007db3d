// watch.mjs - clients of every node watching the jobs of a cluster test (issue 14, "Prove
// it": WebSocket clients on every node watching jobs owned elsewhere; every client's seqs
// contiguous, no duplicate):
//   - jobwire.v1: on each live node a Client (admin key) subscribed to the given jobs that
//     other nodes drive; its JobView per job flags any gap, duplicate or seq going back;
//   - supabase-js: on each live node one client per user with one channel of all the
//     user's changes (job_runs, job_steps, otp_requests; no filter), joined before the jobs
//     exist, so each job must arrive whole: seq 1..last_seq, once each, in order.
// A node that goes (killed, paused, stopped) takes its clients' connections with it: what
// they received until then is checked for order only; the clients of the nodes that stayed
// up must also reach each job's last committed seq.

import assert from 'node:assert/strict';
import { Client, assertCleanStream } from './lib.mjs';
import { subscribe, supabase, until } from '../supabase/lib.mjs';

const TABLES = ['job_runs', 'job_steps', 'otp_requests'];

// Every client opened here and not yet closed: closeWatchers() ends them, so a failing
// test does not keep its sockets (and node's test runner) open.
const open = new Set();

async function closeSupabase(sb) {
  open.delete(sb);
  try {
    await sb.removeAllChannels();
  } catch {
    /* the node is gone */
  }
  sb.realtime.disconnect();
}

async function closeV1(client) {
  open.delete(client);
  await client.closeAndWait().catch(() => {});
}

export async function closeWatchers() {
  await Promise.all([...open].map((c) => (c.realtime ? closeSupabase(c) : closeV1(c))));
}

// supabase-js clients, one per (live node, user), joined before the jobs are created.
export async function watchUsers(cluster, users) {
  const out = [];
  for (const node of cluster.live()) {
    for (const u of users) {
      const sb = supabase(node, u.token);
      open.add(sb);
      await sb.realtime.setAuth();
      const ch = sb.channel(`cluster-${u.id}`);
      for (const table of TABLES) ch.on('postgres_changes', { event: '*', schema: 'public', table }, () => {});
      assert.deepEqual(await subscribe(ch), { status: 'SUBSCRIBED', message: null }, `supabase-js on ${node.name} joins`);
      out.push({ node, user: u, sb });
    }
  }
  return out;
}

// jobwire.v1 clients on every live node but `except`, subscribed to the jobs ([{id, node}])
// other nodes drive.
// All at once: the subscriptions must not hold the scenario up.
export function watchJobs(cluster, jobs, except = null) {
  return Promise.all(cluster.live().filter((n) => n !== except).map(async (node) => {
    const mine = jobs.filter((j) => j.node !== node).map((j) => j.id);
    const client = await Client.open(node, node.adminKey, { label: `v1@${node.name}` });
    open.add(client);
    await Promise.all(mine.map(async (id) => {
      const first = await client.subscribe(id);
      assert.equal(first.type, 'snapshot', `${client.label}: ${id} answered ${first.type}`);
    }));
    return { node, client, jobs: mine };
  }));
}

// The seqs each job's changes carried on one supabase-js client, in arrival order.
function seqsByJob(sb) {
  const by = new Map();
  for (const m of sb.recorder.received()) {
    if (m.event !== 'postgres_changes') continue;
    const d = m.payload.data;
    const job = d.table === 'job_runs' ? d.record.id : d.record.job_run_id;
    if (!by.has(job)) by.set(job, []);
    by.get(job).push(d.seq);
  }
  return by;
}

const range = (lo, hi) => Array.from({ length: Math.max(0, hi - lo + 1) }, (_, k) => lo + k);

// After every job in `jobs` ([{id, node, user}]) finished: checks the watchers. `gone`:
// nodes that went during the phase (their clients are checked for order only).
export async function checkWatchers(cluster, { v1 = [], sb = [] }, jobs, gone = []) {
  const last = new Map(cluster.rows(`SELECT id, last_seq FROM job_runs WHERE id = ANY('{${jobs.map((j) => j.id).join(',')}}'::uuid[])`)
    .map((r) => [r.id, Number(r.last_seq)]));
  for (const w of v1) {
    const up = !gone.includes(w.node);
    if (up) {
      for (const id of w.jobs) {
        await w.client.waitSeq(id, last.get(id), { timeout: 30_000 });
      }
    }
    assertCleanStream(w.client);
    for (const id of w.jobs) {
      const msgs = w.client.jobMessages(id);
      const deltas = msgs.filter((m) => m.type === 'delta').map((m) => m.seq);
      assert.equal(new Set(deltas).size, deltas.length, `${w.client.label} ${id}: no delta twice`);
    }
    await closeV1(w.client);
  }
  for (const w of sb) {
    const mine = jobs.filter((j) => j.user === w.user).map((j) => j.id);
    if (gone.includes(w.node)) {
      // What arrived before the node went: in order, each once (a rejoin may start later).
      for (const [job, seqs] of seqsByJob(w.sb)) {
        for (let i = 1; i < seqs.length; i++) {
          assert.ok(seqs[i] > seqs[i - 1], `supabase-js@${w.node.name} ${job}: seqs go up (${seqs.slice(0, i + 1).join(',')})`);
        }
      }
    } else {
      await until(() => mine.every((id) => (seqsByJob(w.sb).get(id) || []).length >= last.get(id)),
        { timeout: 30_000, what: `supabase-js@${w.node.name}: every change of ${mine.length} jobs` });
      await w.sb.recorder.roundTrip();
      const by = seqsByJob(w.sb);
      for (const id of mine) {
        assert.deepEqual(by.get(id), range(1, last.get(id)), `supabase-js@${w.node.name} ${id}: seq 1..${last.get(id)}, once each, in order`);
      }
    }
    await closeSupabase(w.sb);
  }
}
