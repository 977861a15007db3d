// attackers.mjs - the hostile clients of hostile.test.mjs, run in a process of their own
// so their busy loops do not delay the honest client's clock or its event loop.
//
//   node attackers.mjs <json config>
// config: {base, wsBase, port, token, finished: [job ids], ms, skip: [names]}. Runs every
// attack until its stdin closes (at most ms milliseconds), each from a loopback address of its own.
// Prints {"ready":true} on a line once every attack is under way (its socket open; the
// connection flood at the per-address limit), then, at the end, one line of JSON: what
// each attack sent and what it met.
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';

const cfg = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One promise per attack, resolved once it is under way.
const underWay = [];
function whenUnderWay() {
  let resolve;
  underWay.push(new Promise((r) => {
    resolve = r;
  }));
  return resolve;
}

// A WebSocket from a loopback source address; resolves once open (jobwire.v1: once hello came).
function openWs(path, query, from, protocol = 'jobwire.v1') {
  const u = new URL(cfg.wsBase + path);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  const ws = new WebSocket(u.toString(), protocol ? [protocol] : [], { localAddress: from, perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    if (!protocol) ws.on('open', () => resolve(ws));
    else ws.once('message', () => resolve(ws));
  });
}


function rawConnect(port, from) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let done = false;
    const finish = (refused) => {
      if (!done) {
        done = true;
        resolve({ sock, refused });
      }
    };
    sock.on('connect', () => sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    sock.on('data', () => finish(false));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
  });
}

// Opens connections from one address until one is refused; holds the rest until stop.
async function connectionFlood(stop, going) {
  const held = [];
  let refused = 0;
  while (!stop.done && refused === 0 && held.length < 1000) {
    const r = await rawConnect(cfg.port, '127.0.0.9');
    if (r.refused) refused++;
    else held.push(r.sock);
  }
  going();
  while (!stop.done) await sleep(50);
  held.forEach((s) => s.destroy());
  return { held: held.length, refused };
}

// Sends as fast as the socket takes it (a real flood is bounded by TCP, not by memory).
const drained = (ws) => ws.bufferedAmount < 256 * 1024;

// Pings without reading: the server reads it no faster than --ws-message-rate, and its
// replies stay under the queue bound.
async function pingFlood(stop, going) {
  const ws = await openWs('/ws', { token: cfg.token }, '127.0.0.10');
  going();
  ws._socket.pause();
  const ping = JSON.stringify({ type: 'ping', ref: 'x'.repeat(200) });
  let sent = 0;
  while (!stop.done && ws.readyState === WebSocket.OPEN) {
    if (drained(ws)) {
      for (let k = 0; k < 100; k++) ws.send(ping);
      sent += 100;
    }
    await sleep(1);
  }
  ws.terminate();
  return { sent };
}

// Subscribe/unsubscribe pairs over the attacker's finished, evicted jobs (each subscribe
// a database read): answered no faster than --ws-message-rate, reads bounded (busy).
async function subscribeLoop(stop, jobs, going) {
  const ws = await openWs('/ws', { token: cfg.token }, '127.0.0.11');
  going();
  let busy = 0;
  let answers = 0;
  let n = 0;
  const t0 = Date.now();
  ws.on('message', (data) => {
    for (const line of data.toString().split('\n')) {
      const m = JSON.parse(line);
      if (m.ref !== undefined) answers++;
      if (m.code === 'busy') busy++;
    }
  });
  while (!stop.done) {
    if (drained(ws)) {
      for (const id of jobs) {
        ws.send(JSON.stringify({ type: 'subscribe', job_id: id, ref: `s${n}` }));
        ws.send(JSON.stringify({ type: 'unsubscribe', job_id: id, ref: `u${n++}` }));
      }
    }
    await sleep(5);
  }
  const seconds = (Date.now() - t0) / 1000;
  ws.terminate();
  return { pairs: n, answers, busy, seconds };
}

// Supabase channels naming 100 finished jobs each, joined again and again.
async function joinFlood(stop, jobs, going) {
  const ws = await openWs('/realtime/v1/websocket', { apikey: cfg.token, vsn: '1.0.0' }, '127.0.0.12', null);
  going();
  const replies = { ok: 0, error: 0 };
  let closed = null;
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.event === 'phx_reply') replies[m.payload.status === 'ok' ? 'ok' : 'error']++;
  });
  ws.on('close', (code) => {
    closed = code;
  });
  const filter = `id=in.(${jobs.slice(0, 100).join(',')})`;
  let ref = 0;
  while (!stop.done && closed === null) {
    for (let t = 0; t < 10; t++) {
      const topic = `realtime:flood-${t}`;
      const payload = {
        config: { postgres_changes: [{ event: '*', schema: 'public', table: 'job_runs', filter, jobwire_initial_rows: true }] },
        access_token: cfg.token,
      };
      ref++;
      ws.send(JSON.stringify({ topic, event: 'phx_join', payload, ref: String(ref), join_ref: String(ref) }));
    }
    await sleep(20);
  }
  ws.terminate();
  return { joins: ref, ...replies, closed };
}

// Job creations as fast as the server answers, until 429.
async function jobBurst(stop) {
  const agent = new http.Agent({ keepAlive: true, localAddress: '127.0.0.13' });
  const body = JSON.stringify({ transaction_amount: 1, transaction_count: 1 });
  const counts = {};
  while (!stop.done && !counts[429]) {
    const status = await new Promise((resolve) => {
      const req = http.request(`${cfg.base}/api/jobs`, {
        method: 'POST',
        agent,
        headers: { Authorization: `Bearer ${cfg.token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', () => resolve('error'));
      req.end(body);
    });
    counts[status] = (counts[status] || 0) + 1;
  }
  agent.destroy();
  return counts;
}


const stop = { done: false };
const skip = new Set(cfg.skip || []);
const idle = async () => {
  while (!stop.done) await sleep(50);
  return {};
};
const running = Promise.all([
  skip.has('flood') ? idle() : connectionFlood(stop, whenUnderWay()),
  skip.has('ping') ? idle() : pingFlood(stop, whenUnderWay()),
  skip.has('sub') ? idle() : subscribeLoop(stop, cfg.finished.slice(0, 40), whenUnderWay()),
  skip.has('join') ? idle() : joinFlood(stop, cfg.finished, whenUnderWay()),
  skip.has('burst') ? idle() : jobBurst(stop),
]);
Promise.all(underWay).then(() => process.stdout.write('{"ready":true}\n'));
// Until ms passed or our stdin closes (the test's honest job is done), whichever is first.
await Promise.race([sleep(cfg.ms), new Promise((resolve) => {
  process.stdin.on('end', resolve);
  process.stdin.on('close', resolve);
  process.stdin.resume();
})]);
stop.done = true;
const [flood, pings, subs, joins, burst] = await running;
process.stdout.write(`${JSON.stringify({ flood, pings, subs, joins, burst })}\n`);
process.exit(0);
