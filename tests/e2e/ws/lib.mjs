// lib.mjs - the harness shared by the jobwire.v1 WebSocket tests (tests/e2e/ws/*.test.mjs).
//
// Real processes, real sockets: each test file starts the jobwire binary on a free
// 127.0.0.1 port with a fresh PostgreSQL database of its own, talks to it over HTTP
// (docs/api.md) and WebSocket (docs/protocol.md, the contract these tests check), and
// kills it by PID at the end, also when a test fails or the runner is interrupted.
//
// Environment:
//   JOBWIRE_BIN   path of the jobwire binary
//   JW_MINT       path of jw-mint-token (tests/tools/mint_token.c)
//   DATABASE_URL  a PostgreSQL server; each file creates (drops first) its own database
//   JW_KEEP_WORK  set: keep the work folder (server logs) even when everything passed
//
// Conventions:
//   - every wait is bounded and fails with a message that says what was awaited and
//     what arrived instead; no assertion depends on how fast something happened;
//   - every frame a client receives is recorded (raw text and parsed lines, with the
//     arrival time), so a test can check afterwards what the server sent.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

export { sleep };

export const PROTOCOL = 'jobwire.v1';
// True in scripts/test's sanitized pass: ASan keeps freed memory in quarantine (256 MB by
// default) and adds shadow memory, so the server's RSS says nothing about its own use.
export const SANITIZED = !!process.env.ASAN_OPTIONS;
export const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
// docs/protocol.md "Errors": the only codes an `error` message may carry.
export const ERROR_CODES = new Set([
  'bad_json', 'bad_message', 'unknown_type', 'binary_not_supported', 'frame_too_large',
  'auth_required', 'unauthorized', 'token_expired', 'not_found', 'invalid_job_id',
  'invalid_since', 'too_many_subscriptions', 'not_subscribed', 'invalid_otp',
  'otp_not_waiting', 'unavailable', 'busy', 'rate_limited', 'too_many_connections', 'unsubscribed',
]);
export const SERVER_TYPES = new Set(['hello', 'snapshot', 'delta', 'otp.result', 'ack', 'error', 'pong']);

// --- environment ------------------------------------------------------------------

function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (see tests/e2e/README.md)`);
  return v;
}

export function env() {
  const bin = requireEnv('JOBWIRE_BIN');
  const mint = requireEnv('JW_MINT');
  const databaseUrl = requireEnv('DATABASE_URL');
  for (const [n, p] of [['JOBWIRE_BIN', bin], ['JW_MINT', mint]]) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
    } catch {
      throw new Error(`${n}=${p} is not an executable file`);
    }
  }
  return { bin, mint, databaseUrl };
}

export const uuid = () => crypto.randomUUID();
export const randomHex = (bytes) => crypto.randomBytes(bytes).toString('hex');

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

// --- PostgreSQL -------------------------------------------------------------------

// DATABASE_URL with its database replaced by name (URI or key=value form).
export function dbUrl(name) {
  const url = env().databaseUrl;
  const m = /^(postgres(?:ql)?:\/\/[^/?]*)(\/[^?]*)?(\?.*)?$/.exec(url);
  if (m) return `${m[1]}/${name}${m[3] || ''}`;
  return `${url} dbname=${name}`;
}

export function psql(url, sql) {
  const r = spawnSync('psql', ['-XqAt', '-v', 'ON_ERROR_STOP=1', url, '-c', sql], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.error) throw new Error(`psql: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

