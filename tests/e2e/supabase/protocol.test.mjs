// The Phoenix protocol on /realtime/v1/websocket with a bare client: both encodings
// (vsn 2.0.0 arrays, vsn 1.0.0 objects), heartbeats, leave, unknown topics and events,
// refused joins, refused upgrades and bad frames; after each, the server and the other
// connections carry on.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server } from '../lib/index.mjs';
import { RawPhx, until } from './lib.mjs';

const ORIGIN = 'https://app.example';
const server = new Server({
  name: 'sb_protocol',
  args: ['--origins', ORIGIN, '--ws-max-subscriptions', '3', '--ws-max-frame', '4096'],
});
let user;
let jobId;
let bystander; // joined at the start, checked at the end: nobody's bad input reached it
let bystanderFrom; // the index of its first message after the join's reply and system message

before(async () => {
  await server.start();
  user = server.user();
  jobId = (await server.createJob(user.token, { count: 1 })).job_id;
  await server.waitPaused(jobId);
  bystander = await open();
  const ref = join(bystander, 'realtime:bystander', [{ event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` }]);
  assert.equal((await bystander.reply(ref)).payload.status, 'ok');
  await bystander.waitFor((m) => m.event === 'system');
  bystanderFrom = bystander.received.length;
});

after(async () => {
  await server.stop();
});

async function open(opts) {
  const r = await RawPhx.connect(server, opts);
  assert.ok(r.client, `connected: ${JSON.stringify(r)}`);
  return r.client;
}

function join(c, topic, changes, { token = user.token, joinRef = '1' } = {}) {
  const payload = { config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, postgres_changes: changes, private: false } };
  if (token !== undefined) payload.access_token = token;
  return c.send(topic, 'phx_join', payload, { joinRef, ref: joinRef });
}

for (const vsn of ['2.0.0', '1.0.0', null]) {
  test(`vsn ${vsn ?? '(none)'}: join, postgres_changes, heartbeat and leave in ${vsn === '2.0.0' ? 'arrays' : 'objects'}`, async () => {
    const c = await open({ vsn });
    const binding = { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` };
    const ref = join(c, 'realtime:job', [binding, { event: 'UPDATE', schema: 'public', table: 'otp_requests', filter: `job_run_id=eq.${jobId}` }]);
    const reply = await c.reply(ref);
    assert.equal(Array.isArray(reply.raw), vsn === '2.0.0', 'answered in the client encoding');
    assert.equal(reply.joinRef, '1');
    assert.equal(reply.topic, 'realtime:job');
    assert.equal(reply.payload.status, 'ok');
    const [b0, b1] = reply.payload.response.postgres_changes;
    assert.deepEqual({ ...b0, id: 0 }, { ...binding, id: 0 }, 'the binding is echoed as sent');
    assert.ok(Number.isInteger(b0.id) && b0.id > 0 && b1.id > 0 && b0.id !== b1.id, 'ids are distinct positive numbers');
    const system = await c.waitFor((m) => m.event === 'system');
    assert.equal(system.payload.status, 'ok');
    assert.equal(system.payload.channel, 'job');

    const hb = c.send('phoenix', 'heartbeat', {});
    assert.deepEqual((await c.reply(hb)).payload, { status: 'ok', response: {} });

    // A change: the job's OTPs answered over HTTP move it on.
    // Each pass answers one OTP; the next is asked for a step later, so wait for it.
    const j = await server.waitJob(jobId, (x) => x.otp_requests.some((o) => o.status === 'requested'),
      { what: 'an OTP asked for' });
    const otp = j.otp_requests.find((o) => o.status === 'requested');
    const code = await server.waitCode(otp.id);
    const r = await server.api('POST', `/api/otp/${otp.id}`, { token: user.token, body: { otp: code.code } });
    assert.equal(r.status, 200);
    const ev = await c.waitFor((m) => m.event === 'postgres_changes' && m.payload.data.table === 'otp_requests');
    assert.deepEqual(ev.payload.ids, [b1.id], 'only the UPDATE binding of otp_requests matches');
    assert.equal(ev.payload.data.type, 'UPDATE');
    assert.equal(ev.payload.data.record.id, otp.id);
    assert.ok(Array.isArray(ev.payload.data.columns) && ev.payload.data.columns.some((col) => col.name === 'status' && col.type === 'text'));
    assert.equal(ev.topic, 'realtime:job');

    const leave = c.send('realtime:job', 'phx_leave', {}, { joinRef: '1' });
    assert.equal((await c.reply(leave)).payload.status, 'ok');
    await c.waitFor((m) => m.event === 'phx_close' && m.topic === 'realtime:job');
    const after = c.send('realtime:job', 'access_token', { access_token: user.token }, { joinRef: '1' });
    assert.equal((await c.reply(after)).payload.response.reason, 'unmatched topic');
    c.close();
  });
}

test('joins refused with a reason, each on its own channel', async () => {
  const c = await open();
  const cases = [
    [{ event: '*', schema: 'private', table: 'job_runs' }, /schema public only/],
    [{ event: '*', schema: 'public', table: 'users' }, /job_runs, job_steps and otp_requests/],
    [{ event: 'TRUNCATE', schema: 'public', table: 'job_runs' }, /event must be/],
    [{ schema: 'public', table: 'job_runs' }, /needs an event/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 'nope=eq.1' }, /no column "nope"/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 'id=like.abc' }, /unknown filter operator/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 'id=eq.not-a-uuid' }, /must be a UUID/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 'progress_percentage=gt.ten' }, /integer/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 'metadata=eq.{}' }, /jsonb/],
    [{ event: '*', schema: 'public', table: 'job_steps', filter: 'job_run_id=in.()' }, /at least one value/],
    [{ event: '*', schema: 'public', filter: `id=eq.${jobId}` }, /needs a table/],
    [{ event: '*', schema: 'public', table: 'job_runs', filter: 42 }, /filter must be a string/],
    [{ event: '*', schema: 'public', table: 'job_runs', jobwire_initial_rows: 'yes' }, /true or false/],
    ['job_runs', /must be an object/],
  ];
  let n = 0;
  for (const [binding, reason] of cases) {
    const topic = `realtime:bad-${++n}`;
    const ref = join(c, topic, [binding], { joinRef: String(100 + n) });
    const reply = await c.reply(ref);
    assert.equal(reply.payload.status, 'error', `case ${n}`);
    assert.match(reply.payload.response.reason, reason, `case ${n}: ${JSON.stringify(binding)}`);
  }
  // Too many bindings, a bad access_token, a non-array postgres_changes.
  const many = Array.from({ length: 33 }, () => ({ event: '*', schema: 'public', table: 'job_runs' }));
  let reply = await c.reply(join(c, 'realtime:many', many, { joinRef: '200' }));
  assert.match(reply.payload.response.reason, /at most 32/);
  reply = await c.reply(join(c, 'realtime:forged', [], { token: 'eyJhbGciOiJub25lIn0.e30.', joinRef: '201' }));
  assert.match(reply.payload.response.reason, /invalid access_token/);
  reply = await c.reply(c.send('realtime:odd', 'phx_join', { config: { postgres_changes: {} }, access_token: user.token }, { joinRef: '202', ref: '202' }));
  assert.match(reply.payload.response.reason, /must be an array/);
  // The connection still works.
  const ok = await c.reply(join(c, 'realtime:fine', [{ event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` }], { joinRef: '203' }));
  assert.equal(ok.payload.status, 'ok');
  c.close();
});

test('channel limit, unknown events, broadcast and a second join of a topic', async () => {
  const c = await open();
  const binding = [{ event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` }];
  for (let i = 1; i <= 3; i++) assert.equal((await c.reply(join(c, `realtime:c${i}`, binding, { joinRef: String(i) }))).payload.status, 'ok');
  const fourth = await c.reply(join(c, 'realtime:c4', binding, { joinRef: '4' }));
  assert.match(fourth.payload.response.reason, /at most 3 channels/);
  // Joining a joined topic again replaces it: the old join is closed first.
  const again = await c.reply(join(c, 'realtime:c1', binding, { joinRef: '5' }));
  assert.equal(again.payload.status, 'ok');
  assert.ok(c.received.some((m) => m.event === 'phx_close' && m.topic === 'realtime:c1' && m.joinRef === '1'));
  assert.match((await c.reply(c.send('realtime:c2', 'broadcast', { type: 'broadcast', event: 'x', payload: {} }, { joinRef: '2' }))).payload.response.reason, /no broadcast/);
  assert.match((await c.reply(c.send('realtime:c2', 'whatever', {}, { joinRef: '2' }))).payload.response.reason, /unknown event/);
  assert.match((await c.reply(c.send('phoenix', 'whatever', {}))).payload.response.reason, /unknown event/);
  assert.match((await c.reply(c.send('realtime:nowhere', 'phx_leave', {}))).payload.response.reason, /unmatched topic/);
  c.close();
});

