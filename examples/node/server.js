// A plain Node web app for corral: no npm dependencies, no cluster module.
// corral runs several copies of it and balances requests across them; each
// copy only has to listen on $PORT and stop cleanly on SIGTERM.
'use strict';

const http = require('http');

const port = Number(process.env.PORT || 3000);
const worker = process.env.CORRAL_WORKER || 'standalone';

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ worker, pid: process.pid, path: req.url }) + '\n');
});

// Loopback only: corral is the public face; workers must not be reachable
// around it.
server.listen(port, '127.0.0.1', () => {
  console.error(`${worker} listening on 127.0.0.1:${port}`);
});

// corral takes this worker out of rotation before it sends SIGTERM, so
// nothing new arrives: finish the requests in flight, then exit 0.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  // Idle keep-alive connections from corral's pool would otherwise hold
  // close() open until they time out.
  server.closeIdleConnections();
  // Give up on stuck requests before corral's stop_timeout (20s) kills us.
  setTimeout(() => process.exit(1), 15000).unref();
});
