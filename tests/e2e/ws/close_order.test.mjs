// Nothing after a close frame (RFC 6455 5.5.1): a client subscribed to a running job sends
// a frame with a reserved opcode; libwebsockets answers that protocol error with a close
// frame (1002) of its own and waits for the client's. jobwire's publish rounds write to
// the socket themselves (server/wsconn.c), so they must stop when lws' close begins: the
// close frame is the last frame the client gets, although the job goes on producing deltas
// while the client waits before answering the close.
//
// A raw socket client: the npm ws client neither sends reserved opcodes nor keeps reading
// after a close frame.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { after, test } from 'node:test';
import { Server, sleep } from '../lib/index.mjs';

const ANSWER_AFTER_MS = 300; // the client's wait before it answers the close: rounds go on meanwhile

let server;
after(async () => {
  if (server) await server.stop();
});

// A client frame: FIN, the opcode, masked as a client's must be.
function clientFrame(opcode, payload = Buffer.alloc(0)) {
  assert.ok(payload.length < 65536);
  const mask = crypto.randomBytes(4);
  const head = payload.length < 126
    ? Buffer.from([0x80 | opcode, 0x80 | payload.length])
    : Buffer.from([0x80 | opcode, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// A raw WebSocket connection: the upgrade, then every server frame as {opcode, payload}.
function connect(port, token) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const frames = [];
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const state = { sock, frames, ended: false, waiters: new Set() };
    const wake = () => {
      for (const w of state.waiters) w();
    };
    sock.on('error', (e) => (upgraded ? null : reject(e)));
    sock.on('close', () => {
      state.ended = true;
      wake();
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        if (!/^HTTP\/1\.1 101 /.test(head)) {
          reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
          return;
        }
        upgraded = true;
        resolve(state);
      }
      for (;;) {
        if (buf.length < 2) break;
        const opcode = buf[0] & 0x0f;
        assert.equal(buf[1] & 0x80, 0, 'a server frame is not masked');
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) break;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) break;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + len) break;
        frames.push({ opcode, payload: buf.subarray(at, at + len) });
        buf = buf.subarray(at + len);
      }
      wake();
    });
    const key = crypto.randomBytes(16).toString('base64');
    sock.write(`GET /ws?token=${encodeURIComponent(token)} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`
      + `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n`
      + 'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jobwire.v1\r\n\r\n');
  });
}

function waitUntil(state, pred, what, timeout = 30_000) {
  return new Promise((resolve, reject) => {
    const w = () => {
      if (pred()) {
        clearTimeout(timer);
        state.waiters.delete(w);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      state.waiters.delete(w);
      reject(new Error(`not within ${timeout} ms: ${what}`));
    }, timeout);
    state.waiters.add(w);
    w();
  });
}

const texts = (state) => state.frames.filter((f) => f.opcode === 1)
  .flatMap((f) => f.payload.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)));

test('after lws closes on a protocol error, no frame follows its close frame', async () => {
  server = new Server({ name: 'ws_close_order', sim: 'latency_ms=5,otp=none,voucher_polls=1,poll_after_ms=5' });
  await server.start();
  const u = server.user();
  const c = await connect(server.port, u.token);
  await waitUntil(c, () => texts(c).some((m) => m.type === 'hello'), 'hello');
  const job = await server.createJob(u.token, { count: 50 });
  c.sock.write(clientFrame(1, Buffer.from(JSON.stringify({ type: 'subscribe', job_id: job.job_id, ref: 's1' }))));
  await waitUntil(c, () => texts(c).filter((m) => m.type === 'delta').length >= 5, 'five deltas of the running job');

  c.sock.write(clientFrame(3)); // a reserved opcode: a protocol error
  await waitUntil(c, () => c.frames.some((f) => f.opcode === 8), 'the server\'s close frame');
  await sleep(ANSWER_AFTER_MS);
  const running = await server.getJob(job.job_id);
  c.sock.write(clientFrame(8, Buffer.from([0x03, 0xea]))); // the client's close (1002)
  await waitUntil(c, () => c.ended, 'the server ends the connection');

  const closeAt = c.frames.findIndex((f) => f.opcode === 8);
  const close = c.frames[closeAt];
  assert.equal(close.payload.readUInt16BE(0), 1002, 'closed as a protocol error');
  assert.deepEqual(c.frames.slice(closeAt + 1).map((f) => f.opcode), [], 'no frame after the close frame');
  // The test means something only if the job went on while the client waited.
  assert.ok(running.seq > Math.max(...texts(c).filter((m) => m.job_id === job.job_id).map((m) => m.seq)),
    `the job produced deltas after the close frame (seq ${running.seq})`);
  assert.ok(server.running, 'the server is still running');
});
