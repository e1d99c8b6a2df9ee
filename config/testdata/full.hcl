# Every setting corral understands, each set to a value other than its default
# where that is possible. Defaults are given in brackets. Relative paths are
# relative to this file's directory.

listen       = "127.0.0.1:8443"     # [127.0.0.1:8080] public address, host:port
worker_ports = "21000-21999"        # [20000-29999] private ports for workers; must hold
                                    # at least twice all apps' instances plus surge

admin {
  listen = "127.0.0.1:9181"         # [127.0.0.1:9180] admin API; "" disables it
  token_file = "admin.token"        # [none] bearer token for mutating endpoints, read at every
                                    # load (trailing newline trimmed); or token = "...", not both;
                                    # $CORRAL_ADMIN_TOKEN overrides both
  hosts = ["corral.internal"]       # [none] Host names beside loopback names and IP literals
}

log {
  level  = "debug"                  # [info] trace, debug, info, warn or error
  format = "json"                   # [text] text or json
  access = true                     # [false] one line per request
}

proxy {
  read_header_timeout     = "5s"    # [10s] client must send all headers within this
  read_timeout            = "30s"   # [0s = none] whole request, body included
  write_timeout           = "60s"   # [0s = none] writing a response (keep 0 for streams)
  idle_timeout            = "120s"  # [90s] client keep-alive idle
  max_header_bytes        = 32768   # [16384] larger requests get 431
  max_body_bytes          = "10MiB" # [0 = unlimited] a number or a size: KB/MB/GB (1000s), KiB/MiB/GiB (1024s)
  dial_timeout            = "1s"    # [2s] connecting to a worker
  response_header_timeout = "30s"   # [60s] worker must answer headers within this, else 504
  worker_idle_timeout     = "60s"   # [90s] idle pooled connections to workers
  trusted_proxies         = ["10.0.0.0/8", "192.168.1.1"]  # [none] CIDRs or IPs whose X-Forwarded-For is believed
  request_id              = false   # [true] add X-Request-Id when the client sent none
  h2c                     = true    # [false] accept cleartext HTTP/2

  tls {                             # [none] serve HTTPS (and HTTP/2) on listen
    cert = "cert.pem"
    key  = "key.pem"
  }

  buffering {                       # reading ahead of slow clients so workers are freed
    request_memory  = "512KiB"      # [1MiB] request bodies up to this: read into memory before a worker is chosen
    request_disk    = "8MiB"        # [16MiB] larger ones up to this: read into a temporary file first
    response_memory = "256KiB"      # [1MiB] per response: read ahead of the client into memory up to this
    response_disk   = "100MiB"      # [1GiB] then into a temporary file up to this
    memory_limit    = "64MiB"       # [128MiB] all memory buffers together; past it, new responses stream
    disk_limit      = "1GiB"        # [4GiB] all temporary files together; past it, spools wait for clients
    chunked         = false         # [true] buffer responses of unknown length too
    dir             = "."           # [system temp dir] where the temporary files go (unlinked at once)
  }
}

shutdown {
  timeout        = "20s"            # [25s] bound on the whole graceful shutdown
  pre_stop_delay = "2s"             # [0s] keep serving (readyz 503) after SIGTERM
}

