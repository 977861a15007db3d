// drive.mjs - bringing a job forward from the test's side: answering its OTP prompts over
// the socket with the sim inbox's codes, and waiting until a client's view is final and
// at the committed seq. Every wait is bounded and says what it waited for.

import { TERMINAL, sleep } from './util.mjs';


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
