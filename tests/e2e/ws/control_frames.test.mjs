// Control frames amid jobwire's own writes. jobwire writes data frames to the socket itself,
// in publish rounds handed to its fan-out helper thread (docs/operations.md, "Fan-out
// threads"; server/wsconn.c, server/wire.c), while libwebsockets (lws) writes control frames
// on the same socket on its own: the pong that answers a client's PING, the echo of a
// client's CLOSE. When the socket's send buffer is full a write is cut and a data frame goes
// in two parts; a control frame written between the two corrupts the stream (the npm ws
// client then emits 'error', "Invalid WebSocket frame: ..." or "Invalid UTF-8 sequence", and
// closes with 1002 or 1007). This file makes exactly those conditions, with --fanout-threads 1
// (the default, said explicitly), and checks that nothing breaks:
//   1. 24 watchers of one user (rounds of 24 writes: shared with the helper) stop reading;
//      jobs of 50 transactions start, 3 at a time, each watched by all, until `ss` has shown
//      the server's side of every watcher's connection full (fill: a condition on bytes, not
//      on time). Then each watcher reads for 5-30 ms and stops for 30-100 ms (random), over
//      and over, until it has read every job to its end. All the while each sends a WebSocket
//      PING every 3-8 ms (written even while it does not read). No 'error', no close; every
//      stream whole (a snapshot, then every delta to the committed seq, in order), equal to
//      GET /api/jobs/{id} and the same on every watcher; pongs came back, each answering a
//      PING the client sent, in order; the connections still answer and close with 1000.
//   2. The same start with 24 watchers, then 12 send a CLOSE (1000) while not reading: 6 with
//      their connection still full from the start (more queued behind it), 6 at the end of
//      one of their first stops; then they read again. Each is closed - with the server's
//      echo (1000), or, when lws holds a frame the socket did not take whole, dropped without
//      one (1006, see there) - with no 'error', and what it read is clean. The 12 others go on
//      as in 1, undisturbed.
//   3. As 1 on the Supabase-compatible endpoint (/realtime/v1/websocket): 16 bare Phoenix
//      clients over ws, one channel each with postgres_changes bindings on the three tables;
//      every change of every job arrives once, in order, equal to job_events; no phx_error.
// Every queue bound is far above what the test sends (--ws-max-queue 64 MiB), so nothing is
// dropped and every delta must arrive. The pauses are random; the checks are of correctness
// only. The fills need about 5 MB to each client on Linux's defaults (the server's send buffer
// grows to tcp_wmem's maximum, 4 MiB, at once on loopback): some 12 jobs a test.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { Client, Server, assertCleanStream, diffState, journal, settle, sleep } from '../lib/index.mjs';

const WATCHERS = 24; // rounds of 24 writes: shared with the helper (from 16)
const CLOSE_WATCHERS = 24;
const TX = 50; // the most a job may have: the most deltas a job makes (about 450 KB to each watcher)
const RT_WATCHERS = 16;
// Jobs fill may start before every connection is full: about 5 MB to each watcher on Linux's
// defaults (a 4 MiB send buffer at most, tcp_wmem); past it the test fails, saying so.
const MAX_FILL_JOBS = 60;
const LIVE = 3; // jobs running at once while fill fills the connections
const STILL = 5; // polls of ss (20 ms apart at least) a connection's queue must not move to count as stopped
const servers = [];
const run = promisify(execFile);

after(async () => {
  for (const s of servers) await s.stop();
});

async function start(name) {
  const s = new Server({
    name,
    sim: 'latency_ms=1,otp=none,voucher_polls=0',
    args: ['--fanout-threads', '1', '--ws-max-queue', String(64 * 1048576)],
  });
  servers.push(s);
  await s.start();
  return s;
}

const rand = (lo, hi) => lo + Math.floor(Math.random() * (hi - lo + 1));
const MB = (n) => (n / 1048576).toFixed(1);