test('bad frames close the connection with a defined code', async () => {
  const cases = [
    ['malformed JSON', (c) => c.sendRaw('[1,2,'), 1007],
    ['a message of the other encoding', (c) => c.sendRaw(JSON.stringify({ topic: 't', event: 'e', payload: {}, ref: '1' })), 1007],
    ['a four-element array', (c) => c.sendRaw(JSON.stringify([null, '1', 't', 'e'])), 1007],
    ['a payload that is not an object', (c) => c.sendRaw(JSON.stringify([null, '1', 't', 'e', []])), 1007],
    ['a numeric ref', (c) => c.sendRaw(JSON.stringify([null, 1, 't', 'e', {}])), 1007],
    ['an empty topic', (c) => c.sendRaw(JSON.stringify([null, '1', '', 'e', {}])), 1007],
    ['a binary frame', (c) => c.sendRaw(Buffer.from('[null,"1","phoenix","heartbeat",{}]')), 1003],
    ['a frame over --ws-max-frame', (c) => c.sendRaw(JSON.stringify([null, '1', 'phoenix', 'heartbeat', { pad: 'x'.repeat(5000) }])), 1009],
  ];
  for (const [what, act, code] of cases) {
    const c = await open();
    act(c);
    const closed = await c.waitClosed();
    assert.equal(closed.code, code, what);
  }
});

