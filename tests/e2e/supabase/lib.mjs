// lib.mjs - the harness of the Supabase-compatibility tests (tests/e2e/supabase/*.test.mjs).
//
// The server side is tests/e2e/lib/server.mjs's Server (the real binary, a fresh database).
// The client side is the real @supabase/supabase-js from npm, used the way an app uses
// it; the only things a test adds are a WebSocket transport (Node 20 has no global
// WebSocket; the npm `ws` package, wrapped to record every frame both ways) and the
// user's token (`accessToken`, supabase-js's option for tokens it does not issue).

import assert from 'node:assert/strict';
import './quiet.mjs';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { sleep } from '../lib/index.mjs';

// Every frame of every socket a recording transport opened: {dir: 'in'|'out', text}.
export class Recorder {
  constructor() {
    this.sockets = [];
    this.frames = [];
  }

  transport() {
    const rec = this;
    return class RecordingWebSocket extends WebSocket {
      constructor(url, protocols, opts) {
        super(url, protocols, opts);
        rec.sockets.push(this);
        this.closeInfo = null;
        this.on('message', (data) => rec.frames.push({ dir: 'in', text: data.toString() }));
        this.on('close', (code, reason) => {
          this.closeInfo = { code, reason: reason.toString() };
        });
      }

      send(data, ...rest) {
        rec.frames.push({ dir: 'out', text: String(data) });
        return super.send(data, ...rest);
      }
    };
  }

  // Parsed server messages (vsn 2.0.0 arrays) as {joinRef, ref, topic, event, payload}.
  received() {
    return this.frames
      .filter((f) => f.dir === 'in')
      .map((f) => {
        const m = JSON.parse(f.text);
        return Array.isArray(m)
          ? { joinRef: m[0], ref: m[1], topic: m[2], event: m[3], payload: m[4] }
          : { joinRef: m.join_ref, ref: m.ref, topic: m.topic, event: m.event, payload: m.payload };
      });
  }

  text() {
    return this.frames.map((f) => f.text).join('\n');
  }

  // A heartbeat of its own on the newest socket, answered after everything the server
  // queued for that connection before it: once it is answered, whatever was going to
  // arrive on that socket has arrived. supabase-js ignores a reply to a ref it did not make.
  async roundTrip({ timeout = 10_000 } = {}) {
    const ws = this.sockets.at(-1);
    const ref = `probe-${++probes}`;
    ws.send(JSON.stringify([null, ref, 'phoenix', 'heartbeat', {}]));
    await until(() => this.received().some((m) => m.ref === ref && m.event === 'phx_reply') || ws.closeInfo, {
      timeout,
      what: `the reply to heartbeat ${ref}`,
    });
    assert.ok(!ws.closeInfo, `the socket closed before heartbeat ${ref} was answered: ${JSON.stringify(ws.closeInfo)}`);
  }
}

let probes = 0;

// A supabase-js client for server signed in as token (null: signed out, the apikey only;
// a function: the app's own accessToken callback). apikey defaults to a made-up anon key:
// jobwire grants it nothing.
export function supabase(server, token, { apikey = 'anon-key-not-a-secret', recorder = new Recorder(), realtime = {} } = {}) {
  const options = { realtime: { transport: recorder.transport(), ...realtime } };
  if (typeof token === 'function') options.accessToken = token;
  else if (token) options.accessToken = async () => token;
  const client = createClient(server.base, apikey, options);
  client.recorder = recorder;
  return client;
}

