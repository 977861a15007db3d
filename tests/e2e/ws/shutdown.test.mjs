// Shutdown (docs/protocol.md "Close codes"): SIGTERM to jobwire closes every WebSocket with
// 1001 (going away), subscribed or not yet authenticated, and the process exits.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, Server } from '../lib/index.mjs';

let server;
before(async () => {
  server = new Server({ name: 'shutdown' });
  await server.start();
});
after(async () => {
  if (server) await server.stop();
});

test('10. SIGTERM with clients connected: each sees close 1001; jobwire exits', { timeout: 60_000 }, async () => {
  const u = server.user();
  const { job_id: id } = await server.createJob(u.token);
  const subscribed = await Client.open(server, u.token, { label: 'subscribed' });
  assert.equal((await subscribed.subscribe(id)).type, 'snapshot');
  const idle = await Client.open(server, u.token, { label: 'idle' });
  const admin = await Client.open(server, server.adminKey, { label: 'admin' });
  const pending = await server.connect({ label: 'before auth' });
  await idle.ping();

  const stopped = server.stop({ timeoutMs: 20_000 });
  const closes = await Promise.all([subscribed, idle, admin, pending].map((c) => c.waitClose(20_000)));
  const exit = await stopped;
  for (const [i, c] of [subscribed, idle, admin, pending].entries()) {
    assert.equal(closes[i].code, 1001, `${c.label}: close ${closes[i].code} ${closes[i].reason}`);
  }
  assert.equal(exit.killed, false, 'jobwire exits on SIGTERM by itself');
  assert.equal(exit.code, 0, `exit status ${exit.code} (${exit.signal})`);
});
