// view.mjs - the job as a client sees it: JobView applies snapshots and deltas the way
// docs/protocol.md says a client should and records every broken rule (a gap, a
// duplicate, a seq going back, an UPDATE of a row never seen).
//
// A view keeps the row objects of the messages it applied (messages are never changed
// after parsing); clone() makes a deep copy that goes on independently.

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
