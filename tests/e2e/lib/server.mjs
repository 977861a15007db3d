// server.mjs - the real jobwire binary under test: Server starts it on a free 127.0.0.1
// port with a fresh database and random secrets, waits for /readyz, stops or kills it by
// PID, mints users' tokens, and speaks the HTTP API (docs/api.md) with bounded waits.
//
// Ownership: every child process started here is tracked and killed (SIGKILL, by PID)
// when this test process exits, also when a test fails or the runner is interrupted.
// Server logs go to one work folder per test process (work()), removed when everything
// passed unless JW_KEEP_WORK is set, else kept and its path printed.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from './client.mjs';
import { freshDb } from './db.mjs';
import { TERMINAL, env, randomHex, sleep, uuid } from './util.mjs';

// --- cleanup: every child we start is killed when this process ends -----------------

const children = new Set(); // ChildProcess objects still running
let workDir = null;

function killAllChildren() {
  for (const child of children) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  children.clear();
}

process.on('exit', (code) => {
  killAllChildren();
  if (!workDir) return;
  if (code === 0 && !process.exitCode && !process.env.JW_KEEP_WORK) {
    fs.rmSync(workDir, { recursive: true, force: true });
  } else {
    process.stderr.write(`# work folder (server logs) kept: ${workDir}\n`);
  }
});
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.on(sig, () => {
    killAllChildren();
    process.exit(code);
  });
}

export function work() {
  if (!workDir) {
    const name = path.basename(process.argv[1] || 'e2e', '.mjs').replace(/[^A-Za-z0-9_.-]/g, '_');
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), `jw-e2e-${name}-`));
  }
  return workDir;
}

// --- ports ------------------------------------------------------------------------