test('upgrades refused: no apikey, an unknown vsn, a foreign Origin, another path', async () => {
  assert.ok(!(await RawPhx.connect(server, { apikey: null })).client, 'no apikey');
  assert.ok(!(await RawPhx.connect(server, { vsn: '3.0.0' })).client, 'vsn 3.0.0');
  assert.ok(!(await RawPhx.connect(server, { origin: 'https://evil.example' })).client, 'a foreign Origin');
  assert.ok(!(await RawPhx.connect(server, { path: '/realtime/v1/websocketx' })).client, 'another path');
  assert.ok(!(await RawPhx.connect(server, { path: '/ws' })).client, 'jobwire.v1 needs its subprotocol');
  const allowed = await RawPhx.connect(server, { origin: ORIGIN });
  assert.ok(allowed.client, 'the allowed Origin');
  allowed.client.close();
});

test('the bystander saw none of it and still gets changes', async () => {
  await server.driveHttp(jobId, user.token, (j) => j.job.status === 'completed', { timeout: 60_000 });
  await until(() => bystander.received.some((m) => m.event === 'postgres_changes' && m.payload.data.record.status === 'completed'), { what: 'the completed job' });
  const seen = bystander.received.slice(bystanderFrom);
  assert.ok(seen.length >= 2, `the job_runs changes (${seen.length})`);
  assert.ok(seen.every((m) => m.event === 'postgres_changes' && m.topic === 'realtime:bystander'), JSON.stringify(seen.find((m) => m.event !== 'postgres_changes')));
  assert.equal(bystander.closed, null);
});

