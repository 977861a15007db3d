// Origin (docs/protocol.md "Connecting"): a browser's Origin must be one of --origins
// (default: the listen address, and localhost on its port when that is loopback) or the
// upgrade is refused (the connection is dropped
// during the handshake; an HTTP error status is a refusal too); a client that sends no
// Origin is allowed. The check holds even with a good token.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server } from '../lib/index.mjs';

let server; // default origins: the listen address
let custom; // --origins https://app.example.com,http://127.0.0.1:3000
let user;
before(async () => {
  server = new Server({ name: 'origin' });
  await server.start();
  user = server.user();
  custom = new Server({ name: 'origin_custom', args: ['--origins', 'https://app.example.com,http://127.0.0.1:3000'] });
  await custom.start();
});
after(async () => {
  await Promise.all([server && server.stop(), custom && custom.stop()]);
});

// The upgrade did not happen: dropped during the handshake, or answered with an HTTP error.
const refused = (r) => !r.hello && (r.error !== undefined || (r.refused >= 400 && r.refused < 500));

async function opens(srv, origin) {
  const r = await srv.tryConnect({ token: srv === server ? user.token : srv.adminKey, origin });
  if (!r.client) return r;
  const h = await r.client.waitFor((m) => m.type === 'hello', { what: 'hello' });
  await r.client.closeAndWait();
  return { hello: h };
}

test('9a. Origin: http://evil.example is refused', { timeout: 20_000 }, async () => {
  const r = await opens(server, 'http://evil.example');
  assert.ok(refused(r), `got ${JSON.stringify(r).slice(0, 200)}`);
});

test('9b. other Origins that are not the listen address are refused', { timeout: 20_000 }, async () => {
  for (const origin of [
    `http://localhost:${server.port + 1}`,
    `https://localhost:${server.port}`,
    `http://127.0.0.1:${server.port + 1}`,
    `https://127.0.0.1:${server.port}`,
    `http://127.0.0.1:${server.port}.evil.example`,
    'null',
  ]) {
    const r = await opens(server, origin);
    assert.ok(refused(r), `${origin}: got ${JSON.stringify(r).slice(0, 200)}`);
  }
});

test('9c. the listen address as Origin is allowed', { timeout: 20_000 }, async () => {
  const r = await opens(server, `http://127.0.0.1:${server.port}`);
  assert.ok(r.hello, `got ${JSON.stringify(r).slice(0, 200)}`);
  assert.equal(r.hello.user_id, user.id);
});

test('9c2. on a loopback listen address, localhost on its port is allowed too (a new user opens the page so)', { timeout: 20_000 }, async () => {
  const r = await opens(server, `http://localhost:${server.port}`);
  assert.ok(r.hello, `got ${JSON.stringify(r).slice(0, 200)}`);
  assert.equal(r.hello.user_id, user.id);
});

test('9d. no Origin (a non-browser client) is allowed', { timeout: 20_000 }, async () => {
  const r = await opens(server, undefined);
  assert.ok(r.hello, `got ${JSON.stringify(r).slice(0, 200)}`);
});

test('9e. --origins replaces the default: its entries are allowed, the listen address is not', { timeout: 20_000 }, async () => {
  for (const origin of ['https://app.example.com', 'http://127.0.0.1:3000']) {
    const r = await opens(custom, origin);
    assert.ok(r.hello, `${origin}: got ${JSON.stringify(r).slice(0, 200)}`);
  }
  for (const origin of [`http://127.0.0.1:${custom.port}`, `http://localhost:${custom.port}`, 'http://app.example.com', 'http://evil.example']) {
    const r = await opens(custom, origin);
    assert.ok(refused(r), `${origin}: got ${JSON.stringify(r).slice(0, 200)}`);
  }
  const none = await opens(custom, undefined);
  assert.ok(none.hello, 'no Origin still allowed');
});
