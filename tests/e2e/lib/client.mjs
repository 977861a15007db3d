// client.mjs - a recording jobwire.v1 WebSocket client (the npm ws package).
//
// Client records every frame and every line of it (split on `\n`, parsed, with its
// arrival time), feeds snapshots and deltas to a JobView per job, and offers bounded
// waits that fail saying what was awaited and what arrived instead.

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { PROTOCOL, TERMINAL } from './util.mjs';
import { JobView } from './view.mjs';

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
