// node-cluster.js: Node's cluster module in front of node-worker.js, as many
// apps deploy it: the master forks WORKERS (default 2) copies that share
// $PORT; on Linux the master accepts and hands connections to the workers
// round robin. On SIGTERM it stops the workers and exits.
'use strict';
const cluster = require('cluster');
const path = require('path');

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS || 2);
  cluster.setupPrimary({ exec: path.join(__dirname, 'node-worker.js') });
  let listening = 0;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++listening === n) console.log(`cluster: ${n} workers listening on ${process.env.PORT}`);
  });
  let stopping = false;
  cluster.on('exit', (w, code) => {
    if (!stopping) console.error(`cluster: worker ${w.process.pid} exited (${code})`);
    if (stopping && Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  const stop = () => {
    stopping = true;
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