// Drops and creates database name on DATABASE_URL's server; returns its URL.
export function freshDb(name) {
  assert.match(name, /^[a-z][a-z0-9_]{0,62}$/, 'database name');
  const admin = env().databaseUrl;
  const r = spawnSync(
    'psql',
    ['-XqAt', '-v', 'ON_ERROR_STOP=1', admin,
      '-c', 'SET client_min_messages = warning',
      '-c', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`,
      '-c', `CREATE DATABASE ${name}`],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (r.error || r.status !== 0) {
    throw new Error(`cannot create database ${name}: ${r.error ? r.error.message : r.stderr.trim()}`);
  }
  return dbUrl(name);
}

// --- ports ------------------------------------------------------------------------

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
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
  'JOBWIRE_JWT_AUDIENCE', 'JOBWIRE_JWT_ISSUER',
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

// --- a recording WebSocket client ---------------------------------------------------

let refCounter = 0;
export const newRef = (prefix = 'r') => `${prefix}${++refCounter}`;

export class UpgradeRefused extends Error {
  constructor(status, body) {
    super(`upgrade refused: HTTP ${status} ${String(body).slice(0, 200)}`);
    this.status = status;
    this.body = body;
  }
}

export class Client {
  // opts: token (sent as ?token=), origin, protocol (default jobwire.v1; null: none),
  // path (default /ws), headers, label, localAddress (a loopback source address).
  constructor(server, ws, label) {
    this.server = server;
    this.ws = ws;
    this.label = label || 'client';
    this.t0 = performance.now();
    this.frames = []; // {at, text} or {at, binary: Buffer}
    this.messages = []; // {i, at, frame, msg}
    this.badLines = []; // lines that were not a JSON object, frames that were binary
    this.closed = null; // {code, reason, at}
    this.waiters = new Set();
    this.views = new Map(); // job_id -> JobView, fed with every snapshot/delta
    this.errorEvents = [];
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', (code, reason) => this.onClose(code, reason));
    ws.on('error', (err) => this.errorEvents.push(err.message));
  }

  static url(server, { token, path: p = '/ws', query } = {}) {
    const u = new URL(server.wsBase + p);
    if (token !== undefined && token !== null) u.searchParams.set('token', token);
    if (query) for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u.toString();
  }

  // Resolves {client} when the upgrade succeeds, {refused: status, body} when the server
  // answers the upgrade with an HTTP status, {error: message} when the handshake fails
  // otherwise (e.g. a wrong subprotocol, a reset).
  static tryConnect(server, opts = {}) {
    const { origin, headers = {}, label, timeout = 10_000 } = opts;
    const protocol = opts.protocol === undefined ? PROTOCOL : opts.protocol;
    const wsOpts = {
      handshakeTimeout: timeout,
      perMessageDeflate: false,
      maxPayload: 256 * 1024 * 1024,
      headers,
    };
    if (origin) wsOpts.origin = origin;
    if (opts.localAddress) wsOpts.localAddress = opts.localAddress; // a loopback source address
    const ws = new WebSocket(Client.url(server, opts), protocol === null ? [] : [protocol], wsOpts);
    const client = new Client(server, ws, label);
    return new Promise((resolve) => {
      let settled = false;
      const settle = (v) => {
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      ws.on('open', () => settle({ client }));
      ws.on('unexpected-response', (req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        const done = () => {
          settle({ refused: res.statusCode, body, headers: res.headers });
          req.destroy();
        };
        res.on('end', done);
        res.on('error', done);
        setTimeout(done, 2000).unref();
      });
      ws.on('error', (err) => settle({ error: err.message }));
      ws.on('close', (code) => settle({ error: `closed during the handshake (${code})` }));
      setTimeout(() => settle({ error: 'handshake timed out' }), timeout + 1000).unref();
    });
  }

  static async connect(server, opts = {}) {
    const r = await Client.tryConnect(server, opts);
    if (r.client) return r.client;
    if (r.refused) throw new UpgradeRefused(r.refused, r.body);
    throw new Error(`WebSocket connect failed: ${r.error}`);
  }

  // Connects with ?token= and waits for hello.
  static async open(server, token, opts = {}) {
    const c = await Client.connect(server, { ...opts, token });
    await c.waitFor((m) => m.type === 'hello', { what: 'hello' });
    return c;
  }

  now() {
    return performance.now() - this.t0;
  }

  onFrame(data, isBinary) {
    const at = this.now();
    if (isBinary) {
      this.frames.push({ at, binary: Buffer.from(data) });
      this.badLines.push({ at, line: '(a binary frame)' });
      return;
    }
    const text = data.toString('utf8');
    const frame = this.frames.push({ at, text }) - 1;
    const lines = text.split('\n');
    if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop(); // a trailing newline
    for (const line of lines) {
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        this.badLines.push({ at, line });
        continue;
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
        this.badLines.push({ at, line });
        continue;
      }
      const entry = { i: this.messages.length, at, frame, msg };
      this.messages.push(entry);
      if ((msg.type === 'snapshot' || msg.type === 'delta') && typeof msg.job_id === 'string') {
        this.view(msg.job_id).apply(msg);
      }
    }
    this.notify();
  }

  onClose(code, reason) {
    this.closed = { code, reason: reason.toString(), at: this.now() };
    this.notify();
  }

  notify() {
    for (const w of [...this.waiters]) w.check();
  }

  // The JobView of a job (created empty, or adopted: a view carried over from another
  // connection, so this one must continue it without a gap).
  view(jobId, adopt) {
    if (adopt) {
      adopt.jobId = jobId;
      this.views.set(jobId, adopt);
      return adopt;
    }
    let v = this.views.get(jobId);
    if (!v) {
      v = new JobView(jobId);
      this.views.set(jobId, v);
    }
    return v;
  }

  get cursor() {
    return this.messages.length;
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  sendRaw(data, { binary = false } = {}) {
    this.ws.send(data, { binary });
  }

  // Waits for the first message at index >= from with pred(msg, entry). Rejects at the
  // deadline, or when the connection closes first (unless closeOk: then resolves null).
  waitFor(pred, { from = 0, timeout = 10_000, what = 'a message', closeOk = false } = {}) {
    return new Promise((resolve, reject) => {
      let scanned = from;
      const w = {
        check: () => {
          for (; scanned < this.messages.length; scanned++) {
            const e = this.messages[scanned];
            if (pred(e.msg, e)) {
              finish();
              resolve(e.msg);
              return;
            }
          }
          if (this.closed) {
            finish();
            if (closeOk) resolve(null);
            else reject(new Error(`${this.label}: connection closed (${this.closed.code} ${this.closed.reason}) while waiting for ${what}; last: ${this.tail()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.label}: no ${what} within ${timeout} ms; last messages: ${this.tail()}`));
      }, timeout);
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(w);
      };
      this.waiters.add(w);
      w.check();
    });
  }

  // Messages (from index from) that answer ref: any message whose ref equals it.
  waitRef(ref, opts = {}) {
    return this.waitFor((m) => m.ref === ref, { what: `an answer to ref ${JSON.stringify(ref)}`, ...opts });
  }

  // Sends obj with a fresh ref (unless it has one) and returns the answer carrying it.
  async request(obj, opts = {}) {
    const msg = { ...obj };
    if (msg.ref === undefined) msg.ref = newRef(obj.type ? obj.type[0] : 'r');
    const from = this.cursor;
    this.send(msg);
    return this.waitRef(msg.ref, { from, ...opts });
  }

  // ping with a fresh ref; resolves the pong. Proves the connection still works.
  async ping(opts = {}) {
    const ref = newRef('p');
    const from = this.cursor;
    this.send({ type: 'ping', ref });
    const m = await this.waitFor((x) => x.ref === ref, { from, what: `pong ${ref}`, ...opts });
    assert.equal(m.type, 'pong', `${this.label}: ping ${ref} answered with ${JSON.stringify(m)}`);
    return m;
  }

  // The next `error` message from index from.
  nextError(from, opts = {}) {
    return this.waitFor((m) => m.type === 'error', { from, what: 'an error message', ...opts });
  }

  // Subscribes and waits for the first message of the job (snapshot, or a replayed
  // delta with since), or an error with the ref. Returns that message.
  async subscribe(jobId, { since, ref = newRef('s'), timeout = 10_000 } = {}) {
    const msg = { type: 'subscribe', job_id: jobId, ref };
    if (since !== undefined) msg.since = since;
    const from = this.cursor;
    this.send(msg);
    return this.waitFor(
      (m) => (m.type === 'error' && m.ref === ref) || ((m.type === 'snapshot' || m.type === 'delta') && m.job_id === jobId),
      { from, timeout, what: `the first message of job ${jobId} after subscribe ${ref}` },
    );
  }

  // Waits for the close; returns {code, reason}.
  async waitClose(timeout = 10_000) {
    if (this.closed) return this.closed;
    await new Promise((resolve, reject) => {
      const w = {
        check: () => {
          if (this.closed) {
            clearTimeout(timer);
            this.waiters.delete(w);
            resolve();
          }
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.label}: not closed within ${timeout} ms; last: ${this.tail()}`));
      }, timeout);
      this.waiters.add(w);
    });
    return this.closed;
  }

  // Waits until the client's view of a job has seq >= seq.
  waitSeq(jobId, seq, opts = {}) {
    return this.waitFor(() => this.view(jobId).seq !== null && this.view(jobId).seq >= seq, {
      what: `job ${jobId} at seq ${seq} (have ${this.view(jobId).seq})`,
      ...opts,
    });
  }

  // Waits until the client's view of a job is in a terminal status.
  waitTerminal(jobId, opts = {}) {
    return this.waitFor(() => {
      const v = this.views.get(jobId);
      return !!v && !!v.job && TERMINAL.has(v.job.status);
    }, { what: `job ${jobId} in a final status`, ...opts });
  }

  jobMessages(jobId) {
    return this.messages.filter((e) => e.msg.job_id === jobId).map((e) => e.msg);
  }

  tail(n = 5) {
    return JSON.stringify(this.messages.slice(-n).map((e) => e.msg)).slice(0, 1500);
  }

  close(code = 1000) {
    try {
      this.ws.close(code);
    } catch {
      /* already closing */
    }
  }

  terminate() {
    this.ws.terminate();
  }

  // Closes and waits (bounded) for the close to complete.
  async closeAndWait(timeout = 5000) {
    if (this.closed) return this.closed;
    this.close();
    try {
      return await this.waitClose(timeout);
    } catch {
      this.terminate();
      return this.waitClose(2000);
    }
  }
}

