// util.mjs - the protocol's constants, the environment, ids and small helpers shared by
// every module of the e2e harness (tests/e2e/lib/).
//
// Environment (read by env(); see tests/e2e/README.md):
//   JOBWIRE_BIN   path of the jobwire binary
//   JW_MINT       path of jw-mint-token (tests/tools/mint_token.c)
//   DATABASE_URL  a PostgreSQL server; each file creates (drops first) its own database

import crypto from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

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

// The largest sum of sizes.get(id) over any n consecutive ids (a missing id counts 0): what a
// client can have had unread when a job starts only once all but the n - 1 newest were read.
export function maxWindowSum(sizes, ids, n) {
  let most = 0;
  for (let i = 0; i < ids.length; i++) {
    let sum = 0;
    for (let k = Math.max(0, i - n + 1); k <= i; k++) sum += sizes.get(ids[k]) || 0;
    most = Math.max(most, sum);
  }
  return most;
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
