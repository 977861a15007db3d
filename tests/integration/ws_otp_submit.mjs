// ws_otp_submit.mjs URL TOKEN OTP_REQUEST_ID VALUE: connects to URL (ws://HOST:PORT/ws)
// with jobwire.v1, sends one otp.submit and prints the answer to it (otp.result or
// error) as one line of JSON; exit 0 on an answer, 1 on none within 120 s. Used by
// test_inbox.sh; takes the npm package ws from tests/e2e (scripts/deps installs it).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../e2e/package.json'));
const WebSocket = require('ws');

const [url, token, otpId, value] = process.argv.slice(2);
const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`, 'jobwire.v1');
const timer = setTimeout(() => {
  console.log(JSON.stringify({ type: 'no_answer' }));
  process.exit(1);
}, 120_000);
ws.on('message', (data) => {
  for (const line of data.toString().split('\n')) {
    if (!line) continue;
    const m = JSON.parse(line);
    if (m.type === 'hello') ws.send(JSON.stringify({ type: 'otp.submit', otp_request_id: otpId, value, ref: 'o1' }));
    else if (m.ref === 'o1') {
      console.log(JSON.stringify(m));
      clearTimeout(timer);
      ws.close();
      process.exit(0);
    }
  }
});
ws.on('error', (e) => {
  console.log(JSON.stringify({ type: 'socket_error', message: String(e) }));
  process.exit(1);
});
