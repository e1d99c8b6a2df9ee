#!/usr/bin/env bash
# idle.sh: memory per idle keep-alive client connection. corral, nginx and
# HAProxy front the very same worker (examples/hello started by corral);
# for each target N connections make one request each and then stay open
# and idle; the proxy's RSS growth divided by N is its cost per idle
# connection. Then one more request must still be answered fast.
#
# Usage: bench/idle.sh              (as root it installs nginx, haproxy, jq, curl if missing)
#   N=10000       idle connections per target
#   SETTLE=2      seconds to wait after the last connection before reading RSS
#   PARALLEL=64   connections the holder opens at once
#   OLD_REF=      a git ref of corral to measure too (built from this repository), e.g. OLD_REF=eccb046
#   FLOOR=1       also measure bench/idlefloor's goroutine-per-connection server and gnet (0 = skip)
#   MAX_PROBE_MS=200   fail when the request after the idle connections takes longer
#   CORRAL_BIN= HELLO_BIN=   prebuilt binaries instead of building from this tree
#   KEEP_WORK=1   keep the temp dir
#   ports: CORRAL_PORT=18080 ADMIN_PORT=19180 NGINX_PORT=18081 HAPROXY_PORT=18082
#          OLD_PORT=18083 OLD_ADMIN_PORT=19183 GOSERVER_PORT=18090 GNET_PORT=18091
#          WORKER_PORTS=21901-21904 OLD_WORKER_PORTS=21911-21914
#
# Prints a markdown table on stdout; progress on stderr. Exits non-zero when
# something fails to run, a connection fails, or a probe is too slow.
# Only 127.0.0.1 is ever used.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}
SETTLE=${SETTLE:-2}
PARALLEL=${PARALLEL:-64}
OLD_REF=${OLD_REF:-}
FLOOR=${FLOOR:-1}
MAX_PROBE_MS=${MAX_PROBE_MS:-200}
CORRAL_PORT=${CORRAL_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-19180}
NGINX_PORT=${NGINX_PORT:-18081}
HAPROXY_PORT=${HAPROXY_PORT:-18082}
OLD_PORT=${OLD_PORT:-18083}
OLD_ADMIN_PORT=${OLD_ADMIN_PORT:-19183}
GOSERVER_PORT=${GOSERVER_PORT:-18090}
GNET_PORT=${GNET_PORT:-18091}
WORKER_PORTS=${WORKER_PORTS:-21901-21904}
OLD_WORKER_PORTS=${OLD_WORKER_PORTS:-21911-21914}
ADMIN=127.0.0.1:$ADMIN_PORT

# Every connection is a descriptor in the proxy and one in the holder.
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) > N + 1024)) || die "ulimit -n is $(ulimit -n); N=$N needs more than $((N + 1024)) (raise the hard limit)"

bench_init
ensure_packages nginx haproxy jq curl
require_free_ports "$CORRAL_PORT" "$ADMIN_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$OLD_PORT" "$OLD_ADMIN_PORT" "$GOSERVER_PORT" "$GNET_PORT"
require_free_range "$WORKER_PORTS"
build_binaries
log "building bench/idlefloor"
(cd "$BENCH_DIR/idlefloor" && go build -o "$WORK/idlefloor" .) || die "building bench/idlefloor failed"
if [[ -n $OLD_REF ]]; then
  require_free_range "$OLD_WORKER_PORTS"
  log "building corral at $OLD_REF"
  mkdir -p "$WORK/old-src"
  (cd "$REPO_DIR" && git archive "$OLD_REF" | tar -x -C "$WORK/old-src") || die "cannot export $OLD_REF"
  (cd "$WORK/old-src" && go build -o "$WORK/corral-old" ./cmd/corral) || die "building corral at $OLD_REF failed"
fi

# corral_config PORT ADMIN WORKER_PORTS: a corral in front of one hello worker.
corral_config() {
  cat <<EOF
listen       = "127.0.0.1:$1"
worker_ports = "$3"
admin { listen = "127.0.0.1:$2" }
log { level = "warn" }
proxy { $4 }
app "hello" {
  command   = ["$HELLO"]
  instances = 1
  health { path = "/healthz" }
}
EOF
}

log "starting corral"
corral_config "$CORRAL_PORT" "$ADMIN_PORT" "$WORKER_PORTS" "max_connections = $((N + 512))" >"$WORK/corral.hcl"
start_corral "$WORK/corral.hcl" "$ADMIN"
CORRAL_PID=$LAST_PID
wait_until "a ready worker" 30 status_check "$ADMIN" '[.apps[0].workers[] | select(.state == "ready")] | length == 1' ||
  die "corral has no ready worker"
WORKER_PORT=$(corral_status "$ADMIN" | jq -r '.apps[0].workers[] | select(.state == "ready") | .port')
log "worker port: $WORKER_PORT"