// --- the job as a client sees it -----------------------------------------------------

const TABLES = new Set(['job_runs', 'job_steps', 'otp_requests']);

function clone(x) {
  return structuredClone(x);
}

// Applies snapshots and deltas the way docs/protocol.md says a client should, and records
// every way the stream breaks the contract in problems (empty when all was right).
export class JobView {
  constructor(jobId) {
    this.jobId = jobId;
    this.seq = null;
    this.job = null;
    this.steps = new Map(); // id -> row, in creation order
    this.otps = new Map(); // id -> row, in request order
    this.problems = [];
    this.snapshots = []; // {seq, reason, ref}
    this.deltaSeqs = []; // seq of every delta applied, in arrival order
    this.deltas = []; // the delta messages applied
  }

  problem(text) {
    this.problems.push(`job ${this.jobId}: ${text}`);
  }

  apply(msg) {
    if (msg.type === 'snapshot') this.applySnapshot(msg);
    else if (msg.type === 'delta') this.applyDelta(msg);
  }

  applySnapshot(s) {
    if (!Number.isInteger(s.seq) || s.seq < 0) this.problem(`snapshot seq ${s.seq} is not an integer >= 0`);
    if (this.seq !== null && s.seq < this.seq) this.problem(`snapshot seq ${s.seq} goes back from ${this.seq}`);
    if (!s.job || typeof s.job !== 'object') this.problem('snapshot without a job object');
    if (!Array.isArray(s.steps) || !Array.isArray(s.otp_requests)) this.problem('snapshot without steps/otp_requests arrays');
    this.snapshots.push({ seq: s.seq, reason: s.reason, ref: s.ref, afterDeltas: this.deltaSeqs.length });
    this.seq = s.seq;
    this.partial = false;
    // Messages are parsed afresh for every frame and never changed: rows are shared, not copied.
    this.job = s.job;
    this.steps = new Map((s.steps || []).map((r) => [r.id, r]));
    this.otps = new Map((s.otp_requests || []).map((r) => [r.id, r]));
  }

