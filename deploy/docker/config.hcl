# corral's config inside the container image, at /etc/corral/config.hcl.
# It runs four copies of the bundled example app. To run your own app, mount
# a directory holding your config.hcl at /etc/corral (a directory, not the
# single file: corral watches the directory, and editors and Kubernetes
# replace files by rename, which a single-file bind mount never sees).

# In a container the public port must listen on every interface, or
# "docker run -p" and other containers cannot reach it.
listen = "0.0.0.0:8080"

admin {
  # Every interface so Kubernetes probes and Prometheus reach it. Reload,
  # restart and scale need the token in $CORRAL_ADMIN_TOKEN (docker run
  # --env-file, compose's env_file); without one this API is read-only:
  # status, metrics, probes and the dashboard only.
  listen = "0.0.0.0:9180"
}

shutdown {
  # The bound on corral's whole shutdown, pre_stop_delay included. Must stay
  # below the orchestrator's grace period (compose stop_grace_period: 35s,
  # docker run --stop-timeout 35), or corral is SIGKILLed mid-shutdown.
  timeout        = "25s"
  pre_stop_delay = "0s"
}

app "hello" {
  # No dir: it defaults to the config file's directory, which exists.
  # Exec'd directly: the distroless image has no shell.
  command   = ["/usr/local/bin/hello"]
  instances = 4

  # pre_stop_delay + stop_timeout + 1s must fit in shutdown.timeout
  # (0s + 20s + 1s <= 25s): requests and streams drain until 25s - 20s - 1s
  # = 4s after SIGTERM, then each worker still gets its full 20s.
  stop_timeout = "20s"

  # Exit non-zero when no worker has been ready for a minute, so the
  # orchestrator restarts the container instead of keeping a dead one.
  exit_on_failure = "60s"

  health {
    path     = "/healthz"
    interval = "2s"
    timeout  = "1s"
  }
}
