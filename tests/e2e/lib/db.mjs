// db.mjs - the PostgreSQL side of the e2e harness: a fresh database per test file, psql
// queries, and a job's journal (job_events) read back as deltas.
//
// Every call runs the psql client synchronously with a 60 s guard; DATABASE_URL (env())
// names the server, whose databases each test file drops and creates by name.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { env } from './util.mjs';

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
