// A supabase-js connection left idle for over a minute stays open on the same socket:
// its heartbeats (every 25 s) are answered, nothing reconnects, and a change after the
// idle minute still arrives.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, sleep } from '../lib/index.mjs';
import { subscribe, supabase, until } from './lib.mjs';

const server = new Server({ name: 'sb_heartbeat' });

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
});

test('heartbeats keep a 65 s idle connection alive', async () => {
  const u = server.user();
  const id = (await server.createJob(u.token, { count: 1 })).job_id;
  const paused = await server.waitPaused(id);
  const sb = supabase(server, u.token);
  await sb.realtime.setAuth();
  const got = [];
  const ch = sb.channel('idle');
  ch.on('postgres_changes', { event: '*', schema: 'public', table: 'otp_requests', filter: `job_run_id=eq.${id}` }, (p) => got.push(p));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');

  await sleep(65_000); // idle: the job waits for an OTP nobody types

  const rec = sb.recorder;
  assert.equal(rec.sockets.length, 1, 'no reconnect');
  assert.equal(rec.sockets[0].readyState, 1, 'the socket is open');
  assert.equal(rec.sockets[0].closeInfo, null);
  const beats = () => rec.frames.filter((f) => f.dir === 'out' && JSON.parse(f.text)[3] === 'heartbeat').map((f) => JSON.parse(f.text)[1]);
  const answered = () => rec.received().filter((m) => m.topic === 'phoenix' && m.event === 'phx_reply' && m.payload.status === 'ok').map((m) => m.ref);
  assert.ok(beats().length >= 2, `heartbeats sent: ${beats().length}`);
  // A heartbeat may have just left: wait for the answers to every one sent so far.
  const sent = beats();
  await until(() => sent.every((ref) => answered().includes(ref)), { what: `the answers to heartbeats ${sent.join(', ')}` });
  assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
  assert.equal(got.length, 0);

  const otp = paused.otp_requests.find((o) => o.status === 'requested');
  const code = await server.waitCode(otp.id);
  const r = await server.api('POST', `/api/otp/${otp.id}`, { token: u.token, body: { otp: code.code } });
  assert.equal(r.status, 200);
  await until(() => got.some((p) => p.new.id === otp.id && p.new.status !== 'requested'), { what: 'the change after the idle minute' });
  assert.equal(rec.sockets.length, 1);
  await sb.removeAllChannels();
});