  applyDelta(d) {
    if (this.seq === null) {
      this.problem(`delta seq ${d.seq} before any snapshot`);
    } else if (d.seq !== this.seq + 1) {
      this.problem(`delta seq ${d.seq} after ${this.seq} (${d.seq <= this.seq ? 'a duplicate or going back' : 'a gap'})`);
    }
    if (!Number.isInteger(d.ts) || d.ts < 1e15) this.problem(`delta ${d.seq}: ts ${d.ts} is not microseconds since the epoch`);
    if (!TABLES.has(d.table)) this.problem(`delta ${d.seq}: unknown table ${d.table}`);
    if (d.op !== 'INSERT' && d.op !== 'UPDATE') this.problem(`delta ${d.seq}: op ${d.op}`);
    const row = d.row;
    if (!row || typeof row !== 'object' || typeof row.id !== 'string') {
      this.problem(`delta ${d.seq}: row is not an object with an id`);
      this.seq = d.seq;
      return;
    }
    this.deltaSeqs.push(d.seq);
    this.deltas.push(d);
    this.seq = Math.max(this.seq ?? 0, d.seq);
    if (d.table === 'job_runs') {
      if (row.id !== this.jobId) this.problem(`delta ${d.seq}: job_runs row of another job ${row.id}`);
      if (d.op === 'INSERT' && this.job) this.problem(`delta ${d.seq}: INSERT of the job row that exists`);
      if (d.op === 'UPDATE' && !this.job && !this.partial) this.problem(`delta ${d.seq}: UPDATE of a job row not seen`);
      this.job = row;
      return;
    }
    const map = d.table === 'job_steps' ? this.steps : this.otps;
    if (row.job_run_id !== this.jobId) this.problem(`delta ${d.seq}: ${d.table} row of job ${row.job_run_id}`);
    if (d.op === 'INSERT' && map.has(row.id)) this.problem(`delta ${d.seq}: INSERT of ${d.table} ${row.id} that exists`);
    if (d.op === 'UPDATE' && !map.has(row.id) && !this.partial) this.problem(`delta ${d.seq}: UPDATE of ${d.table} ${row.id} not seen`);
    map.set(row.id, row);
  }

