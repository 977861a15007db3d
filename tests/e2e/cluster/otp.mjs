// otp.mjs - a person typing the SMS codes of a cluster test on a node that does not run the
// job (issue 14, "Prove it": OTPs typed on a node other than the owner, each consumed once).
//
// The typist polls the sandbox's SMS inbox; for each code it finds the OTP request that
// waits for it (job_steps -> otp_requests), picks a live node other than the job's owner
// and POSTs /api/otp/{id} there with the job's user's token; the owner gets it through the
// inbox. Once a code was accepted (200), it is typed again on the third node: that must be
// refused (409: the request no longer waits). Like a person who looks at the request's
// state again, the typist settles a code only on a 200, a 404, or a request that is over
// (verified, failed, expired); anything else is typed again on a later round once the
// request waits: a 503/504 (the owner died before its verdict), a code whose request does
// not wait yet, and a 409 while another submission of it is being checked (docs/api.md),
// which may turn out wrong and leave the request waiting again.
//
// The newest SMS of a step is the code its request waits for, provided the SMS list was
// read after the request's row: the provider sends the SMS before it answers, and the
// row is written after the answer. A payment call held past --provider-timeout has sent
// an SMS too, and its retry sends a new code; an SMS list read before the retry's SMS,
// matched with the retry's request row, would type the stale code (refused as wrong).

import { sleep } from './lib.mjs';

export function startTypist(cluster, sandbox, users, { every = 100 } = {}) {
  const byUser = new Map(users.map((u) => [u.id, u]));
  const done = new Set(); // sandbox message seqs settled
  const busy = new Set(); // message seqs being typed
  const answers = []; // {otp, node, status, replay}
  const avoid = new Set(); // nodes not to type on (paused)
  let stopped = false;
  const post = (node, id, token, code) =>
    node.api('POST', `/api/otp/${id}`, { token, body: { otp: code } }).catch((e) => ({ status: e.name }));
  const type = async (m, req) => {
    const others = cluster.live().filter((n) => !avoid.has(n) && `e2e-${n.name}` !== req.owner_node);
    if (!others.length) return;
    const node = others[Math.floor(Math.random() * others.length)];
    const token = byUser.get(req.user_id).token;
    const r = await post(node, req.id, token, m.code);
    answers.push({ otp: req.id, node: node.name, status: r.status, replay: false });
    if (r.status === 200) {
      done.add(m.seq);
      // The same code again, on every other node: it must be refused.
      await Promise.all(cluster.live().filter((n) => !avoid.has(n) && n !== node).map(async (n) => {
        const r2 = await post(n, req.id, token, m.code);
        answers.push({ otp: req.id, node: n.name, status: r2.status, replay: true });
      }));
    } else if (r.status === 404) {
      done.add(m.seq);
    }
  };
  // The newest message of each step; the older ones are settled (superseded).
  const newestOf = (msgs) => {
    const newest = new Map();
    for (const m of msgs) if (!newest.has(m.step_id) || newest.get(m.step_id).seq < m.seq) newest.set(m.step_id, m);
    for (const m of msgs) if (newest.get(m.step_id) !== m) done.add(m.seq);
    return newest;
  };
  const round = async () => {
    const steps = [...newestOf(await sandbox.inbox()).values()]
      .filter((m) => !done.has(m.seq) && !busy.has(m.seq)).map((m) => m.step_id);
    if (!steps.length) return;
    const reqs = new Map(cluster.rows(`SELECT DISTINCT ON (o.job_step_id) o.job_step_id AS step, o.id, o.status,
        o.requested_at, r.owner_node, r.user_id FROM otp_requests o JOIN job_runs r ON r.id = o.job_run_id
       WHERE o.job_step_id = ANY('{${steps.join(',')}}'::uuid[])
       ORDER BY o.job_step_id, o.requested_at DESC, o.id`).map((r) => [r.step, r]));
    // Read again now that the rows are known: it holds the code each of them waits for.
    const newest = newestOf(await sandbox.inbox());
    for (const step of steps) {
      const m = newest.get(step);
      const req = reqs.get(step);
      if (!m || !req || done.has(m.seq) || busy.has(m.seq)) continue;
      if (req.status !== 'requested') {
        // Over (verified, failed, expired): its code is settled, but an SMS sent after
        // the request was made is for the next request of the step, not written yet.
        // (The sandbox's clock against the node's: both run on this one host.)
        if (req.status !== 'received' && Date.parse(m.sent_at) <= Date.parse(req.requested_at)) done.add(m.seq);
        continue;
      }
      busy.add(m.seq);
      type(m, req).finally(() => busy.delete(m.seq));
    }
  };
  // A round that fails (the sandbox or psql busy for a moment) is tried again; the first
  // error of a run that never recovers is what stop() throws.
  let error = null;
  let failures = 0;
  const loop = (async () => {
    while (!stopped) {
      try {
        await round();
        failures = 0;
      } catch (e) {
        error = error || e;
        if (++failures >= 50) break;
      }
      await sleep(every);
    }
    while (busy.size) await sleep(20);
  })();
  return {
    answers,
    avoid,
    async stop() {
      stopped = true;
      await loop;
      if (failures) throw new Error(`the typist stopped on: ${error && error.stack}`);
    },
  };
}
