// ws_peer.mjs - the Node.js peer for scripts/bench-ws: a plain `ws` broadcast server.
//
//   node ws_peer.mjs PORT
//
// Subscribers: GET /sub/<job> (WebSocket). The publisher: one WebSocket on /pub that
// sends delta-shaped JSON lines; each is sent, as one frame, to every subscriber of the
// job named by its "job_id" (read from the line's head, not parsed). No coalescing, no
// back-pressure bound: what a straightforward Node broadcast server does.
// Listens on 127.0.0.1 only. Stops on SIGTERM/SIGINT.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2]);
if (!(port > 0)) {
  process.stderr.write('usage: node ws_peer.mjs PORT\n');
  process.exit(2);
}
const subs = new Map(); // job id -> Set of sockets
const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/(sub\/([\w-]+)|pub)$/.exec(req.url.split('?')[0]);
  if (!m) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (m[2]) {
      const job = m[2];
      let set = subs.get(job);
      if (!set) subs.set(job, (set = new Set()));
      set.add(ws);
      ws.on('close', () => set.delete(ws));
      return;
    }
    ws.on('message', (data) => {
      // Bytes 27..63 hold the id in {"type":"delta","job_id":"<36>"...; find it generally.
      const head = data.toString('latin1', 0, 120);
      const i = head.indexOf('"job_id":"');
      if (i < 0) return;
      const job = head.slice(i + 10, head.indexOf('"', i + 10));
      const set = subs.get(job);
      if (!set) return;
      for (const s of set) s.send(data, { binary: false });
    });
  });
});
server.listen(port, '127.0.0.1', () => process.stderr.write(`ws_peer listening on ${port}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
