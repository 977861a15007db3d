// idle_http.mjs - what idle WebSocket connections cost the HTTP API: one jobwire (fresh
// database, the e2e harness's Server), N idle jobwire.v1 connections held open (signed
// in with the admin key, or not signed in: those wait out --ws-auth-timeout, raised here
// past the run), then keep-alive GET /healthz one after another for D seconds. Prints
// one JSON line per N: the time and the server's CPU to open the N connections (200 at a
// time), requests/s and the server's CPU per request over the GETs alone (from /proc),
// and with --idle S the server's CPU over S seconds with nothing but the
// idle connections, before the GETs (S of 35 or more spans a ping round: 30 s).
//
// Usage: node tests/bench/idle_http.mjs [--conns "0 10000"] [--seconds 6] [--idle S]
//                                       [--anonymous]
// Env: JOBWIRE_BIN, DATABASE_URL (as for tests/e2e).
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import WebSocket from '../e2e/node_modules/ws/index.js';
import { Server } from '../e2e/lib/index.mjs';
import { PROTOCOL } from '../e2e/lib/util.mjs';

const { values } = parseArgs({
  options: {
    conns: { type: 'string', default: '0 10000' },
    seconds: { type: 'string', default: '6' },
    idle: { type: 'string', default: '0' },
    anonymous: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const idle = Number(values.idle);
const counts = values.conns.split(/[ ,]+/).filter(Boolean).map(Number);
if (!(seconds > 0) || !(idle >= 0) || counts.some((n) => !(n >= 0 && n <= 15000)))
  throw new Error('--seconds > 0, --idle >= 0, --conns each 0..15000');

const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const v = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(v[11]) + Number(v[12]); // utime + stime
};
const HZ = 100; // USER_HZ on Linux

async function openIdle(server, n, token) {
  const socks = [];
  for (let i = 0; i < n; i += 200) {
    const batch = [];
    for (let k = i; k < Math.min(n, i + 200); k++) {
      const url = `${server.wsBase}/ws${token ? `?token=${token}` : ''}`;
      const ws = new WebSocket(url, [PROTOCOL], {
        localAddress: `127.0.0.${2 + (k % 250)}`,
        perMessageDeflate: false,
      });
      socks.push(ws);
      batch.push(new Promise((resolve, reject) => {
        ws.on('open', resolve);
        ws.on('error', reject);
      }));
    }
    await Promise.all(batch);
  }
  return socks;
}

function get(server, agent) {
  return new Promise((resolve, reject) => {
    http.get(`${server.base}/healthz`, { agent }, (r) => {
      r.resume();
      r.on('end', () => (r.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${r.statusCode}`))));
    }).on('error', reject);
  });
}

for (const n of counts) {
  const server = new Server({
    name: 'bench_idle_http',
    args: ['--max-connections', '50000', '--max-connections-per-ip', '0',
      '--connection-rate-per-ip', '0', '--ws-auth-timeout', '300'],
  });
  await server.start();
  try {
    const k0 = cpuTicks(server.pid);
    const o0 = performance.now();
    const socks = await openIdle(server, n, values.anonymous ? null : server.adminKey);
    const connectS = (performance.now() - o0) / 1000;
    const connectCpu = (cpuTicks(server.pid) - k0) / HZ;
    let idleCpu = null;
    if (idle > 0) {
      const i0 = cpuTicks(server.pid);
      await new Promise((r) => setTimeout(r, idle * 1000));
      idleCpu = (cpuTicks(server.pid) - i0) / HZ;
    }
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    await get(server, agent);
    const c0 = cpuTicks(server.pid);
    const t0 = performance.now();
    let reqs = 0;
    while (performance.now() - t0 < seconds * 1000) {
      await get(server, agent);
      reqs++;
    }
    const s = (performance.now() - t0) / 1000;
    const cpu = (cpuTicks(server.pid) - c0) / HZ;
    const open = socks.filter((w) => w.readyState === WebSocket.OPEN).length;
    console.log(JSON.stringify({
      conns: n, anonymous: values.anonymous, connect_s: Number(connectS.toFixed(2)),
      server_connect_cpu_s: connectCpu, open_at_end: open, requests: reqs,
      requests_per_s: Math.round(reqs / s), server_cpu_s: cpu,
      server_us_per_request: Math.round((cpu * 1e6) / reqs),
      ...(idleCpu === null ? {} : { idle_s: idle, server_idle_cpu_s: idleCpu }),
    }));
    agent.destroy();
    for (const w of socks) w.terminate();
  } finally {
    await server.stop();
  }
}