test('a rejoin in the same write as the join it replaces: the replaced join\'s reads do not count against it', { timeout: 120_000 }, async () => {
  // Each job a join names that is not in memory costs a read (at most 100 waiting per
  // connection). A rejoin cancels the reads of the join it replaces; they used to stay
  // counted until answered, so a join of 60 finished jobs replaced at once by another of 60
  // was refused ("60 database reads waiting").
  const srv = new Server({ name: 'sb_protocol_reads', args: ['--finished-job-ttl', '1'] });
  await srv.start();
  try {
    const u = srv.user();
    const ids = [];
    for (let i = 0; i < 100; i++) {
      const id = (await srv.createJob(u.token, { count: 1 })).job_id;
      const r = await srv.api('POST', `/api/jobs/${id}/cancel`, { token: u.token });
      assert.equal(r.status, 200, `cancel: ${r.status} ${r.text}`);
      ids.push(id);
    }
    // Every one of them out of memory: a join naming them reads each from PostgreSQL.
    for (const deadline = Date.now() + 30_000; ;) {
      const m = await srv.api('GET', '/metrics', { token: srv.adminKey });
      if (/^jobwire_jobs_in_memory 0$/m.test(m.text)) break;
      assert.ok(Date.now() < deadline, 'the 100 finished jobs left memory within 30 s');
      await new Promise((res) => setTimeout(res, 100));
    }
    const r = await RawPhx.connect(srv);
    assert.ok(r.client, JSON.stringify(r));
    const c = r.client;
    const binding = (part) => [{ event: '*', schema: 'public', table: 'job_runs', filter: `id=in.(${part.join(',')})` }];
    const sock = c.ws._socket;
    sock.cork(); // one write: the first join's reads are still out when the rejoin comes
    join(c, 'realtime:reads', binding(ids.slice(0, 60)), { token: u.token, joinRef: '1' });
    join(c, 'realtime:reads', binding(ids.slice(40)), { token: u.token, joinRef: '2' });
    sock.uncork();
    const reply = await c.reply('2', { timeout: 30_000 });
    assert.equal(reply.payload.status, 'ok', `the rejoin: ${JSON.stringify(reply.payload)}`);
    await c.waitFor((m) => m.event === 'phx_close' && m.joinRef === '1', { what: 'the replaced join closed' });
    c.close();
  } finally {
    await srv.stop();
  }
});

test('filter values are bounded per connection (2,000 in all), and a channel left gives its own back', { timeout: 60_000 }, async () => {
  // Parsed filters cost some 50 bytes a value: a signed-out client could make a
  // connection hold 19 MB of them with 100 joins of 14 KB (a probe did, 20 connections:
  // 389 MB). One binding of 8 in-lists of 100 values: 800 values, about 2.5 KB of filter.
  const c = await open();
  const list = `in.(${Array.from({ length: 100 }, (_, i) => i + 1).join(',')})`;
  const filter = Array.from({ length: 8 }, () => `transaction_count=${list}`).join(',');
  const binding = [{ event: '*', schema: 'public', table: 'job_runs', filter }];
  for (const t of ['realtime:v1', 'realtime:v2']) {
    const reply = await c.reply(join(c, t, binding, { token: undefined, joinRef: t }));
    assert.equal(reply.payload.status, 'ok', `${t}: ${JSON.stringify(reply.payload)}`);
  }
  const over = await c.reply(join(c, 'realtime:v3', binding, { token: undefined, joinRef: 'v3' }));
  assert.equal(over.payload.status, 'error');
  assert.equal(over.payload.response.reason, "postgres_changes[0]: this connection's channels hold 1600 filter values; at most 2000 in all");
  // A leave gives its channel's values back: the same join now fits.
  const leave = c.send('realtime:v1', 'phx_leave', {}, { joinRef: 'realtime:v1' });
  assert.equal((await c.reply(leave)).payload.status, 'ok');
  const again = await c.reply(join(c, 'realtime:v3', binding, { token: undefined, joinRef: 'v3b' }));
  assert.equal(again.payload.status, 'ok', JSON.stringify(again.payload));
  c.close();
});
