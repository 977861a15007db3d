// Liveness (docs/protocol.md "Limits", idle; --ws-ping-interval): a connection the client
// sent no message or pong on for the interval gets a WebSocket PING; one that sends none
// for the interval after that ping is dropped. Both endpoints, jobwire.v1 (/ws) and the
// Supabase one, with the real server at a 2 s interval and npm ws clients, some of which
// never answer pings (autoPong off).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { PROTOCOL } from '../lib/util.mjs';
import { Server, sleep } from '../lib/index.mjs';

let server;
before(async () => {
  server = new Server({ name: 'liveness', args: ['--ws-ping-interval', '2'] });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

// A raw client that records pings, messages and its close; autoPong as given.
function open(url, protocols, autoPong) {
  const ws = new WebSocket(url, protocols, { autoPong, perMessageDeflate: false });
  const rec = { ws, pings: 0, messages: [], closed: null };
  ws.on('ping', () => {
    rec.pings++;
  });
  ws.on('message', (d) => rec.messages.push(d.toString('utf8')));
  rec.done = new Promise((resolve) => {
    ws.on('close', (code) => {
      rec.closed = { code };
      resolve(rec.closed);
    });
  });
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve(rec));
    ws.on('error', reject);
  });
}

const v1 = () => open(`${server.wsBase}/ws?token=${server.adminKey}`, [PROTOCOL], true);
const v1Mute = () => open(`${server.wsBase}/ws?token=${server.adminKey}`, [PROTOCOL], false);
const rtUrl = () => `${server.wsBase}/realtime/v1/websocket?apikey=${server.adminKey}&vsn=1.0.0`;

async function metric(name) {
  const r = await server.api('GET', '/metrics', { token: server.adminKey });
  assert.equal(r.status, 200);
  const line = r.text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

// Waits for a close, failing after ms with what was seen.
async function closedWithin(rec, ms, what) {
  const t = sleep(ms).then(() => null);
  const c = await Promise.race([rec.done, t]);
  assert.ok(c, `${what}: still open after ${ms} ms (pings ${rec.pings})`);
  return c;
}

test('a silent jobwire.v1 client that answers pings is pinged and stays', { timeout: 30_000 }, async () => {
  const rec = await v1();
  await sleep(6000);
  assert.equal(rec.closed, null, 'still open');
  assert.ok(rec.pings >= 2, `pinged at least twice in 6 s at a 2 s interval (got ${rec.pings})`);
  // The connection still works: a jobwire.v1 ping is answered.
  rec.ws.send(JSON.stringify({ type: 'ping', ref: 'p1' }));
  const t0 = Date.now();
  while (!rec.messages.some((m) => m.includes('"pong"')) && Date.now() - t0 < 10_000) await sleep(20);
  assert.ok(rec.messages.some((m) => m.includes('"pong"') && m.includes('p1')), 'pong p1');
  rec.ws.close();
  await rec.done;
});

test('a jobwire.v1 client that never answers is dropped after a ping', { timeout: 30_000 }, async () => {
  const drops0 = await metric('jobwire_ws_idle_drops_total');
  const pings0 = await metric('jobwire_ws_pings_total');
  const rec = await v1Mute();
  const c = await closedWithin(rec, 15_000, 'the mute client');
  assert.equal(c.code, 1006, 'dropped without a closing handshake');
  assert.ok(rec.pings >= 1, 'it was pinged before the drop');
  assert.ok((await metric('jobwire_ws_idle_drops_total')) >= drops0 + 1, 'counted as an idle drop');
  assert.ok((await metric('jobwire_ws_pings_total')) >= pings0 + 1, 'the ping counted');
});

test('messages count as life: a client that never answers pings but talks stays', { timeout: 30_000 }, async () => {
  const rec = await v1Mute();
  const drops0 = await metric('jobwire_ws_idle_drops_total');
  // Past twice the interval: without the messages it would have been dropped by now.
  for (let i = 0; i < 24; i++) {
    rec.ws.send(JSON.stringify({ type: 'ping', ref: `t${i}` }));
    await sleep(250);
  }
  assert.equal(rec.closed, null, 'still open after 6 s of messages and no pong');
  assert.equal(await metric('jobwire_ws_idle_drops_total'), drops0, 'no idle drop');
  // Silent from now on, and still not answering pings: dropped.
  const c = await closedWithin(rec, 15_000, 'the client once it stopped talking');
  assert.equal(c.code, 1006);
});

test('the Supabase endpoint: pinged when silent, dropped when mute', { timeout: 30_000 }, async () => {
  const drops0 = await metric('jobwire_realtime_idle_drops_total');
  const live = await open(rtUrl(), [], true);
  const mute = await open(rtUrl(), [], false);
  const c = await closedWithin(mute, 15_000, 'the mute Supabase client');
  assert.equal(c.code, 1006);
  assert.ok(mute.pings >= 1, 'pinged before the drop');
  assert.ok((await metric('jobwire_realtime_idle_drops_total')) >= drops0 + 1, 'counted');
  assert.ok((await metric('jobwire_realtime_pings_total')) >= 1, 'pings counted');
  await sleep(2500);
  assert.equal(live.closed, null, 'the client that answers stays');
  assert.ok(live.pings >= 2, `pinged (got ${live.pings})`);
  live.ws.close();
  await live.done;
});
