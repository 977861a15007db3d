// kill -9 of jobwire in a loop while scripted clients stay subscribed (docs/protocol.md
// "Ordering and resuming", DESIGN.md "Durability rules"; the resume logic of the shipped
// client, web-client/jobwire-client.js).
//
// 20 jobs of 4 users (2 to 24 transactions each, no OTPs) watched by 6 clients: the
// shipped JobwireClient running in node over the npm `ws` WebSocket (one per user for its
// jobs, two with the admin key for all 20). jobwire is killed with SIGKILL 5 times at
// seeded pseudo-random moments (JW_FAULT_SEED; printed), sometimes while the clients are
// still resuming, and restarted each time on the same port and database. The clients
// reconnect and resume with `since` by themselves. Every frame each client receives is
// recorded beneath the client and checked across all its connections:
//   - per job: one snapshot, then deltas seq+1, seq+2, ... across every reconnect: no gap,
//     no duplicate, no seq going back. A later snapshot that moves a job forward is
//     accepted only when it shows the job finished (docs/protocol.md: a job that finished
//     before the running server started is not replayed); none may go back;
//   - every delta is in job_events exactly as sent;
//   - at the end every client's state of every job (the JobwireClient's own, and the one
//     rebuilt from the recorded frames) equals GET /api/jobs/{id}, completed.
// With Chromium available (JW_CHROMIUM or /usr/bin/chromium), one real page also shows a
// job through the kills and must end on its committed final state without a reload.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import {
  JobView, Server, TERMINAL, assertCheckerCatches, diffJournal, diffState, journal, rng, sleep, work,
} from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '../../..');
const USERS = 4;
const JOBS = 20;
const KILLS = 5;
const SEED = Number(process.env.JW_FAULT_SEED || 20261126) >>> 0;
const COUNTS = [2, 6, 12, 18, 24]; // transactions: some jobs end between kills, some outlast them all
const countOf = (i) => COUNTS[i % COUNTS.length];

let server;
let JobwireClient;
before(async () => {
  // The shipped client is a browser ES module in a folder without a package.json: node
  // would read web-client/jobwire-client.js as CommonJS, so a copy named .mjs is imported.
  const copy = path.join(work(), 'jobwire-client.mjs');
  fs.copyFileSync(path.join(REPO, 'web-client', 'jobwire-client.js'), copy);
  ({ JobwireClient } = await import(pathToFileURL(copy).href));
  // Voucher polls make each transaction take a while, so the kills land mid-job.
  server = new Server({ name: 'fault_kill', sim: 'latency_ms=40,otp=none,voucher_polls=3,poll_after_ms=120' });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

// A JobwireClient whose every received frame is recorded and checked, across all the
// WebSocket connections it opens: the checker sees what the server sent, before the
// client's own gap and duplicate handling hides anything.
function watcher(label, token) {
  const rec = {
    label,
    conns: [], // {n, closeCode}
    views: new Map(), // job_id -> JobView across connections
    jumps: [], // snapshots after the first that moved a job forward: {job, from, to, status, conn}
    answers: { replay: 0, ack: 0, snapshot: 0 }, // how resumes were answered
    msgs: [], // every message, {conn, msg}
    states: [], // the client's connection states
  };
  const view = (id) => {
    let v = rec.views.get(id);
    if (!v) {
      v = new JobView(id);
      rec.views.set(id, v);
    }
    return v;
  };
  class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { perMessageDeflate: false, handshakeTimeout: 5000 });
      const conn = { n: rec.conns.length + 1, closeCode: null, firstOf: new Set() };
      rec.conns.push(conn);
      this.on('close', (code) => { conn.closeCode = code; });
      // Registered before the client's onmessage: sees each frame first.
      this.on('message', (data, isBinary) => {
        if (isBinary) return;
        for (const line of data.toString('utf8').split('\n')) {
          if (!line) continue;
          const msg = JSON.parse(line);
          rec.msgs.push({ conn: conn.n, msg });
          if (msg.type !== 'snapshot' && msg.type !== 'delta') continue;
          const v = view(msg.job_id);
          const resumed = v.seq !== null && !conn.firstOf.has(msg.job_id);
          conn.firstOf.add(msg.job_id);
          if (msg.type === 'snapshot' && v.seq !== null && msg.seq > v.seq) {
            rec.jumps.push({ job: msg.job_id, from: v.seq, to: msg.seq, status: msg.job && msg.job.status, conn: conn.n, reason: msg.reason });
          }
          if (resumed) rec.answers[msg.type === 'snapshot' ? 'snapshot' : 'replay']++;
          v.apply(msg);
        }
      });
    }
  }
  const client = new JobwireClient({
    token,
    url: `${server.wsBase}/ws`,
    WebSocket: RecordingWebSocket,
    initialDelayMs: 100,
    maxDelayMs: 1000,
  });
  client.addEventListener('connection', (e) => rec.states.push(e.detail.state));
  rec.client = client;
  return rec;
}

