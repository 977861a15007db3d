// publish.mjs - the publisher for the peers of scripts/bench-ws.
//
//   node publish.mjs --target nchan|ws --port P --jobs-file F --rate N --duration S [--size B]
//                    [--window N]
//
// Sends --rate delta-shaped messages per second in total, round-robin over the jobs of
// --jobs-file, for --duration seconds, each shaped like a jobwire delta:
//   {"type":"delta","job_id":"<id>","seq":<1,2,...>,"ts":<now, us since epoch>,
//    "table":"job_steps","op":"UPDATE","row":{"pad":"..."}}
// padded to about --size bytes (default 600, a jobwire delta's size). ts is the
// wall clock (Date.now) refined with the monotonic clock, in microseconds.
// nchan: POST http://127.0.0.1:P/pub/<job>, keep-alive; with --window N (N > 1) pipelined,
// up to N requests in flight on one connection per channel, else at most one in flight
// per channel (either way nchan sees each channel's messages in order). ws: one WebSocket to
// ws://127.0.0.1:P/pub. Prints "published N in S s (R/s), behind M" on stderr.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, all) => (i % 2 ? a : [...a, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
const target = args.target;
const port = Number(args.port);
const jobs = fs.readFileSync(args['jobs-file'], 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
const rate = Number(args.rate);
const duration = Number(args.duration);
const size = Number(args.size || 600);
const window = Number(args.window || 1); // nchan: POSTs in flight per channel (pipelined)
if (!['nchan', 'ws'].includes(target) || !(port > 0) || !jobs.length || !(rate > 0) || !(duration > 0)) {
  process.stderr.write('usage: node publish.mjs --target nchan|ws --port P --jobs-file F --rate N --duration S [--size B]\n');
  process.exit(2);
}
const epoch0 = BigInt(Date.now()) * 1000n;
const hr0 = process.hrtime.bigint();
const nowUs = () => epoch0 + (process.hrtime.bigint() - hr0) / 1000n;
const seq = new Map(jobs.map((j) => [j, 0]));
const pad = 'x'.repeat(Math.max(0, size - 170));
function message(job) {
  const s = seq.get(job) + 1;
  seq.set(job, s);
  return `{"type":"delta","job_id":"${job}","seq":${s},"ts":${nowUs()},"table":"job_steps","op":"UPDATE","row":{"pad":"${pad}"}}`;
}

let sent = 0;
let behind = 0;
let send;
let ws;
if (target === 'ws') {
  ws = new WebSocket(`ws://127.0.0.1:${port}/pub`, { perMessageDeflate: false });
  await new Promise((res, rej) => ws.once('open', res).once('error', rej));
  send = (job) => ws.send(message(job));
} else if (window > 1) {
  // Pipelined: one keep-alive connection per channel, up to --window POSTs in flight on
  // it. nginx answers the requests of a connection in order, so each channel still sees
  // its messages in seq order, and the publisher is not held to one round trip each.
  const conns = new Map();
  const open = (job) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    const c = { sock, inflight: 0, queued: 0, buf: Buffer.alloc(0), need: -1 };
    sock.on('error', (e) => {
      process.stderr.write(`publish: ${e.message}\n`);
      process.exit(1);
    });
    sock.on('data', (d) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      // Each answer: headers up to a blank line, then Content-Length bytes.
      for (;;) {
        if (c.need < 0) {
          const end = c.buf.indexOf('\r\n\r\n');
          if (end < 0) break;
          const head = c.buf.subarray(0, end).toString('latin1');
          if (!/^HTTP\/1\.1 20[0-9]/.test(head)) {
            process.stderr.write(`publish: ${head.split('\r\n')[0]}\n`);
            process.exit(1);
          }
          const m = /\r\ncontent-length: *(\d+)/i.exec(head);
          c.need = m ? Number(m[1]) : 0;
          c.buf = c.buf.subarray(end + 4);
        }
        if (c.buf.length < c.need) break;
        c.buf = c.buf.subarray(c.need);
        c.need = -1;
        c.inflight--;
        while (c.queued > 0 && c.inflight < window) {
          c.queued--;
          write(job, c);
        }
      }
    });
    conns.set(job, c);
    return c;
  };
  const write = (job, c) => {
    const body = message(job);
    c.inflight++;
    c.sock.write(`POST /pub/${job} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  };
  for (const j of jobs) open(j);
  await Promise.all([...conns.values()].map((c) => new Promise((res) => c.sock.once('connect', res))));
  send = (job) => {
    const c = conns.get(job);
    if (c.inflight >= window) {
      c.queued++;
      behind++;
    } else write(job, c);
  };
} else {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const queued = new Map(jobs.map((j) => [j, 0]));
  const busy = new Set();
  const post = (job) => {
    busy.add(job);
    // The message (and its ts) is made when the request leaves, not when it was due.
    const body = message(job);
    const req = http.request(
      { host: '127.0.0.1', port, path: `/pub/${job}`, method: 'POST', agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => {
          busy.delete(job);
          const q = queued.get(job);
          if (q > 0) {
            queued.set(job, q - 1);
            post(job);
          }
        });
      },
    );
    req.on('error', (e) => {
      process.stderr.write(`publish: ${e.message}\n`);
      process.exit(1);
    });
    req.end(body);
  };
  send = (job) => {
    if (busy.has(job)) {
      queued.set(job, queued.get(job) + 1);
      behind++;
    } else post(job);
  };
}

const t0 = performance.now();
let k = 0;
await new Promise((resolve) => {
  const tick = () => {
    const el = (performance.now() - t0) / 1000;
    if (el >= duration) return resolve();
    const due = Math.floor(el * rate);
    while (sent < due) {
      send(jobs[k]);
      k = (k + 1) % jobs.length;
      sent++;
    }
    setImmediate(tick);
  };
  tick();
});
const el = (performance.now() - t0) / 1000;
process.stderr.write(`published ${sent} in ${el.toFixed(2)} s (${(sent / el).toFixed(0)}/s), queued behind in-flight POSTs: ${behind}\n`);
if (ws) {
  await new Promise((r) => setTimeout(r, 200));
  ws.close();
}
setTimeout(() => process.exit(0), 500);
