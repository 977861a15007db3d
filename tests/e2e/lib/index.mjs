// index.mjs - the harness of every e2e folder (tests/e2e/ws, supabase, browser, security,
// fault): import from here, e.g. `import { Client, Server } from '../lib/index.mjs'`.
//
// Real processes, real sockets: each test file starts the jobwire binary on a free
// 127.0.0.1 port with a fresh PostgreSQL database of its own, talks to it over HTTP
// (docs/api.md) and WebSocket (docs/protocol.md, the contract these tests check), and
// kills it by PID at the end, also when a test fails or the runner is interrupted.
//
// Environment:
//   JOBWIRE_BIN   path of the jobwire binary
//   JW_MINT       path of jw-mint-token (tests/tools/mint_token.c)
//   DATABASE_URL  a PostgreSQL server; each file creates (drops first) its own database
//   JW_KEEP_WORK  set: keep the work folder (server logs) even when everything passed
//
// Conventions:
//   - every wait is bounded and fails with a message that says what was awaited and
//     what arrived instead; no assertion depends on how fast something happened;
//   - every frame a client receives is recorded (raw text and parsed lines, with the
//     arrival time), so a test can check afterwards what the server sent.
//
// The modules, each usable alone:
//   util.mjs    constants of the protocol (PROTOCOL, TERMINAL, ERROR_CODES, ...), env(),
//               uuid/randomHex, sleep, pool
//   db.mjs      freshDb, dbUrl, psql, journal (a job's job_events as deltas)
//   server.mjs  Server (the real binary: start/stop/kill9, tokens, HTTP API, waits),
//               freePort, work (the folder of server logs)
//   client.mjs  Client (a recording jobwire.v1 WebSocket client), newRef, UpgradeRefused
//   view.mjs    JobView (applies snapshots and deltas, records broken ordering rules)
//   check.mjs   normalize, diffState, diffKnownRows, diffJournal, containsCode,
//               assertCleanStream
//   drive.mjs   settle, driveOtpsOverSocket

export * from './util.mjs';
export * from './db.mjs';
export * from './view.mjs';
export * from './client.mjs';
export * from './server.mjs';
export * from './check.mjs';
export * from './drive.mjs';