  // A copy that goes on independently (e.g. for a second connection resuming from here).
  clone() {
    const v = new JobView(this.jobId);
    v.seq = this.seq;
    v.job = clone(this.job);
    v.steps = new Map([...this.steps].map(([k, r]) => [k, clone(r)]));
    v.otps = new Map([...this.otps].map(([k, r]) => [k, clone(r)]));
    return v;
  }

  // An empty view at seq (0: a client that has seen nothing and asks for every delta).
  // partial: the client is known to lack rows from before seq, so an UPDATE of a row it
  // never saw is not a problem (only the seq order is checked).
  static at(jobId, seq, { partial = false } = {}) {
    const v = new JobView(jobId);
    v.seq = seq;
    v.partial = partial;
    return v;
  }

  state() {
    return { seq: this.seq, job: this.job, steps: [...this.steps.values()], otp_requests: [...this.otps.values()] };
  }
}

// --- comparing a view with the committed state (GET /api/jobs/{id}) --------------------

const TS_RE = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$/;

// A timestamp as microseconds since the epoch: memory writes "…Z", PostgreSQL "+00:00"
// with trailing zeros trimmed (docs/api.md): the same instant compares equal.
function normTs(s) {
  const m = TS_RE.exec(s);
  if (!m) return s;
  const ms = Date.parse(`${m[1]}T${m[2]}${m[4]}`);
  if (Number.isNaN(ms)) return s;
  const micro = (m[3] || '').padEnd(6, '0').slice(0, 6);
  return `@${BigInt(ms) * 1000n + BigInt(micro)}us`;
}

