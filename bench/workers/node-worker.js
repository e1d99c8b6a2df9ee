// node-worker.js: the Node app of bench/perf.sh, a tiny single-threaded http server.
//
//   GET /         "hello from node <pid>"
//   GET /block    busy-loops BLOCK_MS (50) milliseconds first: the event loop is
//                 blocked, as a CPU-heavy request blocks a real Node app
//   GET /healthz  "ok"
//
// Every answer has an X-Worker header with the pid, so a client can count which
// worker served it (perf.sh's fairness scenario). It listens on $PORT, a port
// number on 127.0.0.1, or a Unix socket path when PORT contains a '/'. Run it
// alone, under corral, under Node's cluster module (node-cluster.js) or under PM2.
'use strict';
const http = require('http');

const port = process.env.PORT || '8000';
const blockMs = Number(process.env.BLOCK_MS || 50);
const hello = Buffer.from(`hello from node ${process.pid}\n`);
const ok = Buffer.from('ok\n');
const pid = String(process.pid);

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': ok.length, 'X-Worker': pid });
    res.end(ok);
    return;
  }
  if (req.url.startsWith('/block')) {
    const end = Date.now() + blockMs;
    while (Date.now() < end) { /* busy: nothing else runs in this process meanwhile */ }
  }
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': hello.length, 'X-Worker': pid });
  res.end(hello);
});
// Proxies keep idle connections to the worker for up to 90 s; Node's default
// of 5 s would close them under the proxy between runs.
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;

if (port.includes('/')) server.listen(port);
else server.listen(Number(port), '127.0.0.1');

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
