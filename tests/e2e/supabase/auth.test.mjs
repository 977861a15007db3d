// Who may watch what on /realtime/v1/websocket, through @supabase/supabase-js: foreign
// and unknown jobs are one CHANNEL_ERROR, the apikey alone sees nothing private, the
// admin key sees everything, a token's expiry closes the channel (an apikey's token's
// too), a refreshed token keeps it, another user's token closes it. A join made before
// the app's accessToken callback answered is SUBSCRIBED and starts delivering when the
// token comes (or, when the callback answered before the join's reply, is told to join
// again, and does so with the token). A connection without a valid token is closed at --ws-auth-timeout.
// Finished jobs (from PostgreSQL after a restart) are checked the same way.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, sleep } from '../lib/index.mjs';
import { RawPhx, subscribe, supabase, until } from './lib.mjs';

const server = new Server({ name: 'sb_auth' });
// The auth deadline, short: 2 s instead of 10.
const strict = new Server({ name: 'sb_auth_deadline', args: ['--ws-auth-timeout', '2'] });
const clients = [];
const raws = [];
let alice;
let bob;
let aliceJob;

before(async () => {
  await Promise.all([server.start(), strict.start()]);
  alice = server.user();
  bob = server.user();
  aliceJob = (await server.createJob(alice.token, { count: 1 })).job_id;
  await server.waitPaused(aliceJob);
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  for (const r of raws) r.close();
  await Promise.all([server.stop(), strict.stop()]);
});

async function raw(srv, opts) {
  const r = await RawPhx.connect(srv, opts);
  assert.ok(r.client, `connected: ${JSON.stringify(r)}`);
  raws.push(r.client);
  return r.client;
}

// A phx_join of topic with postgres_changes on job_runs of jobId, as supabase-js sends it;
// token undefined: no access_token (a join made before the app's token was known).
function rawJoin(c, topic, jobId, { token, joinRef, initial = false } = {}) {
  const binding = { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}`, ...(initial ? { jobwire_initial_rows: true } : {}) };
  const payload = { config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, postgres_changes: [binding], private: false } };
  if (token !== undefined) payload.access_token = token;
  return c.send(topic, 'phx_join', payload, { joinRef, ref: joinRef });
}

// Moves a paused job on by one OTP (over HTTP) and waits until it is paused again, on
// another OTP: its changes have then all been published.
async function answerOneOtp(jobId, token) {
  const j = await server.getJob(jobId);
  const otp = j.otp_requests.find((o) => o.status === 'requested');
  assert.ok(otp, `job ${jobId} waits for an OTP`);
  const code = await server.waitCode(otp.id);
  const r = await server.api('POST', `/api/otp/${otp.id}`, { token, body: { otp: code.code } });
  assert.equal(r.status, 200);
  await server.waitPaused(jobId, { otpPred: (o) => o.id !== otp.id });
}

const changesOf = (c, topic) => c.on(topic).filter((m) => m.event === 'postgres_changes');

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
  // Signed out, supabase-js joins with the apikey as its access_token: SUBSCRIBED (as
  // Supabase answers), and nothing is delivered, pinned to a job or not.
  const anon = await client(null);
  const pinned = jobRunsChannel(anon, 'anon', aliceJob);
  assert.equal((await subscribe(pinned)).status, 'SUBSCRIBED');
  const anonAll = anon.channel('anon-all');
  const anonSeen = [];
  anonAll.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs' }, (p) => anonSeen.push(p));
  assert.equal((await subscribe(anonAll)).status, 'SUBSCRIBED');

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
  // The change is published; anything queued for the signed-out socket has arrived once
  // a heartbeat sent now is answered.
  await anon.recorder.roundTrip();
  assert.equal(anonSeen.length + pinned.got.length, 0, 'the signed-out channels got nothing');
  assert.ok(!anon.recorder.received().some((m) => m.event === 'postgres_changes'));
  await admin.removeAllChannels();
  await anon.removeAllChannels();
});

test("a join made before the app's accessToken callback answered: SUBSCRIBED once, then the user's changes", async () => {
  // An app with supabase-js's third-party auth (accessToken: async () => jwt) subscribes at
  // once; its token source answers late. Here it answers only once the join has been
  // answered (the gate), the case realtime-js covers by sending the token in an
  // access_token message: the first join leaves without one.
  const job = (await server.createJob(alice.token, { count: 1 })).job_id;
  const paused = await server.waitPaused(job);
  let open;
  const gate = new Promise((resolve) => (open = resolve));
  const sb = supabase(server, async () => {
    await gate;
    return alice.token;
  });
  clients.push(sb);
  const rows = [];
  const ch = sb.channel('late-token');
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${job}`, jobwire_initial_rows: true }, (p) =>
    rows.push(p.new),
  );
  const first = subscribe(ch);
  assert.equal((await first).status, 'SUBSCRIBED');
  open();

  // The token reaches the server, the job's current row follows (the join asked for it),
  // then its changes.
  await until(() => rows.length >= 1, { what: 'the initial row after the token' });
  assert.deepStrictEqual(rows[0], paused.job);
  await server.driveHttp(job, alice.token, (j) => j.job.status === 'completed', { timeout: 60_000 });
  await until(() => rows.some((r) => r.status === 'completed'), { what: "the user's job completed on the channel" });
  assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED'], 'SUBSCRIBED once, no CHANNEL_ERROR');

  const frames = sb.recorder.frames.map((f) => ({ dir: f.dir, m: JSON.parse(f.text) }));
  const joins = frames.filter((f) => f.dir === 'out' && f.m[3] === 'phx_join');
  assert.equal(joins.length, 1, 'one join');
  assert.ok(!('access_token' in joins[0].m[4]), 'the join left without a token');
  const tokenAt = frames.findIndex((f) => f.dir === 'out' && f.m[3] === 'access_token');
  assert.ok(tokenAt > 0, 'supabase-js sent the token in an access_token message');
  assert.ok(!frames.slice(0, tokenAt).some((f) => f.m[3] === 'postgres_changes'), 'nothing before the token');
  assert.equal(sb.recorder.sockets.length, 1, 'the same connection');
});

