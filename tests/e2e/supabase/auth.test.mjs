// Who may watch what on /realtime/v1/websocket, through @supabase/supabase-js: foreign
// and unknown jobs are one CHANNEL_ERROR, the apikey alone sees nothing private, the
// admin key sees everything, a token's expiry closes the channel, a refreshed token
// keeps it, another user's token closes it. Finished jobs (from PostgreSQL after a
// restart) are checked the same way.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, sleep } from '../ws/lib.mjs';
import { subscribe, supabase, until } from './lib.mjs';

const server = new Server({ name: 'sb_auth' });
const clients = [];
let alice;
let bob;
let aliceJob;

before(async () => {
  await server.start();
  alice = server.user();
  bob = server.user();
  aliceJob = (await server.createJob(alice.token, { count: 1 })).job_id;
  await server.waitPaused(aliceJob);
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server.stop();
});

async function client(token, opts = {}) {
  const sb = supabase(server, token, opts);
  clients.push(sb);
  if (token) await sb.realtime.setAuth();
  return sb;
}

function jobRunsChannel(sb, name, jobId) {
  const got = [];
  const ch = sb.channel(name);
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` }, (p) => got.push(p));
  ch.got = got;
  return ch;
}

test("another user's job and an unknown job get the same CHANNEL_ERROR", async () => {
  const sb = await client(bob.token);
  const foreign = await subscribe(jobRunsChannel(sb, 'foreign', aliceJob));
  const unknownId = crypto.randomUUID();
  const unknown = await subscribe(jobRunsChannel(sb, 'unknown', unknownId));
  assert.equal(foreign.status, 'CHANNEL_ERROR');
  assert.equal(unknown.status, 'CHANNEL_ERROR');
  assert.match(foreign.message, /not yours/);
  assert.equal(foreign.message.replace(aliceJob, 'ID'), unknown.message.replace(unknownId, 'ID'), 'no way to tell them apart');
  // An in list is refused as a whole when one of its jobs is foreign.
  const bobJob = (await server.createJob(bob.token, { count: 1 })).job_id;
  const ch = sb.channel('mixed');
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_steps', filter: `job_run_id=in.(${bobJob},${aliceJob})` }, () => {});
  assert.equal((await subscribe(ch)).status, 'CHANNEL_ERROR');
  for (const c of sb.getChannels()) await sb.removeChannel(c);
});

test('the apikey alone (signed out) sees nothing private; the admin key sees every job', async () => {
  const anon = await client(null);
  const r = await subscribe(jobRunsChannel(anon, 'anon', aliceJob));
  assert.equal(r.status, 'CHANNEL_ERROR');
  assert.match(r.message, /signed-in user/);
  await anon.removeAllChannels();

  const admin = await client(server.adminKey, { apikey: server.adminKey });
  const ch = jobRunsChannel(admin, 'admin', aliceJob);
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  // Unpinned: every job's changes (the admin may see them all).
  const all = admin.channel('admin-all');
  const seen = new Set();
  all.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs' }, (p) => seen.add(p.new.id));
  assert.equal((await subscribe(all)).status, 'SUBSCRIBED');
  const other = (await server.createJob(bob.token, { count: 1 })).job_id;
  await until(() => seen.has(other), { what: "the admin sees bob's new job" });
  await admin.removeAllChannels();
});

test('a user without a job filter sees their own jobs only', async () => {
  const sb = await client(bob.token);
  const seen = [];
  const ch = sb.channel('mine');
  ch.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'job_runs' }, (p) => seen.push(p.new));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  const theirs = (await server.createJob(alice.token, { count: 1 })).job_id;
  const mine = (await server.createJob(bob.token, { count: 1 })).job_id;
  await until(() => seen.some((j) => j.id === mine), { what: "bob's own new job" });
  // alice's job was created first and committed before bob's: had it been delivered,
  // it would be here by now (changes of one connection arrive in commit order).
  await server.waitPaused(theirs);
  const again = (await server.createJob(bob.token, { count: 1 })).job_id;
  await until(() => seen.some((j) => j.id === again), { what: "bob's second job" });
  assert.deepEqual(seen.map((j) => j.user_id), [bob.id, bob.id]);
  assert.ok(!seen.some((j) => j.id === theirs));
  await sb.removeAllChannels();
});

test('an expired access_token is refused at join', async () => {
  const sb = await client(server.mint(alice.id, -120));
  const r = await subscribe(jobRunsChannel(sb, 'expired', aliceJob));
  assert.equal(r.status, 'CHANNEL_ERROR');
  assert.match(r.message, /invalid access_token/);
  await sb.removeAllChannels();
});

test("the token's expiry closes the channel; a refreshed token keeps it open", async () => {
  // Expired 26 s ago: still inside the server's 30 s leeway, so it is accepted and
  // runs out about 4 s after the join.
  const dying = server.mint(alice.id, -26);
  const expiring = await client(dying);
  const chA = jobRunsChannel(expiring, 'expiring', aliceJob);
  assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');

  let current = server.mint(alice.id, -26);
  const sb = supabase(server, null, {});
  clients.push(sb);
  sb.realtime.accessToken = async () => current; // the app's token source, refreshed below
  await sb.realtime.setAuth();
  const chB = jobRunsChannel(sb, 'refreshed', aliceJob);
  assert.equal((await subscribe(chB)).status, 'SUBSCRIBED');
  current = alice.token; // the app refreshed its session
  await sb.realtime.setAuth();

  await until(() => chA.statuses.some((s) => s.status === 'CLOSED'), { timeout: 30_000, what: 'the expired channel closed' });
  const system = expiring.recorder.received().find((m) => m.event === 'system' && m.payload.status === 'error');
  assert.ok(system, 'a system message says why');
  assert.match(system.payload.message, /expired/);
  assert.ok(expiring.recorder.received().some((m) => m.event === 'phx_close' && m.topic === 'realtime:expiring'));

  await sleep(1000); // past the first token's end: the refreshed channel must still be there
  assert.ok(!chB.statuses.some((s) => s.status !== 'SUBSCRIBED'), JSON.stringify(chB.statuses));
  const before = chB.got.length;
  await server.driveHttp(aliceJob, alice.token, (j) => j.job.status === 'completed', { timeout: 60_000 });
  await until(() => chB.got.some((p) => p.new.status === 'completed'), { what: 'the refreshed channel still delivers' });
  assert.ok(chB.got.length > before);
  assert.equal(chA.got.length, 0, 'the closed channel delivered nothing');
});

test("a refresh with another user's token closes the channel", async () => {
  let current = alice.token;
  const sb = supabase(server, null, {});
  clients.push(sb);
  sb.realtime.accessToken = async () => current;
  await sb.realtime.setAuth();
  const ch = jobRunsChannel(sb, 'switch', aliceJob);
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  current = bob.token;
  await sb.realtime.setAuth();
  await until(() => ch.statuses.some((s) => s.status === 'CLOSED'), { what: 'the channel closed' });
  const system = sb.recorder.received().find((m) => m.event === 'system' && m.payload.status === 'error');
  assert.match(system.payload.message, /another user/);
});

test('finished jobs read back from PostgreSQL after a restart are authorized the same way', async () => {
  for (const c of clients.splice(0)) {
    await c.removeAllChannels();
    c.realtime.disconnect();
  }
  await server.stop();
  await server.start({ port: server.port });
  const bobs = await client(bob.token);
  assert.equal((await subscribe(jobRunsChannel(bobs, 'after-restart-foreign', aliceJob))).status, 'CHANNEL_ERROR');
  const alices = await client(alice.token);
  const ch = alices.channel('after-restart-own');
  const rows = [];
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${aliceJob}`, jobwire_initial_rows: true }, (p) =>
    rows.push(p.new),
  );
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  await until(() => rows.length === 1, { what: 'the finished job as an initial row' });
  const committed = await server.getJob(aliceJob);
  assert.equal(rows[0].id, aliceJob);
  assert.equal(rows[0].status, 'completed');
  assert.equal(rows[0].progress_percentage, committed.job.progress_percentage);
});