export function normalize(v) {
  if (typeof v === 'string') return normTs(v);
  if (Array.isArray(v)) return v.map(normalize);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = normalize(v[k]);
    return o;
  }
  return v;
}

// Differences between a view's state and a job object (rows compared by id); [] when equal.
export function diffState(view, committed) {
  const out = [];
  const st = view.state ? view.state() : view;
  if (st.seq !== committed.seq) out.push(`seq: client ${st.seq}, committed ${committed.seq}`);
  try {
    assert.deepStrictEqual(normalize(st.job), normalize(committed.job));
  } catch (e) {
    out.push(`job row differs: ${e.message.slice(0, 1200)}`);
  }
  for (const [name, mine, theirs] of [
    ['steps', st.steps, committed.steps],
    ['otp_requests', st.otp_requests, committed.otp_requests],
  ]) {
    const a = new Map(mine.map((r) => [r.id, r]));
    const b = new Map(theirs.map((r) => [r.id, r]));
    for (const id of b.keys()) if (!a.has(id)) out.push(`${name} ${id}: missing on the client`);
    for (const id of a.keys()) if (!b.has(id)) out.push(`${name} ${id}: on the client, not committed`);
    for (const [id, r] of a) {
      if (!b.has(id)) continue;
      try {
        assert.deepStrictEqual(normalize(r), normalize(b.get(id)));
      } catch (e) {
        out.push(`${name} ${id} differs: ${e.message.slice(0, 1200)}`);
      }
    }
  }
  return out;
}

// Rows a (partial) view holds that differ from the committed ones (by id); [] when equal.
export function diffKnownRows(view, committed) {
  const out = [];
  const all = new Map([...committed.steps, ...committed.otp_requests].map((r) => [r.id, r]));
  if (view.job) {
    try {
      assert.deepStrictEqual(normalize(view.job), normalize(committed.job));
    } catch (e) {
      out.push(`job row differs: ${e.message.slice(0, 800)}`);
    }
  }
  for (const r of [...view.steps.values(), ...view.otps.values()]) {
    if (!all.has(r.id)) out.push(`row ${r.id}: not committed`);
    else {
      try {
        assert.deepStrictEqual(normalize(r), normalize(all.get(r.id)));
      } catch (e) {
        out.push(`row ${r.id} differs: ${e.message.slice(0, 800)}`);
      }
    }
  }
  return out;
}

// The journal (job_events) of a job as deltas: [{seq, ts, table, op, row}], seq order.
export function journal(server, jobId) {
  assert.match(jobId, /^[0-9a-f-]{36}$/);
  const out = psql(server.db, `SELECT coalesce(json_agg(json_build_object(
      'seq', seq,
      'ts', floor(extract(epoch FROM ts))::bigint * 1000000 + (extract(microseconds FROM ts))::bigint % 1000000,
      'table', table_name, 'op', op, 'row', row_data) ORDER BY seq), '[]')
    FROM job_events WHERE job_run_id = '${jobId}'`);
  return JSON.parse(out);
}

// Differences between delta messages and the journal rows of the same seqs.
export function diffJournal(deltas, rows) {
  const bySeq = new Map(rows.map((r) => [r.seq, r]));
  const out = [];
  for (const d of deltas) {
    const r = bySeq.get(d.seq);
    if (!r) {
      out.push(`delta ${d.seq}: not in job_events`);
      continue;
    }
    try {
      assert.deepStrictEqual(
        normalize({ seq: d.seq, ts: d.ts, table: d.table, op: d.op, row: d.row }),
        normalize(r),
      );
    } catch (e) {
      out.push(`delta ${d.seq} differs from job_events: ${e.message.slice(0, 800)}`);
    }
  }
  return out;
}