app "web" {
  command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]  # required; {port} is replaced
  dir     = "."                     # [this file's directory] working directory
  env     = { GREETING = "hi", MODE = "production" }  # [none] added to the inherited environment;
                                    # PORT, CORRAL_APP and CORRAL_WORKER are set by corral
  user    = "www-data"              # [""] run as this user (corral must run as root)
  group   = "www-data"              # [""] run with this group

  instances       = 4               # [number of CPUs] 1..256
  stop_signal     = "SIGQUIT"       # [SIGTERM] TERM INT QUIT HUP USR1 USR2 KILL WINCH, with or without SIG
  drain_timeout   = "15s"           # [30s] wait for requests in flight, then the stop signal
  stop_timeout    = "20s"           # [30s] after the stop signal, then SIGKILL
  start_timeout   = "30s"           # [60s] spawn to ready
  surge           = 2               # [1] extra workers during a rolling restart, 1..instances
  exit_on_failure = "5m"            # [0s = off] exit corral when the app has no ready worker this long
  watch           = ["./src"]       # [none] restart the app when files under these change (development)
  watch_debounce  = "1s"            # [500ms]

  recycle {
    max_requests   = 10000            # [0 = off]
    max_memory     = "512MiB"         # [0 = off]
    max_age        = "24h"            # [0 = off]
    check_interval = "2s"             # [5s]
  }

  autoscale {                       # [none: instances is fixed] workers between min and max by load
    min              = 2              # [1] 1..256; instances (the starting size) must be within min..max
    max              = 6              # required, min..256
    scale_up_after   = "3s"           # [2s] saturated at every check this long: add workers
    scale_down_after = "1m"           # [30s] saturated at no check this long: remove one worker
    cooldown         = "20s"          # [5s] least time between two scaling decisions
    check_interval   = "1s"           # [500ms] how often saturation is checked
  }

  backoff {
    min         = "200ms"           # [100ms] first restart delay, doubling per crash
    max         = "10s"             # [30s]
    reset_after = "1m"              # [30s] in rotation this long resets the delay
    min_uptime  = "2s"              # [1s] in rotation this long before a crash: restart at once
    quick_restarts = 5              # [10] restarts at once per worker per minute; 0 = never
  }

  output {                          # what of each worker's stdout/stderr reaches the log
    lines_per_second = 5000         # [2000] lines a second per worker process; 0 = no bound
    burst            = 20000        # [10000] lines at once before the rate applies
  }

  health {                          # [none: ready when the port accepts connections]
    type                = "http"    # [http] http or tcp
    path                = "/healthz" # [/] http only
    host                = "web.internal" # [""] Host header for the probe
    interval            = "3s"      # [2s]
    timeout             = "2s"      # [1s] may be longer than interval: probes never overlap
    expect_status       = [200, 204] # [none = any 2xx or 3xx]
    healthy_threshold   = 1         # [2] passes in a row to turn healthy
    unhealthy_threshold = 4         # [3] failures in a row to turn unhealthy
    restart_after       = "2m"      # [60s] restart a worker unhealthy this long; 0s = never
  }

  passive {
    failures            = 3         # [5] failures in a row that eject a worker; 0 = off
    count_5xx           = true      # [false] 5xx answers count as failures
    base_ejection       = "5s"      # [10s] first ejection, longer each time
    max_ejection        = "1m"      # [5m]
    max_ejected_percent = 25        # [50] never eject more than this share of workers
  }

  hosts         = ["Example.com", "*.example.com"]  # [none] exact or leading "*." wildcard, no port
  path_prefix   = "/app/"           # [none] normalised without the trailing slash
  strip_prefix  = true              # [false] remove path_prefix before forwarding
  balance       = "cookie"          # [least_outstanding] round_robin, p2c, ip_hash, cookie
  sticky_cookie = "web_affinity"    # [corral_sticky] cookie used by balance = "cookie"
  max_inflight  = 8                 # [0 = unlimited] concurrent requests per worker
  retries       = 1                 # [2] 0..10 extra tries on connection failure
  retry_timeout = "5s"              # [10s] bound on all tries together

  queue {
    size    = 100                   # [256] requests waiting for a free worker; 0 = no queue
    timeout = "3s"                  # [10s] longest wait, then 503 with Retry-After
  }
}

app "api" {                         # a second app: the default (no hosts, no path_prefix)
  command = ["./api", "--listen=127.0.0.1:{port}"]
  instances = 2

  health {
    type = "tcp"
  }
}

app "uds" {                         # workers on Unix sockets: {socket} instead of {port}
  command   = ["./api", "--uds={socket}"]
  path_prefix = "/uds"
  instances = 2
}
