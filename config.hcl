# corral's default config: `go run ./cmd/corral` serves it.
# Four workers of the bundled example app (examples/hello) behind one port.
# Try: curl http://127.0.0.1:8080/   (several times: different workers answer)
#      go run ./cmd/corral status    (or open http://127.0.0.1:9180/)
# Edit this file while corral runs: it reloads by itself.
# Every key and its default: see README.md, "Configuration reference".

listen = "127.0.0.1:8080"

admin {
  listen = "127.0.0.1:9180"
}

log {
  level = "info"
}

app "hello" {
  # `go run` builds once into Go's build cache; later starts are quick.
  command   = ["go", "run", "./examples/hello"]
  dir       = "."
  env       = { GREETING = "hello" }
  instances = 4

  # The first start may compile the app: give it time.
  start_timeout = "120s"
  stop_timeout  = "10s"

  health {
    path     = "/healthz"
    interval = "2s"
    timeout  = "1s"
  }
}
