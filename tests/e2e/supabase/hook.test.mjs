// The original design's useJobProgress hook (../shared/reference/), ported to a node
// script with its logic intact: an initial fetch (through jobwire's HTTP API instead of
// PostgREST), then one channel 'job-progress' with three postgres_changes bindings whose
// callbacks replace the job and upsert steps and OTP requests by id. While a jobwire.v1
// client drives the job to its end with OTPs over its socket, the hook's final state must
// equal that client's view and GET /api/jobs/{id}.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, diffState, driveOtpsOverSocket, settle } from '../lib/index.mjs';
import { subscribe, supabase, until } from './lib.mjs';

const server = new Server({ name: 'sb_hook' });

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
});

// useJobProgress(jobId) without React: state lives in an object instead of useState.
function useJobProgress(sb, jobId, token) {
  const state = { job: null, steps: [], otpRequests: [], isLoading: true, error: null };

  const fetchJobData = async () => {
    try {
      const r = await server.api('GET', `/api/jobs/${jobId}`, { token });
      if (r.status !== 200) throw new Error(`GET /api/jobs/${jobId}: ${r.status}`);
      state.job = r.json.job;
      state.steps = [...r.json.steps].sort((a, b) => a.created_at.localeCompare(b.created_at));
      state.otpRequests = [...r.json.otp_requests].sort((a, b) => b.requested_at.localeCompare(a.requested_at));
    } catch (e) {
      state.error = e.message;
    } finally {
      state.isLoading = false;
    }
  };
  const upsert = (list, row) => (list.find((x) => x.id === row.id) ? list.map((x) => (x.id === row.id ? row : x)) : [...list, row]);

  const ready = fetchJobData();
  const channel = sb
    .channel('job-progress')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'job_runs', filter: `id=eq.${jobId}` }, (payload) => {
      state.job = payload.new;
    })
    .on('postgres_changes', { event: '*', schema: 'public', table: 'job_steps', filter: `job_run_id=eq.${jobId}` }, (payload) => {
      state.steps = upsert(state.steps, payload.new);
    })
    .on('postgres_changes', { event: '*', schema: 'public', table: 'otp_requests', filter: `job_run_id=eq.${jobId}` }, (payload) => {
      state.otpRequests = upsert(state.otpRequests, payload.new);
    });
  return { state, channel, ready, unsubscribe: () => channel.unsubscribe() };
}

test("the hook's final state equals jobwire.v1's and the API's", async () => {
  const u = server.user();
  const id = (await server.createJob(u.token, { count: 3 })).job_id;
  await server.waitPaused(id);

  const sb = supabase(server, u.token);
  await sb.realtime.setAuth();
  const hook = useJobProgress(sb, id, u.token);
  assert.equal((await subscribe(hook.channel)).status, 'SUBSCRIBED');
  await hook.ready;
  assert.equal(hook.state.error, null);
  assert.equal(hook.state.isLoading, false);

  const v1 = await server.connect({ token: u.token, label: 'jobwire.v1' });
  await v1.subscribe(id);
  await driveOtpsOverSocket(server, v1, id, { timeout: 120_000 });
  const committed = await settle(server, v1, id, { token: u.token });
  assert.equal(committed.job.status, 'completed');

  // The hook knows no seq; compare rows. Its changes come on another socket than the
  // jobwire.v1 client's: wait until every committed row has arrived, not only the job's end.
  const hookState = () => ({ seq: committed.seq, job: hook.state.job, steps: hook.state.steps, otp_requests: hook.state.otpRequests });
  // (A timeout falls through to the assertion, which shows what differs.)
  await until(() => hook.state.job && diffState(hookState(), committed).length === 0, { what: "the hook's state" }).catch(() => {});
  assert.deepEqual(diffState(hookState(), committed), []);
  assert.deepEqual(diffState(v1.view(id), committed), []);
  assert.ok(hook.state.otpRequests.length >= 5, `OTP requests: ${hook.state.otpRequests.length}`);
  hook.unsubscribe();
  v1.close();
  await sb.removeAllChannels();
});