// A port nothing listens on, below the kernel's ephemeral range (32768 and up here):
// a port from that range (what listen(0) gives) can be handed to any outgoing
// connection between this check and the server's bind, or while a test restarts a
// server on the same port.
function ephemeralFloor() {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function tryListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort() {
  const lo = 20000;
  const hi = Math.max(lo + 1000, ephemeralFloor() - 1);
  for (let i = 0; i < 200; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo + 1));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free port in ${lo}..${hi}`);
}

// --- jobwire ----------------------------------------------------------------------

// Settings in our own environment would change what is tested (same list as
// tests/integration/lib.sh).
const SCRUB = [
  'JOBWIRE_LISTEN', 'JOBWIRE_ADMIN_KEY', 'JOBWIRE_JWT_SECRET', 'JOBWIRE_SECRET_KEY',
  'JOBWIRE_PROVIDER', 'JOBWIRE_ORIGINS', 'JOBWIRE_DEV', 'JOBWIRE_LOG_LEVEL', 'JOBWIRE_DB_MAX_GROUP',
  'JOBWIRE_MAX_BODY', 'JOBWIRE_SIM', 'JOBWIRE_OTP_TIMEOUT_LOGIN', 'JOBWIRE_OTP_TIMEOUT_PAYMENT',
  'JOBWIRE_PROVIDER_TIMEOUT', 'JOBWIRE_RETRY_SCALE', 'JOBWIRE_TLS_CERT', 'JOBWIRE_TLS_KEY',
  'JOBWIRE_EVENTS_RETENTION', 'JOBWIRE_EVENTS_RETENTION_BATCH', 'JOBWIRE_EVENTS_RETENTION_INTERVAL',
  'JOBWIRE_MAX_CONNECTIONS', 'JOBWIRE_FINISHED_JOB_TTL', 'JOBWIRE_MAX_CONNECTIONS_PER_IP',
  'JOBWIRE_CONNECTION_RATE_PER_IP', 'JOBWIRE_MAX_LIVE_JOBS_PER_USER', 'JOBWIRE_JOB_RATE_PER_USER',
  'JOBWIRE_OTP_RATE_PER_USER', 'JOBWIRE_MAX_WS_PER_USER', 'JOBWIRE_WS_MESSAGE_RATE',
  'JOBWIRE_JWT_AUDIENCE', 'JOBWIRE_JWT_ISSUER', 'JOBWIRE_NODE_ID', 'JOBWIRE_NODE_TTL',
];

export class Server {
  // name: a short [a-z0-9_] name, used for the database (jw_e2e_ws_<name>) and the log.
  // sim: the --sim spec. args: more flags. db: reuse that database URL instead of a fresh one.
  constructor({ name, sim = 'latency_ms=20,voucher_polls=1,poll_after_ms=20', args = [], db } = {}) {
    this.name = name;
    this.sim = sim;
    this.args = args;
    this.adminKey = `admin-${randomHex(16)}`;
    this.jwtSecret = `jwt-${randomHex(16)}`;
    this.secretKey = randomHex(32);
    this.db = db || freshDb(`jw_e2e_ws_${name}`);
    this.log = path.join(work(), `${name}.log`);
    this.proc = null;
    this.port = null;
    this.runs = 0;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsBase() {
    return `ws://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.proc ? this.proc.pid : null;
  }

  get running() {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  logTail(lines = 30) {
    try {
      return fs.readFileSync(this.log, 'utf8').split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '(no log)';
    }
  }

  logText() {
    try {
      return fs.readFileSync(this.log, 'utf8');
    } catch {
      return '';
    }
  }

  // Starts jobwire and waits (30 s at most) until /readyz answers 200. With port, listens
  // there (a restart on the same address); otherwise on a free port (retried 3 times).
  async start({ port } = {}) {
    assert.ok(!this.running, 'start: already running');
    const { bin } = env();
    const tries = port ? 40 : 3; // a fixed port may take a moment to be free again
    let lastError = '';
    for (let attempt = 0; attempt < tries; attempt++) {
      const p = port || (await freePort());
      const childEnv = { ...process.env, DATABASE_URL: this.db };
      for (const k of SCRUB) delete childEnv[k];
      const argv = [
        '--listen', `127.0.0.1:${p}`,
        '--admin-key', this.adminKey,
        '--jwt-secret', this.jwtSecret,
        '--secret-key', this.secretKey,
        '--retry-scale', '0.01',
        // One Server is one node: a restart on another port takes its jobs back.
        '--node-id', `e2e-${this.name}`,
        ...(this.sim !== null ? ['--sim', this.sim] : []),
        ...this.args,
      ];
      const fd = fs.openSync(this.log, 'a');
      fs.writeSync(fd, `\n==== run ${++this.runs}: jobwire --listen 127.0.0.1:${p} ${this.sim !== null ? `--sim ${this.sim} ` : ''}${this.args.join(' ')}\n`);
      const child = spawn(bin, argv, { env: childEnv, stdio: ['ignore', fd, fd] });
      fs.closeSync(fd);
      children.add(child);
      child.exited = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
          children.delete(child);
          resolve({ code, signal });
        });
        child.on('error', (err) => {
          children.delete(child);
          resolve({ code: null, signal: null, error: err });
        });
      });
      this.proc = child;
      this.port = p;
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && this.running) {
        try {
          const r = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(2000) });
          await r.arrayBuffer();
          if (r.status === 200) return this;
        } catch {
          /* not listening yet */
        }
        await sleep(50);
      }
      lastError = this.logTail(20);
      const cannotListen = !this.running && /cannot listen/.test(lastError);
      if (this.running) await this.kill9();
      if (!cannotListen) break;
      if (port) await sleep(250);
    }
    throw new Error(`jobwire did not become ready within 30 s; log tail:\n${lastError}`);
  }

  // SIGTERM, then SIGKILL after timeoutMs. Returns {code, signal, killed}.
  async stop({ timeoutMs = 15_000 } = {}) {
    const child = this.proc;
    if (!child || !this.running) return child ? { ...(await child.exited), killed: false } : null;
    process.kill(child.pid, 'SIGTERM');
    let timer;
    const t = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const r = await Promise.race([child.exited, t]);
    clearTimeout(timer);
    if (r === 'timeout') {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      return { ...(await child.exited), killed: true };
    }
    return { ...r, killed: false };
  }

  async kill9() {
    const child = this.proc;
    if (!child) return null;
    if (this.running) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    return child.exited;
  }

  // --- tokens --------------------------------------------------------------------

  // A user's HS256 JWT from jw-mint-token (a negative ttl mints an expired one).
  mint(sub, ttl = 3600, secret = this.jwtSecret) {
    const r = spawnSync(env().mint, [secret, sub, String(ttl)], { encoding: 'utf8', timeout: 10_000 });
    if (r.error || r.status !== 0) {
      throw new Error(`jw-mint-token failed: ${r.error ? r.error.message : r.stderr}`);
    }
    return r.stdout.trim();
  }

  // A new user: {id, token}.
  user(ttl = 3600) {
    const id = uuid();
    return { id, token: this.mint(id, ttl) };
  }

  // --- HTTP ----------------------------------------------------------------------

  async api(method, p, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const r = await fetch(this.base + p, {
      method,
      headers,
      body: payload,
      signal: AbortSignal.timeout(20_000),
    });
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status: r.status, headers: r.headers, text, json };
  }

  // One unlabelled sample of GET /metrics (admin key), as a number; fails when it is absent.
  async metric(name) {
    const r = await this.api('GET', '/metrics', { token: this.adminKey });
    assert.equal(r.status, 200, `GET /metrics: ${r.status}`);
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(r.text);
    assert.ok(m, `${name} in /metrics`);
    return Number(m[1]);
  }

  // POST /api/jobs; returns the 201 job object (job_id, seq, job, steps, otp_requests).
  async createJob(token, { amount = 1500, count = 1, userId, metadata } = {}) {
    const body = { transaction_amount: amount, transaction_count: count };
    if (userId) body.user_id = userId;
    if (metadata) body.metadata = metadata;
    const r = await this.api('POST', '/api/jobs', { token, body });
    assert.equal(r.status, 201, `POST /api/jobs: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json;
  }

  async getJob(id, token = this.adminKey) {
    const r = await this.api('GET', `/api/jobs/${id}`, { token });
    assert.equal(r.status, 200, `GET /api/jobs/${id}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json;
  }

  // The sim's SMS inbox (admin only): [{seq, job_id, otp_request_id, code, ...}].
  async inbox() {
    const r = await this.api('GET', '/api/sim/inbox', { token: this.adminKey });
    assert.equal(r.status, 200, `GET /api/sim/inbox: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json.messages;
  }

  // The newest inbox message for an OTP request, waiting (bounded) until there is one.
  async waitCode(otpRequestId, { timeout = 15_000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const msgs = (await this.inbox()).filter((m) => m.otp_request_id === otpRequestId);
      if (msgs.length) return msgs.reduce((a, b) => (b.seq > a.seq ? b : a));
      if (Date.now() >= deadline) throw new Error(`no inbox code for OTP request ${otpRequestId} within ${timeout} ms`);
      await sleep(30);
    }
  }

  // Polls GET /api/jobs/{id} until pred(job object) holds (bounded); returns it.
  async waitJob(id, pred, { timeout = 30_000, token = this.adminKey, what = 'condition' } = {}) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
      last = await this.getJob(id, token);
      if (pred(last)) return last;
      if (Date.now() >= deadline) {
        throw new Error(`job ${id}: ${what} not reached within ${timeout} ms; last: status=${last.job.status} seq=${last.seq}`);
      }
      await sleep(30);
    }
  }

  // Waits (bounded) until the job waits for a person: an OTP request `requested` (matching
  // otpPred) whose code is in the inbox, and no step in_progress or retrying. Returns the
  // job object; its seq is then stable until someone answers.
  async waitPaused(id, { otpPred = () => true, timeout = 30_000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const j = await this.getJob(id);
      const waiting = j.otp_requests.filter((o) => o.status === 'requested' && otpPred(o));
      const busy = j.steps.some((st) => st.status === 'in_progress' || st.status === 'retrying');
      if (waiting.length && !busy) {
        const inbox = await this.inbox();
        if (waiting.every((o) => inbox.some((m) => m.otp_request_id === o.id))) {
          const again = await this.getJob(id);
          if (again.seq === j.seq) return again;
        }
      }
      if (TERMINAL.has(j.job.status)) throw new Error(`job ${id} ended ${j.job.status} instead of waiting for an OTP`);
      if (Date.now() >= deadline) throw new Error(`job ${id} not waiting for an OTP within ${timeout} ms (status ${j.job.status}, seq ${j.seq})`);
      await sleep(30);
    }
  }

  // Answers every waiting OTP request of a job over HTTP until pred(job object) holds.
  async driveHttp(id, token, pred, { timeout = 60_000 } = {}) {
    const done = new Set();
    const deadline = Date.now() + timeout;
    for (;;) {
      const j = await this.getJob(id, token);
      if (pred(j)) return j;
      if (TERMINAL.has(j.job.status)) throw new Error(`job ${id} ended ${j.job.status} before the awaited state`);
      for (const o of j.otp_requests.filter((x) => x.status === 'requested')) {
        const msgs = (await this.inbox()).filter((m) => m.otp_request_id === o.id);
        if (!msgs.length) continue;
        const m = msgs.reduce((a, b) => (b.seq > a.seq ? b : a));
        const key = `${o.id}/${m.seq}`;
        if (done.has(key)) continue;
        done.add(key);
        const r = await this.api('POST', `/api/otp/${o.id}`, { token, body: { otp: m.code } });
        assert.equal(r.status, 200, `POST /api/otp/${o.id}: ${r.status} ${r.text}`);
      }
      if (Date.now() >= deadline) throw new Error(`job ${id}: driving over HTTP timed out at status ${j.job.status} seq ${j.seq}`);
      await sleep(30);
    }
  }

  // --- WebSocket -----------------------------------------------------------------

  connect(opts = {}) {
    return Client.connect(this, opts);
  }

  tryConnect(opts = {}) {
    return Client.tryConnect(this, opts);
  }
}