// The server's side of its established connections (ss, iproute2), by the client's port:
// {sendq, sndbuf (skmem tb), queued (skmem w: what the send buffer holds)}.
async function serverSockets(server) {
  const { stdout } = await run('ss', ['-Htnmi', 'state', 'established', `( sport = :${server.port} )`], { timeout: 10_000 });
  const out = new Map();
  for (const block of stdout.split(/\n(?=\S)/)) {
    const a = /^\s*\d+\s+(\d+)\s+\S+:\d+\s+\S+:(\d+)/.exec(block);
    const k = /skmem:\(r\d+,rb\d+,t\d+,tb(\d+),f\d+,w(\d+)/.exec(block);
    if (a && k) out.set(Number(a[2]), { sendq: Number(a[1]), sndbuf: Number(k[1]), queued: Number(k[2]) });
  }
  return out;
}

// What a socket saw of control frames: the PINGs it sent (payload label#n, n = 1, 2, ...),
// the pongs answering one of them (in order: a pong answers the newest PING its peer has
// read, RFC 6455 5.5.3, so n only goes up), and anything else that came as a pong (stray).
class Controls {
  constructor(ws, label) {
    this.ws = ws;
    this.label = label;
    this.port = ws._socket.localPort;
    this.sent = 0;
    this.pongs = 0;
    this.last = 0;
    this.stray = [];
    this.pauses = 0;
    this.fills = 0; // times its connection was seen full or stopped
    this.full = 0; // of which full
    this.closeSent = false;
    ws.on('pong', (data) => {
      const text = data.toString('latin1');
      const m = /^(.*)#(\d+)$/.exec(text);
      const n = m && m[1] === label ? Number(m[2]) : NaN;
      if (n >= 1 && n <= this.sent && n > this.last) {
        this.last = n;
        this.pongs++;
      } else {
        this.stray.push(text.slice(0, 80));
      }
    });
    // A PING every 3-8 ms until the CLOSE or the end, reading or not.
    this.timer = setInterval(() => {
      if (this.ws.readyState === WebSocket.OPEN && !this.closeSent) this.ws.ping(Buffer.from(`${label}#${++this.sent}`, 'latin1'));
    }, rand(3, 8));
  }

  stopPings() {
    clearInterval(this.timer);
  }

  pause() {
    this.ws._socket.pause();
    this.pauses++;
  }

  resume() {
    this.ws._socket.resume();
  }

  assertPongs({ closed = false } = {}) {
    assert.deepEqual(this.stray, [], `${this.label}: every pong answers a PING this client sent, in order`);
    assert.ok(this.pongs > 0, `${this.label}: pongs came back (${this.pongs} for ${this.sent} PINGs${closed ? ' before the close' : ''})`);
  }
}

// Reads for 5-30 ms and stops for 30-100 ms, over and over, until stop.done or the socket
// closes; then reads for good. onStopped (optional) is called at the end of each stop, before
// reading again: when it returns true the rhythm ends there, leaving the socket as it is.
async function rhythm(ctl, stop, onStopped) {
  while (!stop.done && ctl.ws.readyState === WebSocket.OPEN) {
    ctl.resume();
    await sleep(rand(5, 30));
    if (stop.done) break;
    ctl.pause();
    await sleep(rand(30, 100));
    if (onStopped && (await onStopped())) return;
  }
  ctl.resume();
}

// The start of the load: every client stops reading, and jobs start (startJob(i) makes the
// i-th and has every client subscribe to it), LIVE at a time, until ss has shown each
// client's connection full: the kernel took no more (sk_wmem_queued >= sk_sndbuf, so the
// write that got it there was cut), or it stopped taking: over 2/3 of the send buffer
// queued (no longer writable, for poll) and not moving for STILL polls in a row while jobs
// ran (what jobwire has for it waits for the client to read). The clients are left not
// reading. Returns the jobs, and each Controls counts its fills (full: the first kind).
async function fill(server, ctls, startJob) {
  for (const c of ctls) c.pause();
  const seen = new Map(ctls.map((c) => [c, { queued: -1, still: 0, done: false }]));
  const ids = [];
  for (;;) {
    const socks = await serverSockets(server);
    const live = await server.metric('jobwire_jobs_live');
    for (const c of ctls) {
      const st = seen.get(c);
      const s = socks.get(c.port);
      if (st.done || !s) continue;
      st.still = s.queued === st.queued && live > 0 ? st.still + 1 : 0;
      st.queued = s.queued;
      if (s.queued >= s.sndbuf || (3 * s.queued > 2 * s.sndbuf && st.still >= STILL)) {
        st.done = true;
        c.fills++;
        if (s.queued >= s.sndbuf) c.full++;
      }
    }
    if ([...seen.values()].every((st) => st.done)) return ids;
    if (live < LIVE) {
      assert.ok(ids.length < MAX_FILL_JOBS, `the load's construction: after ${ids.length} jobs, ${[...seen.values()].filter((st) => !st.done).length} of ${ctls.length} connections never filled ` +
        `(${JSON.stringify([...socks.values()].slice(0, 3))}; net.ipv4.tcp_wmem larger than Linux's defaults?)`);
      ids.push(await startJob(ids.length));
    }
    await sleep(20);
  }
}

// Waits until every client has read every job to its end: the first to its final state
// at the committed seq (settle, which answers the committed job), the others to that seq.
// Returns the committed jobs by id.
async function readToEnd(server, token, clients, ids, committed = new Map()) {
  for (const id of ids) {
    const job = await settle(server, clients[0], id, { token, timeout: 30_000 });
    committed.set(id, job);
    for (const c of clients.slice(1)) await c.waitSeq(id, job.seq, { timeout: 30_000 });
  }
  return committed;
}

// Every watcher's stream of every job: a snapshot, then every delta to the committed seq in
// order, equal to GET (committed), and the same bytes for each delta on every watcher.
function assertWhole(clients, committed) {
  for (const [id, job] of committed) {
    assert.equal(job.job.status, 'completed', `job ${id} completed`);
    let first = null;
    for (const c of clients) {
      const msgs = c.jobMessages(id);
      assert.equal(msgs[0].type, 'snapshot', `${c.label}: a snapshot first`);
      assert.equal(msgs.filter((m) => m.type === 'snapshot').length, 1, `${c.label}: one snapshot (no resync)`);
      const deltas = msgs.slice(1);
      assert.deepEqual(deltas.map((m) => m.seq), Array.from({ length: job.seq - msgs[0].seq }, (_, k) => msgs[0].seq + 1 + k),
        `${c.label}: deltas ${msgs[0].seq + 1}..${job.seq}, each once, in order`);
      assert.deepEqual(diffState(c.view(id), job), [], `${c.label}: snapshot + deltas = GET /api/jobs/${id}`);
      const bySeq = new Map(deltas.map((m) => [m.seq, JSON.stringify(m)]));
      if (!first) first = bySeq;
      else for (const [seq, text] of bySeq) if (first.has(seq)) assert.equal(text, first.get(seq), `job ${id}: delta ${seq} the same for every watcher`);
    }
  }
}

function assertNoError(c) {
  assert.deepEqual(c.errorEvents, [], `${c.label}: no 'error' event`);
}

// Runs fn (the load); if it throws, and a client's ws emitted 'error' (a broken frame, which
// then closes the connection and makes a wait fail), says that first.
async function load(clients, fn) {
  try {
    return await fn();
  } catch (e) {
    const bad = clients.filter((c) => c.errorEvents.length);
    if (!bad.length) throw e;
    throw new Error(`'error' events on ${bad.length} of ${clients.length} clients: ` +
      `${bad.slice(0, 4).map((c) => `${c.label}: ${c.errorEvents.join('; ')}${c.closed ? ` (closed ${c.closed.code})` : ''}`).join(' | ')}\n(and so: ${e.message.slice(0, 300)})`);
  }
}

const bytesRead = (clients) => clients.reduce((n, c) => n + c.frames.reduce((k, f) => k + (f.text ? f.text.length : 0), 0), 0);

// n jobwire.v1 watchers of one user, each with its Controls.
async function watchers(server, token, n, label = (i) => `w${i}`) {
  const clients = await Promise.all(Array.from({ length: n }, (_, i) => Client.open(server, token, { label: label(i) })));
  return { clients, ctls: clients.map((c) => new Controls(c.ws, c.label)) };
}

// A job of the user that every client subscribes to (without waiting: they are not reading).
function jobFor(server, token, clients, amount) {
  return async (i) => {
    const id = (await server.createJob(token, { count: TX, amount: amount + i })).job_id;
    for (const c of clients) c.send({ type: 'subscribe', job_id: id, ref: `s-${id}` });
    return id;
  };
}

test(`1. ${WATCHERS} watchers, their connections full, stop and start reading and PING all the while: every stream whole`, { timeout: 60_000 }, async (t) => {
  const server = await start('ctl_ping');
  assert.equal(await server.metric('jobwire_fanout_threads'), 1);
  const u = server.user();
  const { clients, ctls } = await watchers(server, u.token, WATCHERS);
  const roundsBefore = await server.metric('jobwire_fanout_parallel_rounds_total');
  let ids;
  let committed;
  const ms = { t0: Date.now() };
  await load(clients, async () => {
    const stop = { done: false };
    let loops = [];
    try {
      ids = await fill(server, ctls, jobFor(server, u.token, clients, 100));
      ms.filled = Date.now();
      loops = ctls.map((c) => rhythm(c, stop));
      committed = await readToEnd(server, u.token, clients, ids);
    } finally {
      stop.done = true;
      await Promise.all(loops);
      for (const c of ctls) c.stopPings();
    }
  });
  ms.read = Date.now();
  for (const c of clients) {
    assertNoError(c);
    assert.equal(c.closed, null, `${c.label}: still connected (${JSON.stringify(c.closed)})`);
    assertCleanStream(c);
  }
  assertWhole(clients, committed);
  ms.checked = Date.now();
  for (const c of ctls) c.assertPongs();
  const rounds = (await server.metric('jobwire_fanout_parallel_rounds_total')) - roundsBefore;
  assert.ok(rounds > 0, `publish rounds were shared with the helper thread (${rounds})`);
  // The connections still work and close cleanly: a message answered, the close echoed.
  await Promise.all(clients.map((c) => c.ping({ timeout: 20_000 })));
  const closes = await Promise.all(clients.map((c) => c.closeAndWait(10_000)));
  for (const [i, cl] of closes.entries()) assert.equal(cl.code, 1000, `${clients[i].label}: closed with 1000 (${JSON.stringify(cl)})`);
  for (const c of clients) assertNoError(c);
  const sum = (f) => ctls.reduce((n, c) => n + f(c), 0);
  t.diagnostic(`${ids.length} jobs x ${TX} transactions; ${MB(bytesRead(clients))} MB read by ${WATCHERS} watchers; ` +
    `connections filled ${sum((c) => c.fills)} times (${sum((c) => c.full)} seen full, the rest stopped); ${sum((c) => c.pauses)} stops; ${sum((c) => c.sent)} PINGs, ${sum((c) => c.pongs)} pongs; ${rounds} shared rounds; ` +
    `filled in ${ms.filled - ms.t0} ms, read in ${ms.read - ms.filled} ms more, checked in ${ms.checked - ms.read} ms`);
});

test(`2. ${CLOSE_WATCHERS / 2} of ${CLOSE_WATCHERS} watchers send a CLOSE amid the burst, not reading: each is closed cleanly, no error`, { timeout: 60_000 }, async (t) => {
  const server = await start('ctl_close');
  const u = server.user();
  const kind = (i) => ['closeFull', 'stay', 'closeLate', 'stay'][i % 4];
  const { clients, ctls } = await watchers(server, u.token, CLOSE_WATCHERS, (i) => `${kind(i)}${i}`);
  const closers = clients.filter((_, i) => kind(i) !== 'stay');
  const stayers = clients.filter((_, i) => kind(i) === 'stay');
  const ctl = (c) => ctls[clients.indexOf(c)];
  const closeAt = new Map(); // closer -> how many messages it had read when it sent the CLOSE
  // Sends the CLOSE (the socket not reading), waits 0-30 ms and reads again.
  const sendClose = async (c) => {
    ctl(c).closeSent = true;
    closeAt.set(c, c.messages.length);
    c.ws.close(1000, 'bye');
    await sleep(rand(0, 30));
    ctl(c).resume();
  };
  let ids;
  let closed;
  let committed;
  const stop = { done: false };
  let loops = [];
  await load(clients, async () => {
    try {
      ids = await fill(server, ctls, jobFor(server, u.token, clients, 200));
      // closeFull: still not reading, its connection full and more queued behind it, it waits
      // 0-100 ms more and sends its CLOSE. closeLate: stops and starts reading like the others
      // and sends its CLOSE at the end of its 1st to 3rd stop.
      loops = clients.map(async (c, i) => {
        if (kind(i) === 'stay') return rhythm(ctl(c), stop);
        if (kind(i) === 'closeFull') {
          await sleep(rand(0, 100));
          return sendClose(c);
        }
        const stops = ctl(c).pauses + rand(1, 3);
        return rhythm(ctl(c), stop, async () => ctl(c).pauses >= stops && (await sendClose(c), true));
      });
      closed = await Promise.all(closers.map((c) => c.waitClose(30_000)));
      committed = await readToEnd(server, u.token, stayers, ids);
    } finally {
      stop.done = true;
      await Promise.all(loops);
      for (const c of ctls) c.stopPings();
    }
  });
  let readAfter = 0;
  for (const [k, c] of closers.entries()) {
    assertNoError(c);
    // The server's close answers the client's (1000), unless lws is in the middle of a frame
    // the socket did not take whole - as it is when the connection is full: then it cannot put
    // a close frame after it and drops the connection instead (libwebsockets 4,
    // lib/roles/ws/ops-ws.c, "Closing on peer close due to Pending tx"), which the client sees
    // as 1006. Never an 'error', never another code (1002, 1007: a broken frame).
    assert.ok([1000, 1006].includes(closed[k].code), `${c.label}: closed with 1000, or 1006 when dropped mid-frame (${JSON.stringify(closed[k])})`);
    if (closed[k].code === 1000) assert.equal(closed[k].reason, 'bye', `${c.label}: the server's close echoes the client's`);
    assertCleanStream(c);
    ctl(c).assertPongs({ closed: true });
    if (c.messages.length > closeAt.get(c)) readAfter++;
  }
  for (const c of stayers) {
    assertNoError(c);
    assert.equal(c.closed, null, `${c.label}: still connected (${JSON.stringify(c.closed)})`);
    assertCleanStream(c);
  }
  assertWhole(stayers, committed);
  for (const c of stayers) ctl(c).assertPongs();
  await Promise.all(stayers.map((c) => c.ping({ timeout: 20_000 })));
  const ends = await Promise.all(stayers.map((c) => c.closeAndWait(10_000)));
  for (const [i, cl] of ends.entries()) assert.equal(cl.code, 1000, `${stayers[i].label}: closed with 1000 (${JSON.stringify(cl)})`);
  for (const c of stayers) assertNoError(c);
  const codes = (pre) => {
    const mine = closed.filter((_, k) => closers[k].label.startsWith(pre));
    return `${mine.filter((x) => x.code === 1000).length} echoed (1000), ${mine.filter((x) => x.code === 1006).length} dropped mid-frame (1006)`;
  };
  t.diagnostic(`${ids.length} jobs; connections filled ${ctls.reduce((n, c) => n + c.fills, 0)} (${ctls.reduce((n, c) => n + c.full, 0)} seen full); ` +
    `${closers.length} closers, ${readAfter} of them read messages after sending the CLOSE; closeFull: ${codes('closeFull')}; closeLate: ${codes('closeLate')}; ` +
    `${MB(bytesRead(clients))} MB read in all`);
});

// A bare Phoenix client (vsn 2.0.0 arrays) over ws that records every message; a frame that
// is not a JSON array of 5 is kept apart (badFrames), an 'error' event in errorEvents.
class Phx {
  constructor(ws, label) {
    this.ws = ws;
    this.label = label;
    this.received = [];
    this.changesBy = new Map(); // job/table -> [{op, row}] of its postgres_changes, in arrival order
    this.badFrames = [];
    this.errorEvents = [];
    this.closed = null;
    this.ref = 0;
    ws.on('message', (data, isBinary) => {
      const text = data.toString();
      let m = null;
      try {
        m = JSON.parse(text);
      } catch {
        /* kept below */
      }
      if (isBinary || !Array.isArray(m) || m.length !== 5) {
        this.badFrames.push(text.slice(0, 200));
        return;
      }
      const msg = { joinRef: m[0], ref: m[1], topic: m[2], event: m[3], payload: m[4] };
      this.received.push(msg);
      const d = msg.event === 'postgres_changes' && msg.payload && msg.payload.data;
      if (d && d.record) {
        const key = `${d.table === 'job_runs' ? d.record.id : d.record.job_run_id}/${d.table}`;
        if (!this.changesBy.has(key)) this.changesBy.set(key, []);
        this.changesBy.get(key).push({ op: d.type, row: d.record });
      }
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
    ws.on('error', (err) => this.errorEvents.push(err.message));
  }

  static open(server, label) {
    const ws = new WebSocket(`${server.wsBase}/realtime/v1/websocket?apikey=anon-key-not-a-secret&vsn=2.0.0`, [],
      { handshakeTimeout: 10_000, perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
    const c = new Phx(ws, label);
    return new Promise((resolve, reject) => {
      ws.on('open', () => resolve(c));
      ws.on('unexpected-response', (req, res) => {
        req.destroy();
        reject(new Error(`${label}: upgrade refused: ${res.statusCode}`));
      });
      ws.on('close', () => reject(new Error(`${label}: closed during the handshake`)));
      ws.on('error', (err) => reject(err));
    });
  }

  send(topic, event, payload, joinRef = null) {
    const ref = String(++this.ref);
    this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]));
    return ref;
  }

  async until(pred, what, timeout = 30_000) {
    const deadline = Date.now() + timeout;
    while (!pred()) {
      if (this.closed) throw new Error(`${this.label}: closed (${JSON.stringify(this.closed)}) while waiting for ${what}`);
      if (Date.now() >= deadline) throw new Error(`${this.label}: no ${what} within ${timeout} ms`);
      await sleep(20);
    }
  }

  async reply(ref) {
    let r;
    await this.until(() => (r = this.received.find((m) => m.event === 'phx_reply' && m.ref === ref)), `the reply to ref ${ref}`);
    return r;
  }

  // The changes of one job's rows of one table, in arrival order: [{op, row}].
  changes(jobId, table) {
    return this.changesBy.get(`${jobId}/${table}`) || [];
  }
}

const TABLES = ['job_runs', 'job_steps', 'otp_requests'];

test(`3. /realtime/v1/websocket: ${RT_WATCHERS} Phoenix clients, their connections full, stop and start reading and PING: every change once`, { timeout: 60_000 }, async (t) => {
  const server = await start('ctl_realtime');
  const u = server.user();
  const clients = await Promise.all(Array.from({ length: RT_WATCHERS }, (_, i) => Phx.open(server, `rt${i}`)));
  // One channel each, one binding per table, every job of the user: every change of a job
  // started after the join reaches it.
  await Promise.all(clients.map(async (c) => {
    const payload = {
      config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, private: false,
        postgres_changes: TABLES.map((table) => ({ event: '*', schema: 'public', table })) },
      access_token: u.token,
    };
    const r = await c.reply(c.send('realtime:jobs', 'phx_join', payload, '1'));
    assert.equal(r.payload.status, 'ok', `${c.label}: joined (${JSON.stringify(r.payload)})`);
  }));
  const ctls = clients.map((c) => new Controls(c.ws, c.label));
  let ids;
  const want = new Map(); // job -> table -> [{op, row}] from job_events
  await load(clients, async () => {
    const stop = { done: false };
    let loops = [];
    try {
      ids = await fill(server, ctls, async (i) => (await server.createJob(u.token, { count: TX, amount: 300 + i })).job_id);
      loops = ctls.map((c) => rhythm(c, stop));
      for (const id of ids) {
        await server.waitJob(id, (j) => j.job.status === 'completed', { token: u.token, timeout: 30_000, what: 'completed' });
        const rows = journal(server, id);
        want.set(id, new Map(TABLES.map((table) => [table, rows.filter((e) => e.table === table).map((e) => ({ op: e.op, row: e.row }))])));
        for (const c of clients) {
          await c.until(() => TABLES.reduce((k, table) => k + c.changes(id, table).length, 0) >= rows.length, `the ${rows.length} changes of job ${id}`);
        }
      }
    } finally {
      stop.done = true;
      await Promise.all(loops);
      for (const c of ctls) c.stopPings();
    }
  });
  // What was queued before a heartbeat's reply has arrived once the reply has: nothing more
  // is coming, so what each client has now is all it gets.
  await Promise.all(clients.map(async (c) => assert.equal((await c.reply(c.send('phoenix', 'heartbeat', {}))).payload.status, 'ok')));
  for (const c of clients) {
    assertNoError(c);
    assert.equal(c.closed, null, `${c.label}: still connected`);
    assert.deepEqual(c.badFrames, [], `${c.label}: every frame a vsn 2.0.0 message`);
    const other = c.received.filter((m) => !['postgres_changes', 'phx_reply', 'system'].includes(m.event));
    assert.deepEqual(other, [], `${c.label}: nothing but changes, replies and the join's system message (no phx_error: never asked to rejoin)`);
    const total = ids.reduce((n, id) => n + TABLES.reduce((k, table) => k + want.get(id).get(table).length, 0), 0);
    assert.equal(c.received.filter((m) => m.event === 'postgres_changes').length, total, `${c.label}: as many changes as job_events has rows`);
    for (const id of ids) {
      for (const table of TABLES) {
        assert.deepStrictEqual(c.changes(id, table), want.get(id).get(table), `${c.label}: job ${id}, ${table}: every change once, in order, = job_events`);
      }
    }
  }
  for (const c of ctls) c.assertPongs();
  const closes = await Promise.all(clients.map(async (c) => {
    c.ws.close(1000);
    await c.until(() => c.closed, 'the close', 10_000);
    return c.closed;
  }));
  for (const [i, cl] of closes.entries()) assert.equal(cl.code, 1000, `${clients[i].label}: closed with 1000 (${JSON.stringify(cl)})`);
  for (const c of clients) assertNoError(c);
  const sum = (f) => ctls.reduce((n, c) => n + f(c), 0);
  t.diagnostic(`${ids.length} jobs x ${TX} transactions; ${clients.reduce((n, c) => n + c.received.length, 0)} messages to ${RT_WATCHERS} clients; ` +
    `connections filled ${sum((c) => c.fills)} times (${sum((c) => c.full)} seen full, the rest stopped); ${sum((c) => c.pauses)} stops; ${sum((c) => c.sent)} PINGs, ${sum((c) => c.pongs)} pongs`);
});
