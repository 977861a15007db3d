// jobwire-client.js - a reusable browser client for the jobwire.v1 WebSocket protocol
// (docs/protocol.md). Plain ES module, no dependencies, no build step; the page
// (app.js) is one user of it, but it works without the page:
//
//   import { JobwireClient } from './jobwire-client.js';
//   const jw = new JobwireClient({ token });
//   jw.addEventListener('connection', (e) => console.log(e.detail.state));
//   jw.addEventListener('job', (e) => render(e.detail.job));
//   jw.connect();
//   jw.subscribe(jobId);
//   const verdict = await jw.submitOtp(otpRequestId, '482913');
//
// What it does for you:
// - authenticates with the first message ({"type":"auth"}), so the token never appears
//   in a URL (and so in no access log);
// - keeps every subscribed job's state: the snapshot, then each delta applied by row id
//   per table (job_runs, job_steps, otp_requests);
// - checks every delta's seq: a duplicate or older one is ignored, a gap re-subscribes
//   with `since` = the last seq applied (the server replays what is missing);
// - reconnects after any drop with exponential backoff and full jitter, and resumes every
//   subscription with `since`, so nothing is missed and nothing is applied twice;
// - reports the connection as `connecting`, `live`, `reconnecting`, `resyncing` (socket
//   back, subscriptions catching up) and `live` again with `resumed: true` (back in sync);
// - `submitOtp()` returns a promise of the server's `otp.result`.
//
// Server frames may carry several messages, one JSON object per line: each is handled.

/** @typedef {'idle'|'connecting'|'live'|'reconnecting'|'resyncing'|'closed'} ConnectionState */

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const PROTOCOL = 'jobwire.v1';

/** An error from the server (`error` message) or from the client itself. */
export class JobwireError extends Error {
  /**
   * @param {string} code e.g. `not_found`, `otp_not_waiting`, `disconnected`, `timeout`, `not_connected`
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'JobwireError';
    /** @type {string} */
    this.code = code;
  }
}

/**
 * One job as the client knows it: rebuilt from its snapshot and every delta since.
 * Rows are the server's rows, unchanged (docs/api.md "The job object").
 */
export class JobState {
  /** @param {string} jobId */
  constructor(jobId) {
    /** @type {string} */
    this.jobId = jobId;
    /** The seq of the last change applied; null before the first snapshot. @type {number|null} */
    this.seq = null;
    /** The job_runs row. @type {object|null} */
    this.job = null;
    /** job_steps rows by id, in creation order. @type {Map<string, object>} */
    this.steps = new Map();
    /** otp_requests rows by id, in request order. @type {Map<string, object>} */
    this.otpRequests = new Map();
    /** Every delta applied, oldest first (at most `maxDeltas`). @type {object[]} */
    this.deltas = [];
    /** `pending` (waiting for the server), `synced`, `resyncing` (gap or reconnect), `error`. */
    this.sync = 'pending';
    /** The server's error for this job (e.g. `not_found`), when sync is `error`. @type {{code:string,message:string}|null} */
    this.error = null;
  }

  /** @returns {boolean} the job reached completed, failed or cancelled */
  get terminal() {
    return !!this.job && TERMINAL.has(this.job.status);
  }

  /** @returns {object[]} steps in creation order */
  stepList() {
    return [...this.steps.values()];
  }

  /** @returns {object[]} OTP requests in request order */
  otpList() {
    return [...this.otpRequests.values()];
  }

  /** OTP requests waiting for the person (status `requested`). @returns {object[]} */
  waitingOtps() {
    return this.otpList().filter((o) => o.status === 'requested');
  }

  /** @internal */
  applySnapshot(msg) {
    this.seq = msg.seq;
    this.job = msg.job || null;
    this.steps = new Map((msg.steps || []).map((r) => [r.id, r]));
    this.otpRequests = new Map((msg.otp_requests || []).map((r) => [r.id, r]));
  }

  /** @internal */
  applyDelta(msg, maxDeltas) {
    this.seq = msg.seq;
    const row = msg.row;
    if (msg.table === 'job_runs') this.job = row;
    else if (msg.table === 'job_steps') this.steps.set(row.id, row);
    else if (msg.table === 'otp_requests') this.otpRequests.set(row.id, row);
    this.deltas.push(msg);
    if (this.deltas.length > maxDeltas) this.deltas.splice(0, this.deltas.length - maxDeltas);
  }