test('an accessToken callback that answers before the join was answered: joined again with the token, on the same connection', async () => {
  // supabase-js buffers its phx_join before the callback answers; answered at once, the
  // token is then in the channel's next join and never in an access_token message. The
  // server tells the channel to join again (phx_error) a second after a join without one:
  // SUBSCRIBED, CHANNEL_ERROR, SUBSCRIBED - not a 10 s wait for the auth deadline's close.
  const job = (await server.createJob(alice.token, { count: 1 })).job_id;
  const paused = await server.waitPaused(job);
  const sb = supabase(server, async () => alice.token);
  clients.push(sb);
  const rows = [];
  const ch = sb.channel('prompt-token');
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${job}`, jobwire_initial_rows: true }, (p) =>
    rows.push(p.new),
  );
  subscribe(ch);
  await until(() => rows.length >= 1, { what: 'the initial row, from the join that carried the token', timeout: 8000 });
  assert.deepStrictEqual(rows[0], paused.job);
  const statuses = ch.statuses.map((x) => x.status);
  assert.deepEqual(statuses, ['SUBSCRIBED', 'CHANNEL_ERROR', 'SUBSCRIBED'], statuses.join(','));
  const frames = sb.recorder.frames.map((f) => ({ dir: f.dir, m: JSON.parse(f.text) }));
  const joins = frames.filter((f) => f.dir === 'out' && f.m[3] === 'phx_join');
  assert.equal(joins.length, 2, 'joined twice');
  assert.ok(!('access_token' in joins[0].m[4]) && joins[1].m[4].access_token, 'the second join carried the token');
  assert.equal(sb.recorder.sockets.length, 1, 'the same connection: no close at the auth deadline');
  await server.driveHttp(job, alice.token, (j) => j.job.status === 'completed', { timeout: 60_000 });
  await until(() => rows.some((r) => r.status === 'completed'), { what: "the user's job completed on the channel" });
});

test("a join without a user sees nothing until a token; the token's user's jobs only", async () => {
  const job = (await server.createJob(alice.token, { count: 2 })).job_id;
  await server.waitPaused(job);
  const c = await raw(server);
  assert.equal((await c.reply(rawJoin(c, 'realtime:waiting', job, { joinRef: '1', initial: true }))).payload.status, 'ok');
  // A signed-out refresh (the apikey) changes nothing: still joined, still nothing.
  c.send('realtime:waiting', 'access_token', { access_token: 'anon-key-not-a-secret' }, { joinRef: '1' });
  // A witness on the same connection, joined with alice's token: when it has a change,
  // the waiting channel would have had it too.
  assert.equal((await c.reply(rawJoin(c, 'realtime:witness', job, { token: alice.token, joinRef: '2' }))).payload.status, 'ok');
  await answerOneOtp(job, alice.token);
  await c.waitFor((m) => m.topic === 'realtime:witness' && m.event === 'postgres_changes', { what: 'a change on the witness' });
  await c.roundTrip();
  assert.deepEqual(c.on('realtime:waiting').map((m) => m.event), ['phx_reply', 'system'], 'joined, and nothing since');

  // Alice's token: the current row (jobwire_initial_rows), then every change, as the
  // witness gets them (the job is paused: nothing changes while the token goes in).
  c.send('realtime:waiting', 'access_token', { access_token: alice.token }, { joinRef: '1' });
  const initial = await c.waitFor((m) => m.topic === 'realtime:waiting' && m.event === 'postgres_changes', { what: 'the initial row' });
  assert.equal(initial.payload.data.type, 'INSERT');
  assert.deepStrictEqual(initial.payload.data.record, (await server.getJob(job)).job);
  const witnessed = changesOf(c, 'realtime:witness').length;
  const done = await server.driveHttp(job, alice.token, (j) => j.job.status === 'completed', { timeout: 60_000 });
  await until(() => changesOf(c, 'realtime:witness').some((m) => m.payload.data.record.status === 'completed'), { what: 'the end on the witness' });
  await c.roundTrip();
  const after = changesOf(c, 'realtime:waiting').slice(1).map((m) => m.payload.data.record);
  assert.ok(after.length >= 1, `changes after the token (${after.length})`);
  assert.deepStrictEqual(after, changesOf(c, 'realtime:witness').slice(witnessed).map((m) => m.payload.data.record), 'after the token, what a join with it gets');
  assert.deepStrictEqual(after.at(-1), done.job);

  // Another user's token, or one naming an unknown job: what a join with that token gets
  // (the same reason for both), and the channel ends without a row.
  const foreign = (await c.reply(rawJoin(c, 'realtime:foreign', aliceJob, { joinRef: '3', initial: true }))).payload;
  assert.equal(foreign.status, 'ok');
  const unknownId = crypto.randomUUID();
  assert.equal((await c.reply(rawJoin(c, 'realtime:unknown', unknownId, { joinRef: '4', initial: true }))).payload.status, 'ok');
  const refusedJoin = (await c.reply(rawJoin(c, 'realtime:as-bob', aliceJob, { token: bob.token, joinRef: '5' }))).payload;
  assert.equal(refusedJoin.status, 'error');
  c.send('realtime:foreign', 'access_token', { access_token: bob.token }, { joinRef: '3' });
  c.send('realtime:unknown', 'access_token', { access_token: bob.token }, { joinRef: '4' });
  for (const topic of ['realtime:foreign', 'realtime:unknown']) {
    await c.waitFor((m) => m.topic === topic && m.event === 'phx_close', { what: `${topic} closed` });
  }
  const reason = (topic) => c.on(topic).find((m) => m.event === 'system' && m.payload.status === 'error').payload.message;
  assert.equal(reason('realtime:foreign'), refusedJoin.response.reason, 'the reason a join with that token gets');
  assert.equal(reason('realtime:foreign').replace(aliceJob, 'ID'), reason('realtime:unknown').replace(unknownId, 'ID'), 'no way to tell them apart');
  assert.equal(changesOf(c, 'realtime:foreign').length + changesOf(c, 'realtime:unknown').length, 0);

  // An invalid token closes a waiting channel, as it closes a joined one.
  assert.equal((await c.reply(rawJoin(c, 'realtime:forged', aliceJob, { joinRef: '6' }))).payload.status, 'ok');
  c.send('realtime:forged', 'access_token', { access_token: server.mint(alice.id, 3600, 'another-secret-0123456789abcdef') }, { joinRef: '6' });
  const closed = await c.waitFor((m) => m.topic === 'realtime:forged' && m.event === 'system' && m.payload.status === 'error', { what: 'the forged token refused' });
  assert.match(closed.payload.message, /invalid access_token/i);
  assert.equal(changesOf(c, 'realtime:forged').length, 0);
  assert.equal(c.closed, null);
});

test("another user's token closes a channel that names no job, before it sees their jobs", async () => {
  const c = await raw(server);
  const binding = { event: '*', schema: 'public', table: 'job_runs' };
  const payload = { config: { postgres_changes: [binding] }, access_token: alice.token };
  assert.equal((await c.reply(c.send('realtime:all-mine', 'phx_join', payload, { joinRef: '1', ref: '1' }))).payload.status, 'ok');
  c.send('realtime:all-mine', 'access_token', { access_token: bob.token }, { joinRef: '1' });
  const refused = await c.waitFor((m) => m.topic === 'realtime:all-mine' && m.event === 'system' && m.payload.status === 'error', { what: "bob's token refused" });
  assert.match(refused.payload.message, /another user's/);
  await c.waitFor((m) => m.topic === 'realtime:all-mine' && m.event === 'phx_close', { what: 'the channel closed' });
  // Bob's new job: nothing of it reaches the closed channel.
  const bobJob = (await server.createJob(bob.token, { count: 1 })).job_id;
  await server.waitPaused(bobJob);
  await c.roundTrip();
  assert.equal(changesOf(c, 'realtime:all-mine').length, 0, 'no change of bob\'s job');
  // Alice's own refreshed token keeps such a channel (the same user).
  assert.equal((await c.reply(c.send('realtime:still-mine', 'phx_join', payload, { joinRef: '2', ref: '2' }))).payload.status, 'ok');
  c.send('realtime:still-mine', 'access_token', { access_token: server.mint(alice.id, 7200) }, { joinRef: '2' });
  await c.roundTrip();
  assert.ok(!c.on('realtime:still-mine').some((m) => m.event === 'phx_close' || m.event === 'system' && m.payload.status === 'error'), 'still joined');
  assert.equal(c.closed, null);
});

test("an apikey that is a user's token runs out like an access_token", async () => {
  const job = (await server.createJob(alice.token, { count: 1 })).job_id;
  await server.waitPaused(job);
  // Expired 25 s ago: inside the server's 30 s leeway, so accepted for about 5 s more.
  const apikey = server.mint(alice.id, -25);
  const c = await raw(server, { apikey });
  const before = await c.reply(rawJoin(c, 'realtime:before', job, { joinRef: '1', initial: true }));
  assert.equal(before.payload.status, 'ok', 'the apikey stands for alice while it is valid');
  await c.waitFor((m) => m.topic === 'realtime:before' && m.event === 'postgres_changes', { what: 'the initial row' });
  const expired = await c.waitFor((m) => m.topic === 'realtime:before' && m.event === 'system' && m.payload.status === 'error', {
    timeout: 30_000,
    what: "the apikey's expiry",
  });
  assert.match(expired.payload.message, /expired/);
  await c.waitFor((m) => m.topic === 'realtime:before' && m.event === 'phx_close');

  // From now on it stands for nobody: a join on it (no access_token, or the apikey sent as
  // the access_token, as supabase-js does when signed out) is refused, and gets no row.
  const none = await c.reply(rawJoin(c, 'realtime:after', job, { joinRef: '2', initial: true }));
  assert.equal(none.payload.status, 'error');
  assert.match(none.payload.response.reason, /expired/);
  const same = await c.reply(rawJoin(c, 'realtime:after-key', job, { token: apikey, joinRef: '3', initial: true }));
  assert.equal(same.payload.status, 'error');
  assert.match(same.payload.response.reason, /expired/);
  await c.roundTrip();
  assert.equal(changesOf(c, 'realtime:after').length + changesOf(c, 'realtime:after-key').length, 0, 'no row for an expired token');
});

test('--ws-auth-timeout: a connection without a valid token is closed, heartbeats or not', async () => {
  const u = strict.user();
  const job = (await strict.createJob(u.token, { count: 1 })).job_id;
  // First the connections that must stay: their deadlines pass before the others'.
  const keyIsToken = await raw(strict, { apikey: u.token });
  const keyIsAdmin = await raw(strict, { apikey: strict.adminKey });
  const joinedWithToken = await raw(strict);
  assert.equal((await joinedWithToken.reply(rawJoin(joinedWithToken, 'realtime:a', job, { token: u.token, joinRef: '1' }))).payload.status, 'ok');
  const tokenLater = await raw(strict);
  assert.equal((await tokenLater.reply(rawJoin(tokenLater, 'realtime:b', job, { joinRef: '1' }))).payload.status, 'ok');
  tokenLater.send('realtime:b', 'access_token', { access_token: u.token }, { joinRef: '1' });
  await tokenLater.roundTrip();

  // Then those that must go: a made-up apikey and only heartbeats, a join without a user,
  // a join with an invalid token.
  const idle = await raw(strict);
  const waiting = await raw(strict);
  assert.equal((await waiting.reply(rawJoin(waiting, 'realtime:c', job, { joinRef: '1' }))).payload.status, 'ok');
  const forged = await raw(strict);
  assert.equal((await forged.reply(rawJoin(forged, 'realtime:d', job, { token: 'not-a-token', joinRef: '1' }))).payload.status, 'error');
  const beating = [idle, waiting, forged];
  let answered = 0;
  const beat = async () => {
    while (beating.some((c) => !c.closed)) {
      for (const c of beating) {
        if (c.closed) continue;
        try {
          await c.roundTrip({ timeout: 5_000 });
          answered++;
        } catch {
          /* closed meanwhile */
        }
      }
      await sleep(100);
    }
  };
  const beats = beat();
  for (const c of beating) {
    const closed = await c.waitClosed({ timeout: 30_000 });
    assert.deepEqual(closed, { code: 4408, reason: 'no valid access_token in time' });
  }
  await beats;
  assert.ok(answered >= 3, `heartbeats were answered until the deadline (${answered})`);

  for (const c of [keyIsToken, keyIsAdmin, joinedWithToken, tokenLater]) {
    await c.roundTrip();
    assert.equal(c.closed, null);
  }
  // An empty apikey is no apikey: refused at the upgrade.
  const empty = await RawPhx.connect(strict, { apikey: '' });
  assert.ok(!empty.client, `an empty apikey: ${JSON.stringify(empty)}`);
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
  // Expired 27 s ago: still inside the server's 30 s leeway, so it is accepted, and runs
  // out at least a second before chA's (minted after it, expired 26 s ago) does.
  let current = server.mint(alice.id, -27);
  // Expired 26 s ago: accepted, and runs out about 4 s after the join.
  const dying = server.mint(alice.id, -26);
  const expiring = await client(dying);
  const chA = jobRunsChannel(expiring, 'expiring', aliceJob);
  assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');

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

  // chB's first token ran out before chA's: had the refresh not counted, its channel's
  // close would have been sent a second before chA's, and would be here once a heartbeat
  // sent now is answered.
  await sb.recorder.roundTrip();
  assert.ok(!chB.statuses.some((s) => s.status !== 'SUBSCRIBED'), JSON.stringify(chB.statuses));
  assert.ok(!sb.recorder.received().some((m) => m.event === 'phx_close' || (m.event === 'system' && m.payload.status === 'error')));
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