// Waits until the client's view of a job is terminal and at the committed seq, then
// returns the committed job object. Bounded; throws with what was last seen.
export async function settle(server, client, jobId, { timeout = 30_000, token } = {}) {
  await client.waitTerminal(jobId, { timeout });
  const deadline = Date.now() + timeout;
  for (;;) {
    const committed = await server.getJob(jobId, token || server.adminKey);
    const v = client.view(jobId);
    if (committed.seq === v.seq) return committed;
    if (Date.now() >= deadline) {
      throw new Error(`job ${jobId}: client at seq ${v.seq}, committed seq ${committed.seq} after ${timeout} ms`);
    }
    if (committed.seq > v.seq) {
      await client.waitSeq(jobId, committed.seq, { timeout: Math.max(1, deadline - Date.now()) }).catch(() => {});
    } else {
      await sleep(30);
    }
  }
}

// --- answering OTPs over the socket ---------------------------------------------------

// Answers every `requested` OTP request the client's view of jobId shows, reading codes
// from the sim inbox and sending otp.submit on client; stops when the view is terminal.
// Returns {results: [otp.result...], codes: [every code submitted]}.
export async function driveOtpsOverSocket(server, client, jobId, { timeout = 60_000 } = {}) {
  const deadline = Date.now() + timeout;
  const done = new Set();
  const results = [];
  const codes = [];
  for (;;) {
    const v = client.view(jobId);
    if (v.job && TERMINAL.has(v.job.status)) return { results, codes };
    let acted = false;
    for (const o of [...v.otps.values()].filter((x) => x.status === 'requested')) {
      const msgs = (await server.inbox()).filter((m) => m.otp_request_id === o.id);
      if (!msgs.length) continue;
      const m = msgs.reduce((a, b) => (b.seq > a.seq ? b : a));
      const key = `${o.id}/${m.seq}`;
      if (done.has(key)) continue;
      done.add(key);
      codes.push(m.code);
      const res = await client.request({ type: 'otp.submit', otp_request_id: o.id, value: m.code }, { timeout: 20_000 });
      results.push(res);
      acted = true;
    }
    if (Date.now() >= deadline) {
      throw new Error(`job ${jobId}: not final after ${timeout} ms of answering OTPs (status ${v.job && v.job.status}, seq ${v.seq})`);
    }
    if (!acted) {
      const from = client.cursor;
      await client
        .waitFor((m) => m.job_id === jobId, { from, timeout: 200, what: 'a change' })
        .catch(() => {});
    }
  }
}

// A code standing alone in a text: not part of a longer number, id or fraction.
export function containsCode(text, code) {
  return new RegExp(`(^|[^0-9A-Za-z.])${code}([^0-9A-Za-z]|$)`).test(text);
}

// Asserts that a client's recorded stream broke no rule: every line a JSON object of a
// known type, every error code from the list, every job view without problems.
export function assertCleanStream(client) {
  assert.deepEqual(client.badLines, [], `${client.label}: lines that are not JSON objects`);
  const unknown = client.messages.filter((e) => !SERVER_TYPES.has(e.msg.type)).map((e) => e.msg);
  assert.deepEqual(unknown, [], `${client.label}: messages of unknown types`);
  const badCodes = client.messages
    .filter((e) => e.msg.type === 'error' && !ERROR_CODES.has(e.msg.code))
    .map((e) => e.msg);
  assert.deepEqual(badCodes, [], `${client.label}: error codes not in docs/protocol.md`);
  const problems = [...client.views.values()].flatMap((v) => v.problems);
  assert.deepEqual(problems, [], `${client.label}: the delta stream broke the ordering rules`);
}

// Runs fn with at most n in flight.
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}
