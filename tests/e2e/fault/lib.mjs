// lib.mjs - helpers for the fault tests (tests/e2e/fault/*.test.mjs), on top of the
// e2e harness (../lib/index.mjs: Server, Client, JobView, diffState, ...).
//
// Environment (besides the harness's JOBWIRE_BIN, JW_MINT, DATABASE_URL):
//   JW_PG_SCRIPT  scripts/pg, to stop and start the throwaway cluster (pg_outage only)
//   JW_PG_DIR     that cluster's folder (scripts/test sets both)
//   JW_FAULT_SEED the seed of the pseudo-random kill points (kill_loop; printed)
//
// Conventions as in ../lib/: every wait is bounded and says what it waited for,
// no assertion depends on how fast something happened, only processes started here are
// ever stopped, by PID.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { JobView } from '../lib/index.mjs';

export * from '../lib/index.mjs';

// --- a seeded pseudo-random generator (mulberry32): the same seed, the same kill points -----

export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- the throwaway PostgreSQL cluster (scripts/pg) -------------------------------------

export function pgEnv() {
  const script = process.env.JW_PG_SCRIPT;
  const dir = process.env.JW_PG_DIR;
  if (!script || !dir) {
    throw new Error('JW_PG_SCRIPT and JW_PG_DIR must name scripts/pg and the cluster folder (scripts/test sets them)');
  }
  return { script, dir };
}

// Runs `scripts/pg <cmd>` without blocking the event loop (the clients keep reading).
// Resolves {code, stdout, stderr}; bounded by timeoutMs (then SIGKILLs the script).
export function pg(cmd, { timeoutMs = 90_000 } = {}) {
  const { script, dir } = pgEnv();
  return new Promise((resolve) => {
    const child = spawn(script, [cmd], {
      env: { ...process.env, JW_PG_DIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

// The same, synchronously: for the exit handler that must leave the cluster running.
export function pgSync(cmd) {
  const { script, dir } = pgEnv();
  return spawnSync(script, [cmd], { env: { ...process.env, JW_PG_DIR: dir }, encoding: 'utf8', timeout: 90_000 });
}

// host:port of a postgresql:// URL (to see that the cluster came back where it was).
export function hostPort(url) {
  const m = /^postgres(?:ql)?:\/\/(?:[^@/]*@)?([^/?]*)/.exec(url);
  return m ? m[1] : url;
}

// --- HTTP with an explicit guard ---------------------------------------------------------

// One request with a long failure guard (lib/server.mjs's api() gives up after 20 s,
// shorter than an outage). Resolves {status, text, json} or {error} (no answer within the guard,
// connection refused or closed).
export async function http(server, method, p, { token, body, guardMs = 120_000 } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  try {
    const r = await fetch(server.base + p, { method, headers, body: payload, signal: AbortSignal.timeout(guardMs) });
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status: r.status, text, json, headers: r.headers };
  } catch (e) {
    return { error: e.name === 'TimeoutError' ? `no answer within ${guardMs} ms` : e.message };
  }
}

// Polls /readyz until its status is want (bounded); returns the answers seen meanwhile.
export async function waitReady(server, want, { timeout = 30_000, what } = {}) {
  const seen = [];
  const deadline = Date.now() + timeout;
  for (;;) {
    const r = await http(server, 'GET', '/readyz', { guardMs: 5000 });
    seen.push(r.status ?? r.error);
    if (r.status === want) return { seen, last: r };
    if (Date.now() >= deadline) {
      throw new Error(`/readyz did not answer ${want} (${what || ''}) within ${timeout} ms; answers: ${[...new Set(seen)].join(', ')}; last: ${r.text || r.error}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

// --- the ordering checker, checked ------------------------------------------------------

// Replays a recorded job stream (snapshots and deltas, in arrival order) into a fresh
// JobView and returns its problems.
export function replayProblems(jobId, msgs) {
  const v = new JobView(jobId);
  for (const m of msgs) v.apply(m);
  return v.problems;
}

// The checker the tests rely on must catch what it is there to catch: feeds it a real
// recorded stream (which it must pass) and that stream with a delta lost, a delta
// repeated and two deltas swapped (each of which it must flag).
export function assertCheckerCatches(jobId, msgs) {
  const stream = msgs.filter((m) => m.type === 'snapshot' || m.type === 'delta');
  const deltaIdx = stream.map((m, i) => (m.type === 'delta' ? i : -1)).filter((i) => i >= 0);
  assert.ok(deltaIdx.length >= 3, `checker self-test: job ${jobId} needs 3 deltas, has ${deltaIdx.length}`);
  assert.deepEqual(replayProblems(jobId, stream), [], 'checker self-test: the recorded stream passes');
  // A delta in the middle that another delta follows.
  const pairs = deltaIdx.filter((i) => stream[i + 1] && stream[i + 1].type === 'delta');
  assert.ok(pairs.length > 0, `checker self-test: job ${jobId} has no two deltas in a row`);
  const mid = pairs[Math.floor(pairs.length / 2)];
  const lost = stream.filter((_, i) => i !== mid);
  const repeated = [...stream.slice(0, mid + 1), stream[mid], ...stream.slice(mid + 1)];
  const swapped = [...stream];
  [swapped[mid], swapped[mid + 1]] = [swapped[mid + 1], swapped[mid]];
  for (const [name, s] of [['a lost delta', lost], ['a repeated delta', repeated], ['two deltas swapped', swapped]]) {
    const p = replayProblems(jobId, s);
    assert.ok(p.length > 0, `checker self-test: ${name} must be flagged`);
  }
}

// GET /metrics (admin key) as a Map name -> value (labelled series are summed).
export async function metrics(server) {
  const r = await http(server, 'GET', '/metrics', { token: server.adminKey, guardMs: 10_000 });
  assert.equal(r.status, 200, `GET /metrics: ${r.status} ${r.text || r.error}`);
  const out = new Map();
  for (const line of r.text.split('\n')) {
    const m = /^([a-z_]+)(?:\{[^}]*\})? ([-+0-9.eE]+|NaN)$/.exec(line);
    if (m) out.set(m[1], (out.get(m[1]) || 0) + Number(m[2]));
  }
  return out;
}