test(`kill -9 ${KILLS} times under 20 jobs watched by resuming clients: gapless across reconnects, true final state`, { timeout: 170_000 }, async (t) => {
  const note = (s) => t.diagnostic(s);
  note(`seed ${SEED} (JW_FAULT_SEED)`);
  const rand = rng(SEED);

  const users = Array.from({ length: USERS }, () => server.user());
  const jobs = [];
  for (let i = 0; i < JOBS; i++) {
    const owner = i % USERS;
    const j = await server.createJob(users[owner].token, { count: countOf(i), amount: 500 + i });
    jobs.push({ id: j.job_id, owner, count: countOf(i) });
  }
  const watchers = [
    ...users.map((u, i) => ({ rec: watcher(`user${i}`, u.token), jobs: jobs.filter((j) => j.owner === i) })),
    ...[1, 2].map((i) => ({ rec: watcher(`admin${i}`, server.adminKey), jobs })),
  ];
  for (const w of watchers) {
    w.rec.client.connect();
    for (const j of w.jobs) w.rec.client.subscribe(j.id);
  }
  const allLive = () => watchers.every((w) => w.rec.client.state === 'live' &&
    w.jobs.every((j) => w.rec.client.job(j.id).sync === 'synced'));
  const until = async (pred, what, timeout = 60_000) => {
    const deadline = Date.now() + timeout;
    while (!pred()) {
      if (Date.now() >= deadline) throw new Error(`${what}: not within ${timeout} ms; clients: ${watchers.map((w) => `${w.rec.label}=${w.rec.client.state}`).join(' ')}`);
      await sleep(20);
    }
  };
  const admin = watchers[watchers.length - 1].rec;
  const running = () => jobs.filter((j) => {
    const v = admin.views.get(j.id);
    return !v || !v.job || !TERMINAL.has(v.job.status);
  }).length;
  // On a slow (loaded) machine the kills can come after every job ended: then one more
  // job is started, watched like the others, so each kill still lands mid-job.
  let extras = 0;
  const oneMore = async () => {
    const count = COUNTS[COUNTS.length - 1];
    const j = await server.createJob(users[0].token, { count, amount: 900 + extras++ });
    const job = { id: j.job_id, owner: 0, count };
    jobs.push(job); // the admins' list
    watchers[0].jobs.push(job);
    for (const w of watchers) if (w.jobs.includes(job)) w.rec.client.subscribe(job.id);
  };

  // Optional: one real page showing a job through the kills.
  let browser = null;
  let page = null;
  const chromium = process.env.JW_CHROMIUM || '/usr/bin/chromium';
  const pageJob = jobs[JOBS - 1]; // the longest
  if (fs.existsSync(chromium)) {
    const b = await import('../browser/lib.mjs');
    browser = await b.launch();
    page = await b.openPage(browser, server, users[pageJob.owner].token, { hash: `#/job/${pageJob.id}` });
    await page.evaluate(() => { window.__sameDocument = 'yes'; });
    page.lib = b;
  } else {
    note(`no Chromium at ${chromium}: the page part is skipped`);
  }

  try {
    await until(allLive, 'every client live with every job synced');
    const port = server.port;
    const kills = [];
    for (let k = 1; k <= KILLS; k++) {
      // Most kills once every client is back in sync, some at once after the restart,
      // while the clients may still be reconnecting or replaying.
      const early = k > 1 && rand() < 0.35;
      if (!early) await until(allLive, `before kill ${k}: every client back in sync`);
      const delay = early ? Math.floor(rand() * 300) : 100 + Math.floor(rand() * 1400);
      await sleep(delay);
      if (running() === 0) await oneMore();
      const live = running();
      assert.ok(live > 0, `kill ${k}: some job is still running (the kill lands mid-job)`);
      await server.kill9();
      kills.push(`${early ? 'early' : 'synced'}+${delay}ms/${live} running`);
      await server.start({ port });
      assert.equal(server.port, port, 'restarted on the same port');
    }
    note(`kills: ${kills.join(', ')}${extras ? `; ${extras} job(s) started for later kills` : ''}`);

    // Every client ends with every job final and at its committed seq.
    const committed = new Map();
    await until(() => jobs.every((j) => admin.views.get(j.id)?.job && TERMINAL.has(admin.views.get(j.id).job.status)),
      'every job final', 150_000);
    for (const j of jobs) committed.set(j.id, await server.getJob(j.id));
    await until(() => allLive() && watchers.every((w) => w.jobs.every((j) => w.rec.client.job(j.id).seq === committed.get(j.id).seq)),
      'every client at the committed seq of every job', 60_000);

    let deltas = 0;
    for (const w of watchers) {
      const { rec } = w;
      const problems = [...rec.views.values()].flatMap((v) => v.problems);
      assert.deepEqual(problems, [], `${rec.label}: no gap, no duplicate, no seq back across ${rec.conns.length} connections`);
      const badJumps = rec.jumps.filter((x) => !TERMINAL.has(x.status) || x.reason === 'resync');
      assert.deepEqual(badJumps, [], `${rec.label}: a snapshot skipped deltas of a job that was still running`);
      assert.ok(rec.conns.length >= 2, `${rec.label}: reconnected (${rec.conns.length} connections)`);
      const errors = rec.msgs.filter((m) => m.msg.type === 'error').map((m) => m.msg);
      assert.deepEqual(errors, [], `${rec.label}: error messages`);
      for (const j of w.jobs) {
        const c = committed.get(j.id);
        assert.equal(c.job.status, 'completed', `job ${j.id}: ${c.job.status} ${c.job.error_message || ''}`);
        assert.equal(c.job.completed_transactions, j.count);
        assert.deepEqual(diffState(rec.client.job(j.id).toJSON(), c), [], `${rec.label}: the client's state of ${j.id} = GET`);
        assert.deepEqual(diffState(rec.views.get(j.id), c), [], `${rec.label}: the recorded stream of ${j.id} = GET`);
        deltas += rec.views.get(j.id).deltaSeqs.length;
      }
      rec.answers.ack = rec.msgs.filter((m) => m.msg.type === 'ack').length;
      note(`${rec.label}: ${rec.conns.length} connections, resumes answered by replay ${rec.answers.replay}, snapshot ${rec.answers.snapshot} (of finished jobs: ${rec.jumps.length} moved forward), ack ${rec.answers.ack}`);
    }

    // Only committed changes reached the clients, exactly as committed.
    for (const j of jobs) {
      const rows = journal(server, j.id);
      const c = committed.get(j.id);
      assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: c.seq }, (_, i) => i + 1), `job ${j.id}: job_events 1..seq`);
      for (const w of watchers) {
        if (!w.jobs.includes(j)) continue;
        assert.deepEqual(diffJournal(w.rec.views.get(j.id).deltas, rows), [], `${w.rec.label}: job ${j.id}: every delta = job_events`);
      }
    }
    note(`${jobs.length} jobs completed, ${KILLS} kills; ${deltas} deltas checked in order across reconnects; every client's final state = GET`);

    // The checker used above catches a lost, a repeated and a reordered delta, on a
    // stream recorded across the kills.
    const longest = admin.msgs.filter((m) => m.msg.job_id === pageJob.id).map((m) => m.msg);
    assertCheckerCatches(pageJob.id, longest);

    if (page) {
      const b = page.lib;
      await b.waitStatus(page, 'completed', 60_000);
      await b.waitText(page, '#d-done', new RegExp(`^${pageJob.count} of ${pageJob.count} transactions done$`));
      await b.until(page, () => ['in-sync', 'live'].includes(document.getElementById('conn').dataset.state), null, 'the page back in sync', 30_000);
      assert.equal(await page.evaluate(() => window.__sameDocument), 'yes', 'the page was never reloaded');
      const done = await page.locator('#d-steps .group.tx .step[data-status="completed"]').count();
      assert.equal(done, 4 * pageJob.count, 'the page shows every payment step completed');
      await b.shot(page, 'fault-kill-loop-completed');
      // The console may show the connection attempts that failed while the server was down,
      // and a request the page had in flight when the server was killed: the kernel closes
      // a killed process's sockets with a reset when unread data is queued, else with a
      // FIN, which Chromium reports as an empty response - or, when the kill fell after
      // the response's head and before the end of its body (written in more than one
      // send), as a body shorter than its Content-Length.
      const other = page.problems.filter((x) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_CONTENT_LENGTH_MISMATCH|ERR_INCOMPLETE_CHUNKED_ENCODING/.test(x));
      assert.deepEqual(other, [], 'no other console errors on the page');
      note(`the page followed job ${pageJob.id} through the kills to "${pageJob.count} of ${pageJob.count} transactions done" without a reload`);
    }
  } finally {
    for (const w of watchers) w.rec.client.close();
    if (browser) await browser.close();
  }
});
