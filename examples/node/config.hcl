# corral running four copies of server.js.
#   local:      corral run -config examples/node/config.hcl
#   container:  see Dockerfile in this directory

# Every interface, because in a container the public port must be reachable
# from outside; on a laptop "127.0.0.1:8080" is enough.
listen = "0.0.0.0:8080"

# The admin API (/healthz, /readyz, /metrics, reload) stays on its default
# loopback address 127.0.0.1:9180, which is all the image's HEALTHCHECK needs.

shutdown {
  # Below the 35s the README passes to docker run --stop-timeout.
  timeout = "25s"
}

app "node" {
  # No dir: it defaults to this file's directory, where server.js is.
  # "node" directly, not "npm start": npm adds a process that swallows
  # signals, and corral already handles the process group.
  command   = ["node", "server.js"]
  instances = 4
  env       = { NODE_ENV = "production" }

  # server.js gives up on stuck requests after 15s by itself; corral
  # SIGKILLs only after this, and within shutdown.timeout.
  stop_timeout = "20s"

  health {
    path     = "/healthz"
    interval = "2s"
    timeout  = "1s"
  }
}