  /** A plain copy of the state: {job_id, seq, job, steps, otp_requests} like GET /api/jobs/{id}. */
  toJSON() {
    return {
      job_id: this.jobId,
      seq: this.seq,
      job: this.job,
      steps: this.stepList(),
      otp_requests: this.otpList(),
    };
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('JobwireClient: pass url (no window.location here)');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * A connection to jobwire that survives drops. Events (all `CustomEvent`, data in `detail`):
 *
 * - `connection` {state, previous, attempt, delayMs?, resumed, code?, reason?}: the
 *   connection state changed. `resumed` is true on the `live` that follows a reconnect
 *   (every subscription is back in sync).
 * - `hello` {userId, limits}: authenticated.
 * - `job` {jobId, job: JobState, cause: 'snapshot'|'delta'|'error', delta?}: a job changed.
 * - `joberror` {jobId, code, message}: a subscription was refused (`not_found`, ...).
 * - `auth` {code, message}: the token was refused or expired; the client stops
 *   reconnecting (state `closed`) until `setToken()` and `connect()`.
 * - `servererror` {code, message, ref?}: any other `error` message.
 */
export class JobwireClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.token a user's JWT (or the admin key)
   * @param {string} [options.url] the WebSocket URL; default `ws(s)://<this host>/ws`
   * @param {typeof WebSocket} [options.WebSocket] a WebSocket implementation (default: the global one)
   * @param {number} [options.initialDelayMs=500] first reconnect delay (before jitter)
   * @param {number} [options.maxDelayMs=10000] longest reconnect delay
   * @param {number} [options.factor=2] backoff multiplier
   * @param {number} [options.pingIntervalMs=20000] a `ping` after this much silence
   * @param {number} [options.pongTimeoutMs=10000] no answer to it in this time: the connection is dropped and reopened
   * @param {number} [options.otpTimeoutMs=30000] submitOtp() gives up (rejects `timeout`) after this long
   * @param {number} [options.maxDeltas=500] deltas kept per job in JobState.deltas
   */
  constructor(options) {
    super();
    if (!options || typeof options.token !== 'string' || !options.token) {
      throw new TypeError('JobwireClient: options.token is required');
    }
    this.token = options.token;
    this.url = options.url || defaultUrl();
    this.WebSocketImpl = options.WebSocket || globalThis.WebSocket;
    this.initialDelayMs = options.initialDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.factor = options.factor ?? 2;
    this.pingIntervalMs = options.pingIntervalMs ?? 20_000;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.otpTimeoutMs = options.otpTimeoutMs ?? 30_000;
    this.maxDeltas = options.maxDeltas ?? 500;

    /** @type {ConnectionState} */
    this.state = 'idle';
    /** The user id from `hello` (null for the admin key). */
    this.userId = null;
    /** The limits from `hello`. */
    this.limits = null;
    /** Reconnect attempts since the last successful authentication. */
    this.attempt = 0;
    /** @type {Map<string, JobState>} */
    this.jobs = new Map();

    this._ws = null;
    this._authed = false;
    this._wasLive = false; // a previous connection reached `live`: the next `live` is a resume
    this._refSeq = 0;
    this._pending = new Map(); // ref -> {resolve, reject, timer, kind, jobId?}
    this._subRefs = new Map(); // jobId -> ref of the subscribe in flight
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._stopped = true;
    this._onOnline = () => {
      if (this.state === 'reconnecting') this._openNow();
    };
  }

  // --- connection -------------------------------------------------------------------

  /** Opens the connection (and keeps it open until `close()`). */
  connect() {
    this._stopped = false;
    if (globalThis.addEventListener) globalThis.addEventListener('online', this._onOnline);
    if (!this._ws) this._open();
  }

  /** Closes for good: no reconnect. Pending submitOtp() promises reject `disconnected`. */
  close() {
    this._stopped = true;
    if (globalThis.removeEventListener) globalThis.removeEventListener('online', this._onOnline);
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._teardown(1000, 'client closed');
    this._setState('closed', {});
  }

  /** Replaces the token (used from the next connection on). */
  setToken(token) {
    this.token = token;
  }

  _setState(state, extra) {
    const previous = this.state;
    if (previous === state && !extra.force) return;
    this.state = state;
    this._emit('connection', { state, previous, attempt: this.attempt, resumed: false, ...extra });
  }

  _open() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._authed = false;
    this._setState(this._wasLive || this.attempt > 0 ? 'reconnecting' : 'connecting', { force: this.attempt > 0 });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, PROTOCOL);
    } catch (e) {
      this._scheduleReconnect(0, String(e && e.message));
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._sendRaw({ type: 'auth', token: this.token });
      this._armPing();
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._armPing();
      if (typeof ev.data !== 'string') return;
      for (const line of ev.data.split('\n')) {
        if (!line) continue;
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          continue; // not ours to fix; the protocol promises JSON
        }
        if (msg && typeof msg === 'object') this._handle(msg);
      }
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._dropped(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close follows */
    };
  }

  _openNow() {
    if (this._stopped || this._ws) return;
    this._open();
  }

  // The socket is gone: fail what waited on it, mark every job as needing a resume, retry.
  _dropped(code, reason) {
    this._clearPing();
    this._authed = false;
    this._subRefs.clear();
    for (const [ref, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new JobwireError('disconnected', 'the connection dropped before the answer arrived'));
      this._pending.delete(ref);
    }
    for (const js of this.jobs.values()) if (js.sync !== 'error') js.sync = 'resyncing';
    if (this._stopped) return;
    if (code === 4401) {
      // The token was refused or expired: retrying with it cannot help.
      this._stopped = true;
      this._setState('closed', { code, reason });
      return;
    }
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * this.factor ** this.attempt);
    // "Full jitter" on the upper half: spread clients out, never retry at once in a loop.
    const delayMs = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt += 1;
    this._setState('reconnecting', { delayMs, code, reason, force: true });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._openNow();
    }, delayMs);
  }

  _teardown(code, reason) {
    this._clearPing();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* closing already */
      }
      this._dropped(code, reason);
    }
  }

  _armPing() {
    this._clearPing();
    if (!this.pingIntervalMs) return;
    this._pingTimer = setTimeout(() => {
      this._sendRaw({ type: 'ping', ref: this._ref('p') });
      this._pongTimer = setTimeout(() => {
        // Nothing heard back: the path is dead even if the socket does not know yet.
        this._teardown(4000, 'no pong');
      }, this.pongTimeoutMs);
    }, this.pingIntervalMs);
  }

  _clearPing() {
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = this._pongTimer = null;
  }

  _ref(prefix) {
    this._refSeq += 1;
    return `${prefix}${this._refSeq}`;
  }

  _sendRaw(msg) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(msg));
    return true;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // --- messages ---------------------------------------------------------------------

  _handle(msg) {
    switch (msg.type) {
      case 'hello':
        this._authed = true;
        this.attempt = 0;
        this.userId = msg.user_id ?? null;
        this.limits = msg.limits || null;
        this._emit('hello', { userId: this.userId, limits: this.limits });
        for (const js of this.jobs.values()) if (js.sync !== 'error') this._sendSubscribe(js);
        this._checkLive();
        return;
      case 'snapshot':
        return this._onSnapshot(msg);
      case 'delta':
        return this._onDelta(msg);
      case 'ack':
        return this._onAck(msg);
      case 'otp.result':
        return this._settle(msg.ref, (p) => p.resolve(msg));
      case 'pong':
        return;
      case 'error':
        return this._onError(msg);
      default:
        // Later versions may add messages: ignore.
    }
  }

  _onSnapshot(msg) {
    const js = this.jobs.get(msg.job_id);
    if (!js) return; // unsubscribed meanwhile
    if (js.seq !== null && msg.seq < js.seq) return; // older than what we have
    js.applySnapshot(msg);
    this._synced(js, msg.ref);
    this._emit('job', { jobId: js.jobId, job: js, cause: 'snapshot' });
  }

  _onDelta(msg) {
    const js = this.jobs.get(msg.job_id);
    if (!js || js.seq === null) return;
    if (msg.seq <= js.seq) return; // a duplicate (replay overlap): already applied
    if (msg.seq !== js.seq + 1) {
      // A gap: we missed something. Ask again from the last seq we have.
      if (js.sync !== 'resyncing') {
        js.sync = 'resyncing';
        this._sendRaw({ type: 'unsubscribe', job_id: js.jobId });
        this._sendSubscribe(js);
        this._checkLive();
      }
      return;
    }
    js.applyDelta(msg, this.maxDeltas);
    this._emit('job', { jobId: js.jobId, job: js, cause: 'delta', delta: msg });
  }

  _onAck(msg) {
    const p = this._pending.get(msg.ref);
    if (p) return this._settle(msg.ref, (x) => x.resolve(msg));
    // The ack that ends a `since` replay.
    for (const [jobId, ref] of this._subRefs) {
      if (ref === msg.ref) {
        const js = this.jobs.get(jobId);
        if (js) {
          this._synced(js, ref);
          this._emit('job', { jobId, job: js, cause: 'resumed' });
        }
      }
    }
  }

  _onError(msg) {
    if (msg.code === 'unauthorized' || msg.code === 'token_expired' || msg.code === 'auth_required') {
      this._emit('auth', { code: msg.code, message: msg.message });
      return; // close 4401 follows
    }
    if (msg.ref !== undefined && this._pending.has(msg.ref)) {
      return this._settle(msg.ref, (p) => p.reject(new JobwireError(msg.code, msg.message)));
    }
    for (const [jobId, ref] of this._subRefs) {
      if (ref === msg.ref) {
        this._subRefs.delete(jobId);
        if (msg.code === 'unsubscribed') return;
        const js = this.jobs.get(jobId);
        if (js) {
          js.sync = 'error';
          js.error = { code: msg.code, message: msg.message };
          this._emit('joberror', { jobId, code: msg.code, message: msg.message });
          this._emit('job', { jobId, job: js, cause: 'error' });
        }
        this._checkLive();
        return;
      }
    }
    this._emit('servererror', { code: msg.code, message: msg.message, ref: msg.ref });
  }

  _settle(ref, fn) {
    const p = this._pending.get(ref);
    if (!p) return;
    this._pending.delete(ref);
    clearTimeout(p.timer);
    fn(p);
  }

  _synced(js, ref) {
    if (ref !== undefined && this._subRefs.get(js.jobId) === ref) this._subRefs.delete(js.jobId);
    js.sync = 'synced';
    js.error = null;
    this._checkLive();
  }

  _sendSubscribe(js) {
    const ref = this._ref('s');
    const msg = { type: 'subscribe', job_id: js.jobId, ref };
    if (js.seq !== null) msg.since = js.seq;
    this._subRefs.set(js.jobId, ref);
    if (js.sync !== 'resyncing') js.sync = 'pending';
    this._sendRaw(msg);
  }

  // `live` once authenticated and every subscription is answered; `resyncing` before.
  _checkLive() {
    if (!this._authed) return;
    const behind = [...this.jobs.values()].some((j) => j.sync === 'resyncing');
    if (behind) {
      this._setState('resyncing', {});
      return;
    }
    if (this.state !== 'live') {
      const resumed = this._wasLive;
      this._wasLive = true;
      this._setState('live', { resumed });
    }
  }

  // --- public API -------------------------------------------------------------------

  /**
   * Watches a job: its state is kept in `jobs.get(jobId)` and every change is a `job`
   * event. Subscribing twice is harmless. Survives reconnects (resumed with `since`).
   * @param {string} jobId
   * @returns {JobState}
   */
  subscribe(jobId) {
    let js = this.jobs.get(jobId);
    if (js && js.sync !== 'error') return js;
    if (!js) {
      js = new JobState(jobId);
      this.jobs.set(jobId, js);
    }
    js.sync = 'pending';
    js.error = null;
    if (this._authed) this._sendSubscribe(js);
    return js;
  }

  /**
   * Stops watching a job and forgets its state.
   * @param {string} jobId
   */
  unsubscribe(jobId) {
    if (!this.jobs.delete(jobId)) return;
    this._subRefs.delete(jobId);
    if (this._authed) this._sendRaw({ type: 'unsubscribe', job_id: jobId, ref: this._ref('u') });
    this._checkLive();
  }

  /**
   * The state of a subscribed job, or undefined.
   * @param {string} jobId
   * @returns {JobState|undefined}
   */
  job(jobId) {
    return this.jobs.get(jobId);
  }

  /**
   * Answers an OTP request with the code the person received. Resolves with the server's
   * `otp.result` ({ok, error?, message?, attempts_left}); `ok: false` is a verdict (wrong
   * code, ...), not a rejection. Rejects with a JobwireError: the server's code
   * (`invalid_otp` for a value that is not 4-10 digits, `otp_not_waiting`, `not_found`),
   * or `not_connected`, `disconnected` (the answer was lost: the code may have been
   * judged; the job's state shows the outcome), `timeout`.
   * @param {string} otpRequestId
   * @param {string} value 4 to 10 digits
   * @returns {Promise<{type:'otp.result', ref:string, ok:boolean, error?:string, message?:string, attempts_left:number}>}
   */
  submitOtp(otpRequestId, value) {
    return new Promise((resolve, reject) => {
      if (!this._authed) {
        reject(new JobwireError('not_connected', 'not connected to the server right now'));
        return;
      }
      const ref = this._ref('o');
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new JobwireError('timeout', 'no answer from the server in time'));
      }, this.otpTimeoutMs);
      this._pending.set(ref, { resolve, reject, timer });
      this._sendRaw({ type: 'otp.submit', otp_request_id: otpRequestId, value: String(value), ref });
    });
  }
}