// Subscribes channel and resolves with the first status that is not CLOSED (SUBSCRIBED,
// CHANNEL_ERROR or TIMED_OUT) and its error; every status is kept in channel.statuses.
export function subscribe(channel, { timeout = 20_000 } = {}) {
  channel.statuses = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no subscribe status within ${timeout} ms`)), timeout);
    let done = false;
    channel.subscribe((status, err) => {
      channel.statuses.push({ status, message: err ? err.message : null });
      if (!done && status !== 'CLOSED') {
        done = true;
        clearTimeout(timer);
        resolve({ status, message: err ? err.message : null });
      }
    });
  });
}

// Waits (bounded) until pred() is true; what names it in the failure.
export async function until(pred, { timeout = 20_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  while (!pred()) {
    if (Date.now() >= deadline) throw new Error(`${what} not reached within ${timeout} ms`);
    await sleep(20);
  }
}

// The journal's rows of one table, in commit order: what a subscriber must receive.
export function journalRows(journalEvents, table) {
  return journalEvents.filter((e) => e.table === table).map((e) => ({ op: e.op, row: e.row }));
}

// Asserts that the changes a callback collected ([{eventType, new}]) are exactly the
// journal's changes of that table, in order, row for row.
export function assertSameChanges(got, want, label) {
  assert.equal(got.length, want.length, `${label}: ${got.length} changes received, ${want.length} in job_events`);
  for (let i = 0; i < want.length; i++) {
    assert.equal(got[i].eventType, want[i].op, `${label}: change ${i} type`);
    assert.deepStrictEqual(got[i].new, want[i].row, `${label}: change ${i} row`);
  }
}

// A bare Phoenix client over `ws`, for what supabase-js never sends: the vsn 1.0.0
// encoding, malformed messages, unknown events. Records every message it receives.
export class RawPhx {
  constructor(ws, array) {
    this.ws = ws;
    this.array = array;
    this.received = [];
    this.closed = null;
    this.ref = 1000; // refs of its own, apart from the join refs tests choose
    ws.on('message', (data, isBinary) => {
      const text = data.toString();
      const m = JSON.parse(text);
      this.received.push(
        Array.isArray(m) ? { joinRef: m[0], ref: m[1], topic: m[2], event: m[3], payload: m[4], raw: m } : { joinRef: m.join_ref, ref: m.ref, topic: m.topic, event: m.event, payload: m.payload, raw: m },
      );
      assert.ok(!isBinary, 'the server sends text frames');
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
  }

  // Resolves {client} or {refused: status} / {error}. query: extra URL parameters
  // (apikey defaults to a made-up key; pass apikey: null to leave it out).
  static connect(server, { vsn = '2.0.0', apikey = 'anon-key-not-a-secret', origin, path = '/realtime/v1/websocket' } = {}) {
    const u = new URL(server.wsBase + path);
    if (apikey !== null) u.searchParams.set('apikey', apikey);
    if (vsn !== null) u.searchParams.set('vsn', vsn);
    const ws = new WebSocket(u.toString(), [], { handshakeTimeout: 10_000, ...(origin ? { origin } : {}) });
    return new Promise((resolve) => {
      ws.on('open', () => resolve({ client: new RawPhx(ws, vsn === '2.0.0') }));
      ws.on('unexpected-response', (req, res) => {
        resolve({ refused: res.statusCode });
        req.destroy();
      });
      ws.on('error', (err) => resolve({ error: err.message }));
    });
  }

  // Sends {topic, event, payload} in the connection's encoding; returns the ref used.
  send(topic, event, payload, { joinRef = null, ref } = {}) {
    const r = ref === undefined ? String(++this.ref) : ref;
    this.ws.send(JSON.stringify(this.array ? [joinRef, r, topic, event, payload] : { topic, event, payload, ref: r, join_ref: joinRef }));
    return r;
  }

  sendRaw(data) {
    this.ws.send(data);
  }

  async waitFor(pred, { timeout = 10_000, what = 'a message' } = {}) {
    await until(() => this.received.some(pred) || this.closed, { timeout, what });
    const m = this.received.find(pred);
    if (!m) throw new Error(`${what}: the connection closed first (${JSON.stringify(this.closed)})`);
    return m;
  }

  async reply(ref, opts) {
    return this.waitFor((m) => m.event === 'phx_reply' && m.ref === ref, { what: `the reply to ref ${ref}`, ...opts });
  }

  // A heartbeat answered: everything the server queued for this connection before it
  // has arrived (it answers in order), so what is missing now is not coming.
  async roundTrip(opts) {
    const reply = await this.reply(this.send('phoenix', 'heartbeat', {}), opts);
    assert.equal(reply.payload.status, 'ok');
  }

  // The messages of one topic.
  on(topic) {
    return this.received.filter((m) => m.topic === topic);
  }

  async waitClosed({ timeout = 10_000 } = {}) {
    await until(() => this.closed, { timeout, what: 'the server to close the connection' });
    return this.closed;
  }

  close() {
    this.ws.close();
  }
}
