// SIGTERM while PostgreSQL is unreachable: a request waiting for its commit is answered
// (503 unavailable, as docs/api.md says) before the process exits, not cut off with an
// empty reply. PostgreSQL is made unreachable by a TCP proxy between jobwire and the
// shared cluster that this test cuts, so the cluster itself is never stopped.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { Server, freshDb } from '../lib/index.mjs';

// A loopback TCP proxy to PostgreSQL; cut() drops every connection and refuses new ones.
class Proxy {
  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.cutOff = false;
    this.server = net.createServer((client) => {
      if (this.cutOff) {
        client.destroy();
        return;
      }
      const upstream = net.connect(target.port, target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
  }

  cut() {
    this.cutOff = true;
    for (const s of this.sockets) s.destroy();
  }

  close() {
    this.cut();
    this.server.close();
  }
}

let proxy;
let server;

before(async () => {
  const url = new URL(freshDb('jw_e2e_fault_shutdown'));
  proxy = new Proxy({ host: url.hostname, port: Number(url.port) });
  url.port = String(await proxy.listen());
  server = new Server({ name: 'fault_shutdown', db: url.toString() });
  await server.start();
});

after(async () => {
  if (server) await server.kill9();
  proxy.close();
});

test('a request waiting on an unreachable PostgreSQL is answered 503 at SIGTERM', async () => {
  const u = server.user();
  await server.createJob(u.token, { count: 1 }); // the path works while PostgreSQL is there
  proxy.cut();
  const pending = server
    .api('POST', '/api/jobs', { token: u.token, body: { transaction_amount: 100, transaction_count: 1 } })
    .catch((e) => ({ error: e.cause ? e.cause.code || e.cause.message : e.message }));
  // The request is in when its job's batch waits in the store's queue (bounded guard).
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = await server.api('GET', '/metrics', { token: server.adminKey });
    if (/^jobwire_db_queued_batches [1-9]/m.test(m.text)) break;
    assert.ok(Date.now() < deadline, 'the job waits for its commit');
    await new Promise((r) => setTimeout(r, 50));
  }
  const stopped = server.stop({ timeoutMs: 20_000 });
  const answer = await pending;
  const exit = await stopped;
  assert.equal(answer.error, undefined, `an answer, not a cut connection (${answer.error})`);
  assert.equal(answer.status, 503, answer.text);
  assert.equal(answer.json.error.code ?? answer.json.code, 'unavailable', answer.text);
  assert.equal(exit.killed, false, 'it exited by itself after SIGTERM');
});