declare -A PID URL
PID[corral]=$CORRAL_PID
URL[corral]=127.0.0.1:$CORRAL_PORT
TARGETS=()
if [[ -n $OLD_REF ]]; then
  corral_config "$OLD_PORT" "$OLD_ADMIN_PORT" "$OLD_WORKER_PORTS" "" >"$WORK/corral-old.hcl"
  log "starting corral at $OLD_REF"
  start_bg "$WORK/corral-old.log" "$WORK/corral-old" run -config "$WORK/corral-old.hcl"
  PID[corral-old]=$LAST_PID
  URL[corral-old]=127.0.0.1:$OLD_PORT
  wait_until "old corral /readyz" 60 curl -fsS --max-time 2 "http://127.0.0.1:$OLD_ADMIN_PORT/readyz" || die "old corral did not become ready"
  remember_workers "127.0.0.1:$OLD_ADMIN_PORT"
  TARGETS+=(corral-old)
fi
TARGETS+=(corral)

# --- nginx (one worker process, as many connections as needed) -----------------
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections $((N * 2 + 512)); }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_timeout 300s;
  upstream workers {
    server 127.0.0.1:$WORKER_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://workers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
start_nginx
PID[nginx]=$LAST_PID
URL[nginx]=127.0.0.1:$NGINX_PORT

# --- HAProxy (one thread) --------------------------------------------------------
# HAProxy reserves two descriptors per maxconn (client and server side) and
# refuses to start without them.
HAPROXY_MAXCONN=$(((N + 512) * 2 + 300 <= $(ulimit -n) ? N + 512 : 0))
if ((HAPROXY_MAXCONN == 0)); then
  log "skipping haproxy: it needs 2 x (N + 512) + 300 descriptors and ulimit -n is $(ulimit -n)"
else
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout http-keep-alive 300s
  timeout server 30s
frontend public
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend workers
backend workers
  server w1 127.0.0.1:$WORKER_PORT
EOF
start_haproxy
PID[haproxy]=$LAST_PID
URL[haproxy]=127.0.0.1:$HAPROXY_PORT
fi
TARGETS+=(nginx)
((HAPROXY_MAXCONN == 0)) || TARGETS+=(haproxy)

if [[ $FLOOR == 1 ]]; then
  start_bg "$WORK/goserver.log" "$WORK/idlefloor" goserver -addr "127.0.0.1:$GOSERVER_PORT"
  PID[go-floor]=$LAST_PID
  URL[go-floor]=127.0.0.1:$GOSERVER_PORT
  start_bg "$WORK/gnet.log" "$WORK/idlefloor" gnet -addr "127.0.0.1:$GNET_PORT"
  PID[gnet]=$LAST_PID
  URL[gnet]=127.0.0.1:$GNET_PORT
  TARGETS+=(go-floor gnet)
fi

for t in "${TARGETS[@]}"; do
  wait_until "$t to answer" 15 curl -fsS --max-time 2 -o /dev/null "http://${URL[$t]}/" || die "$t does not answer"
  # Warm every target the same way (pools, first allocations) before the baseline.
  for _ in 1 2 3 4 5; do curl -fsS --max-time 2 -o /dev/null "http://${URL[$t]}/"; done
done
log "${TARGETS[*]} answer"

# probe_ms URL: milliseconds for one request on a new connection.
probe_ms() {
  curl -fsS --max-time 5 -o /dev/null -w '%{time_total}' "http://$1/" | awk '{printf "%.1f", $1 * 1000}'
}

# children: corral's children are app workers, not proxy processes.
declare -A CHILDREN_OF=([corral]=0 [corral-old]=0 [go-floor]=0 [gnet]=0 [nginx]=1 [haproxy]=1)

printf '| proxy | RSS before (kB) | RSS with %d idle (kB) | bytes per idle connection | next request (ms) |\n|---|---|---|---|---|\n' "$N"
fail=0
for t in "${TARGETS[@]}"; do
  kids=${CHILDREN_OF[$t]}
  before=$(CHILDREN=$kids rss_kb "${PID[$t]}")
  log "$t: opening $N idle connections"
  holder_log=$WORK/hold-$t.log
  start_bg "$holder_log" "$WORK/idlefloor" hold -addr "${URL[$t]}" -n "$N" -parallel "$PARALLEL"
  holder=$LAST_PID
  if ! wait_until "$t: $N connections" 120 grep -q '^ready' "$holder_log"; then
    cat "$holder_log" >&2
    die "$t: the idle connections could not be opened"
  fi
  sleep "$SETTLE"
  after=$(CHILDREN=$kids rss_kb "${PID[$t]}")
  ms=$(probe_ms "${URL[$t]}") || die "$t: no answer with $N idle connections"
  per=$(((after - before) * 1024 / N))
  printf '| %s | %d | %d | %d | %s |\n' "$t" "$before" "$after" "$per" "$ms"
  if awk -v ms="$ms" -v max="$MAX_PROBE_MS" 'BEGIN { exit !(ms > max) }'; then
    log "$t: the request after the idle connections took ${ms} ms (more than ${MAX_PROBE_MS})"
    fail=1
  fi
  stop_pid "$holder" 10
  # Let the proxy see the closes before the next target is measured.
  sleep 1
done
log "done"
exit "$fail"
