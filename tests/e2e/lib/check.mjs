// check.mjs - what a test asserts about a stream: a client's view against the committed
// state (GET /api/jobs/{id}, rows compared by id, timestamps as instants), deltas against
// the journal (job_events), codes in text, and the protocol's rules over a whole stream.

import assert from 'node:assert/strict';
import { ERROR_CODES, SERVER_TYPES } from './util.mjs';

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
