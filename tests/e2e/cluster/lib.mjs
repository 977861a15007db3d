// lib.mjs - helpers for the cluster tests (tests/e2e/cluster/*.test.mjs), on top of the
// e2e harness (../lib/index.mjs): jobwire-sandbox as the provider, N jobwire nodes on one
// database sharing their secrets, and the SQL the checks read (owners, journals, times).
//
// Environment (besides the harness's JOBWIRE_BIN, JW_MINT, DATABASE_URL):
//   JW_SANDBOX  the jobwire-sandbox binary
//
// Conventions as in ../lib/: every wait is bounded and says what it waited for; only
// processes started here are stopped, by PID (the sandbox too, when this process exits).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Server, freePort, freshDb, psql, randomHex, sleep, work } from '../lib/index.mjs';

export * from '../lib/index.mjs';

export const UNFINISHED = "status NOT IN ('completed', 'failed', 'cancelled')";

// --- jobwire-sandbox ----------------------------------------------------------------------

const sandboxes = new Set();
process.on('exit', () => {
  for (const child of sandboxes) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

// Starts jobwire-sandbox on a free 127.0.0.1 port with the --sim spec; resolves when its
// /healthz answers (20 s at most) to {url, stop(), charges(), inbox(), fault(f), faults(),
// clearFaults()}.
export async function startSandbox(sim) {
  const bin = process.env.JW_SANDBOX;
  if (!bin) throw new Error('JW_SANDBOX must name the jobwire-sandbox binary');
  fs.accessSync(bin, fs.constants.X_OK);
  const log = path.join(work(), 'sandbox.log');
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const fd = fs.openSync(log, 'a');
    const child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--sim', sim], { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    sandboxes.add(child);
    let gone = false;
    const exited = new Promise((resolve) => {
      child.on('exit', () => {
        gone = true;
        sandboxes.delete(child);
        resolve();
      });
    });
    // SIGTERM, then SIGKILL after 5 s: a running child would keep this process alive.
    const stop = async () => {
      if (gone) return;
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => !gone && process.kill(child.pid, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    };
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    while (!gone && Date.now() < deadline) {
      try {
        const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
        await r.arrayBuffer();
        if (r.status === 200) {
          return {
            url, child, stop,
            charges: () => charges(url),
            inbox: () => inbox(url),
            fault: (f) => fault(url, f),
            faults: () => faults(url),
            clearFaults: () => clearFaults(url),
          };
        }
      } catch {
        /* not yet */
      }
      await sleep(50);
    }
    lastError = fs.readFileSync(log, 'utf8').split('\n').slice(-5).join('\n');
    if (!gone) process.kill(child.pid, 'SIGKILL');
  }
  throw new Error(`jobwire-sandbox did not start; its log:\n${lastError}`);
}

// The sandbox's record of every idempotency key: {key: {charges, calls, job_id, step_name, ...}}.
async function charges(url) {
  const r = await fetch(`${url}/charges`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(r.status, 200, `GET /charges: ${r.status}`);
  return r.json();
}

// The simulated SMS, oldest first: [{seq, job_id, step_id, otp_type, code, ...}].
async function inbox(url) {
  const r = await fetch(`${url}/inbox`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(r.status, 200, `GET /inbox: ${r.status}`);
  return r.json();
}

// Arms a fault for the next matching /steps calls: {step, mode, count, delay_ms, job?, first_call?}.
async function fault(url, f) {
  const r = await fetch(`${url}/faults`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(f),
    signal: AbortSignal.timeout(20_000),
  });
  assert.equal(r.status, 200, `POST /faults: ${r.status} ${await r.text()}`);
}

// The armed faults: [{step, job, mode, count, delay_ms, first_call}].
async function faults(url) {
  const r = await fetch(`${url}/faults`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(r.status, 200, `GET /faults: ${r.status}`);
  return (await r.json()).faults;
}

async function clearFaults(url) {
  const r = await fetch(`${url}/faults`, { method: 'DELETE', signal: AbortSignal.timeout(20_000) });
  await r.arrayBuffer();
  assert.equal(r.status, 200, `DELETE /faults: ${r.status}`);
}

// --- the cluster ----------------------------------------------------------------------------

// N nodes n1..nN (node ids e2e-n1..) on one fresh database, sharing the admin key, the JWT
// secret and the secret key, as the nodes of a cluster must.
export class Cluster {
  constructor({ name, nodes = 3, args = [] }) {
    this.db = freshDb(`jw_e2e_cluster_${name}`);
    const secrets = { adminKey: `admin-${randomHex(16)}`, jwtSecret: `jwt-${randomHex(16)}`, secretKey: randomHex(32) };
    this.nodes = Array.from({ length: nodes }, (_, i) => {
      const s = new Server({ name: `n${i + 1}`, sim: null, args, db: this.db });
      Object.assign(s, secrets);
      return s;
    });
  }

  get adminKey() {
    return this.nodes[0].adminKey;
  }

  node(id) {
    const s = this.nodes.find((n) => nodeId(n) === id);
    assert.ok(s, `no node ${id}`);
    return s;
  }

  live() {
    return this.nodes.filter((n) => n.running);
  }

  sql(q) {
    return psql(this.db, q);
  }

  // Rows of a query as objects (each row one JSON object).
  rows(q) {
    const out = this.sql(`SELECT coalesce(json_agg(t), '[]') FROM (${q}) t`);
    return JSON.parse(out);
  }
}

export const nodeId = (server) => `e2e-${server.name}`;

// Waits (bounded) until pred() holds; pred may be async. Fails saying what it awaited.
export async function waitFor(pred, { timeout, what, every = 100 }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`not within ${timeout} ms: ${what}`);
    await sleep(every);
  }
}

// Waits (bounded) for a node's process to end; returns {code, signal}.
export async function waitExit(server, { timeout, what }) {
  let timer;
  const t = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), timeout);
  });
  const r = await Promise.race([server.proc.exited, t]);
  clearTimeout(timer);
  if (!r) throw new Error(`${server.name} did not exit within ${timeout} ms: ${what}`);
  return r;
}
