// publish.mjs - the publisher for the peers of scripts/bench-ws.
//
//   node publish.mjs --target nchan|ws --port P --jobs-file F --rate N --duration S [--size B]
//
// Sends --rate delta-shaped messages per second in total, round-robin over the jobs of
// --jobs-file, for --duration seconds, each shaped like a jobwire delta:
//   {"type":"delta","job_id":"<id>","seq":<1,2,...>,"ts":<now, us since epoch>,
//    "table":"job_steps","op":"UPDATE","row":{"pad":"..."}}
// padded to about --size bytes (default 600, a jobwire delta's size). ts is the
// wall clock (Date.now) refined with the monotonic clock, in microseconds.
// nchan: POST http://127.0.0.1:P/pub/<job>, keep-alive, at most one request in flight
// per channel (so nchan sees each channel's messages in order). ws: one WebSocket to
// ws://127.0.0.1:P/pub. Prints "published N in S s (R/s), behind M" on stderr.
import fs from 'node:fs';
import http from 'node:http';
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
