// docs/supabase-migration.md's example runs as written: the script is taken from the
// page itself, run with node against a real server while a job runs to its end, and
// its output must show the job's progress, its steps, the OTPs it asked for (one already
// waiting when it starts among them), and its end.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Server } from '../lib/index.mjs';
import { until } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const guide = path.join(here, '..', '..', '..', 'docs', 'supabase-migration.md');
// Inside tests/e2e so that its imports resolve to tests/e2e/node_modules.
const script = path.join(here, `.guide-example-${process.pid}.mjs`);
const server = new Server({ name: 'sb_guide' });

before(async () => {
  await server.start();
});

after(async () => {
  fs.rmSync(script, { force: true });
  await server.stop();
});

// The complete lines a stream has carried so far, however its chunks were cut: a chunk
// may hold several lines, or end in the middle of one (kept until its newline comes).
function lines(stream) {
  const got = [];
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop();
    got.push(...parts);
  });
  stream.on('end', () => {
    if (partial) got.push(partial);
    partial = '';
  });
  return got;
}

function example() {
  const text = fs.readFileSync(guide, 'utf8');
  const m = /<!-- example: job-progress\.mjs -->\s*```js\n([\s\S]*?)```\s*<!-- end example -->/.exec(text);
  assert.ok(m, 'the guide holds the example between its markers');
  return m[1];
}

test("the migration guide's example follows a job to its end", async () => {
  fs.writeFileSync(script, example());
  const u = server.user();
  const id = (await server.createJob(u.token, { count: 2 })).job_id;
  // OTPs are waiting before the example starts: only the binding's initial rows can show
  // them (a new user missed one when the guide's binding had none).
  const paused = await server.waitPaused(id);
  const waiting = paused.otp_requests.filter((o) => o.status === 'requested');
  assert.ok(waiting.length >= 1, 'an OTP waits before the example starts');

  const child = spawn(process.execPath, [script], {
    env: { ...process.env, JOBWIRE_URL: server.base, JOBWIRE_TOKEN: u.token, JOB_ID: id },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = lines(child.stdout);
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  // 'close', not 'exit': the output has been read to its end only then.
  let ended = false;
  const exited = new Promise((resolve) =>
    child.on('close', (code) => {
      ended = true;
      resolve(code);
    }),
  );
  const shown = () => `stdout:\n${out.join('\n')}\nstderr:\n${err}`;
  try {
    // SUBSCRIBED, then the job's current row as its first job line: each waited for as a
    // whole line, in this order, whatever chunks the pipe delivered them in.
    await until(() => out.some((l) => l.startsWith('SUBSCRIBED')) || ended, { what: 'SUBSCRIBED from the example' });
    const subscribed = out.findIndex((l) => l.startsWith('SUBSCRIBED'));
    assert.ok(subscribed >= 0, `the example printed SUBSCRIBED; ${shown()}`);
    const firstJob = () => out.findIndex((l) => l.startsWith('job '));
    await until(() => firstJob() >= 0 || ended, { what: 'the first job line' });
    assert.ok(firstJob() > subscribed, `a job line after SUBSCRIBED; ${shown()}`);
    assert.equal(out[firstJob()], 'job validating 0%', 'the initial row comes first');
    await server.driveHttp(id, u.token, (j) => j.job.status === 'completed', { timeout: 90_000 });
    let timer;
    const code = await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(() => resolve('did not exit within 30 s'), 30_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `the example's exit status; stderr: ${err}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  assert.equal(out.filter((l) => l.startsWith('job ')).at(-1), 'job completed 100%', shown());
  for (const want of ['OTP wanted: payment', 'step process_payment completed', 'step redeem_amazon_vouchers completed']) {
    assert.ok(out.includes(want), `"${want}" in:\n${shown()}`);
  }
  assert.equal(out.filter((l) => l === 'step process_payment completed').length, 2, 'two transactions');
  // One line per OTP the job asked for: those waiting at the join (initial rows), then
  // each new one as it came.
  const count = (xs) => xs.reduce((m, x) => m.set(x, (m.get(x) || 0) + 1), new Map());
  const asked = count((await server.getJob(id)).otp_requests.map((o) => `OTP wanted: ${o.otp_type}`));
  assert.deepEqual(count(out.filter((l) => l.startsWith('OTP wanted: '))), asked, `every OTP shown once:\n${shown()}`);
  for (const o of waiting) assert.ok(asked.has(`OTP wanted: ${o.otp_type}`));
});
