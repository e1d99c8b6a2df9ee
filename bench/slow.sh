#!/usr/bin/env bash
# slow.sh: slow clients and buffering. corral next to nginx (proxy_buffering on,
# its defaults) and HAProxy (which does not buffer), in front of the very same
# worker processes (bench/slowclient started by corral), same clients, same run.
#
# Scenarios (SCENARIOS="1 2 3" runs all):
#   1 slow readers:   SLOW_CLIENTS clients download a SLOW_SIZE response from a
#                     single-slot worker (max_inflight = 1, the worker itself
#                     serves one request at a time) reading SLOW_RATE bytes/s,
#                     while FAST_CONNS fast clients GET /small from the same
#                     worker; also the baseline without slow readers.
#   2 slow uploaders: SLOW_CLIENTS clients POST an UPLOAD_SIZE body at SLOW_RATE
#                     to the same single-slot worker, fast clients as in 1.
#   3 throughput:     wrk, 1 MiB (TP_SIZE) downloads and uploads against two
#                     ordinary workers (no slot limit): corral, nginx, HAProxy
#                     and, when this corral knows proxy.buffering, corral with
#                     buffering off (the A/B row).
#
# Usage: flock /tmp/bench.lock bench/slow.sh   (as root it installs wrk, nginx, haproxy, jq if missing)
#   DURATION=5        seconds of fast-client load per measurement (scenarios 1, 2)
#   ROUNDS=2          rounds; each round runs every target once, in a rotated order
#   SLOW_CLIENTS=20   slow clients
#   SLOW_RATE=64k     bytes/s per slow client (k = 1024)
#   SLOW_SIZE=4m      response size for the slow readers
#   UPLOAD_SIZE=512k  body size for the slow uploaders
#   SLOW_LEAD=2       seconds the slow clients run before the fast clients start
#   SLOW_SOCKBUF=8192 SO_RCVBUF (readers) / SO_SNDBUF (uploaders) the slow clients ask for
#   FAST_CONNS=4      fast clients (keep-alive connections, one request at a time each)
#   FAST_TIMEOUT=2s   a fast request not answered within this counts as timed out
#   TP_DURATION=4 TP_THREADS=2 TP_CONNS=16 TP_SIZE=1m   scenario 3's wrk runs
#   SCENARIOS="1 2 3" which scenarios to run
#   AB=1              add the "corral, buffering off" row when corral validate accepts
#                     proxy.buffering (0 = never); AB_SCENARIOS="3" where to add it;
#                     AB_PROXY_BLOCK='proxy { ... }' replaces that corral's proxy block
#                     (e.g. to try the A/B plumbing on a corral without the keys)
#   STRICT=0          1: also exit 1 when corral's fast clients see a timeout or an
#                     error in scenario 1 or 2, or corral's scenario-3 req/s is below
#                     0.9 x the buffering-off row's
#   CORRAL_BIN= SLOWCLIENT_BIN=   prebuilt binaries instead of building from this tree
#   KEEP_WORK=1       keep the temp dir (configs, logs, raw client output)
#   ports: CORRAL_PORT=18380 ADMIN_PORT=19380 NGINX_PORT=18381 HAPROXY_PORT=18382
#          HAPROXY_BULK_PORT=18384 NOBUF_PORT=18383 NOBUF_ADMIN_PORT=19383
#          WORKER_PORTS=21951-21962 NOBUF_WORKER_PORTS=21971-21982
#
# Prints the environment and one markdown table per scenario on stdout, progress on
# stderr. Exits non-zero when something fails to run, a proxy exits, or scenario 3
# sees a non-2xx answer or a socket error (and with STRICT=1, see above). Slow-client
# timeouts in scenarios 1 and 2 are the measurement, not a failure. Only 127.0.0.1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
SLOW_CLIENTS=${SLOW_CLIENTS:-20}
SLOW_RATE=${SLOW_RATE:-64k}
SLOW_SIZE=${SLOW_SIZE:-4m}
UPLOAD_SIZE=${UPLOAD_SIZE:-512k}
SLOW_LEAD=${SLOW_LEAD:-2}
SLOW_SOCKBUF=${SLOW_SOCKBUF:-8192}
FAST_CONNS=${FAST_CONNS:-4}
FAST_TIMEOUT=${FAST_TIMEOUT:-2s}
TP_DURATION=${TP_DURATION:-4}
TP_THREADS=${TP_THREADS:-2}
TP_CONNS=${TP_CONNS:-16}
TP_SIZE=${TP_SIZE:-1m}
SCENARIOS=${SCENARIOS:-1 2 3}
AB=${AB:-1}
AB_SCENARIOS=${AB_SCENARIOS:-3}
STRICT=${STRICT:-0}
CORRAL_PORT=${CORRAL_PORT:-18380}
ADMIN_PORT=${ADMIN_PORT:-19380}
NGINX_PORT=${NGINX_PORT:-18381}
HAPROXY_PORT=${HAPROXY_PORT:-18382}
HAPROXY_BULK_PORT=${HAPROXY_BULK_PORT:-18384}
NOBUF_PORT=${NOBUF_PORT:-18383}
NOBUF_ADMIN_PORT=${NOBUF_ADMIN_PORT:-19383}
WORKER_PORTS=${WORKER_PORTS:-21951-21962}
NOBUF_WORKER_PORTS=${NOBUF_WORKER_PORTS:-21971-21982}
ADMIN=127.0.0.1:$ADMIN_PORT
NOBUF_ADMIN=127.0.0.1:$NOBUF_ADMIN_PORT

has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }
FAST_TIMEOUT_S=$(awk -v t="${FAST_TIMEOUT%s}" 'BEGIN { printf "%d", t + 0.999 }')
SLOW_SECONDS=$((SLOW_LEAD + DURATION + FAST_TIMEOUT_S)) # slow clients outlast the fast ones' last request

bench_init
ensure_packages wrk nginx haproxy jq curl
require_free_ports "$CORRAL_PORT" "$ADMIN_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$HAPROXY_BULK_PORT" "$NOBUF_PORT" "$NOBUF_ADMIN_PORT"
require_free_range "$WORKER_PORTS"
require_free_range "$NOBUF_WORKER_PORTS"

CORRAL=${CORRAL_BIN:-$WORK/corral}
SC=${SLOWCLIENT_BIN:-$WORK/slowclient}
if [[ -z ${CORRAL_BIN:-} ]]; then
  log "building corral"
  (cd "$REPO_DIR" && go build -o "$CORRAL" ./cmd/corral) || die "building corral failed"
fi
if [[ -z ${SLOWCLIENT_BIN:-} ]]; then
  log "building bench/slowclient"
  (cd "$BENCH_DIR/slowclient" && go build -o "$SC" .) || die "building bench/slowclient failed"
fi

# corral_config PORT ADMIN WORKER_PORTS [PROXY_BLOCK]: a config with two apps:
# "one", a single slot (max_inflight = 1, the worker itself serial), and
# "bulk" under /bulk, two ordinary workers for the throughput runs.
corral_config() {
  cat <<EOF
listen       = "127.0.0.1:$1"
worker_ports = "$3"
admin { listen = "$2" }
log { level = "warn" }
${4:-}
app "one" {
  command      = ["$SC", "worker", "-serial"]
  instances    = 1
  max_inflight = 1
  health { path = "/healthz" }
}
app "bulk" {
  command     = ["$SC", "worker"]
  instances   = 2
  path_prefix = "/bulk"
  health { path = "/healthz" }
}
EOF
}

NOBUF_BLOCK=${AB_PROXY_BLOCK:-'proxy {
  buffering {
    request_memory  = 0
    request_disk    = 0
    response_memory = 0
    response_disk   = 0
  }
}'}

# ready_ports ADMIN APP: the ports of APP's ready workers, sorted.
ready_ports() {
  corral_status "$1" | jq -r --arg app "$2" '.apps[] | select(.name == $app) | .workers[] | select(.state == "ready") | .port' | sort -n
}

# start_one_corral NAME CONFIG ADMIN: starts corral, waits for its 3 ready
# workers. Sets the PID in LAST_PID.
start_one_corral() {
  local name=$1 config=$2 admin=$3 pid
  start_bg "$WORK/$name.log" "$CORRAL" run -config "$config"
  pid=$LAST_PID
  wait_corral "$name" "$admin" "$WORK/$name.log" 3
  remember_workers "$admin"
  LAST_PID=$pid
}

corral_config "$CORRAL_PORT" "$ADMIN" "$WORKER_PORTS" >"$WORK/corral.hcl"
"$CORRAL" validate -config "$WORK/corral.hcl" >/dev/null || die "corral rejects its config"
log "starting corral"
start_one_corral corral "$WORK/corral.hcl" "$ADMIN"
CORRAL_PID=$LAST_PID
mapfile -t ONE < <(ready_ports "$ADMIN" one)
mapfile -t BULK < <(ready_ports "$ADMIN" bulk)
((${#ONE[@]} == 1 && ${#BULK[@]} == 2)) || die "expected 1 + 2 worker ports, got: ${ONE[*]} / ${BULK[*]}"
log "worker ports: one ${ONE[*]}, bulk ${BULK[*]}"

# The A/B row: a second corral with buffering off, with its own three workers
# (the same binary), only if this corral knows the keys.
NOBUF=0
NOBUF_NOTE="not run (AB=0)"
if [[ $AB == 1 ]]; then
  corral_config "$NOBUF_PORT" "$NOBUF_ADMIN" "$NOBUF_WORKER_PORTS" "$NOBUF_BLOCK" >"$WORK/corral-nobuf.hcl"
  if "$CORRAL" validate -config "$WORK/corral-nobuf.hcl" >"$WORK/nobuf-validate.txt" 2>&1; then
    log "starting corral with buffering off (A/B row)"
    start_one_corral corral-nobuf "$WORK/corral-nobuf.hcl" "$NOBUF_ADMIN"
    CORRAL_NOBUF_PID=$LAST_PID
    mapfile -t NOBUF_ONE < <(ready_ports "$NOBUF_ADMIN" one)
    NOBUF=1
    NOBUF_NOTE="run in scenarios $AB_SCENARIOS"
  else
    NOBUF_NOTE="skipped: this corral rejects proxy.buffering ($(head -1 "$WORK/nobuf-validate.txt"))"
    log "A/B row $NOBUF_NOTE"
  fi
fi

# --- nginx (proxy_buffering and proxy_request_buffering on: the defaults) ------
mkdir -p "$WORK/nginx/tmp"
# As root, nginx's workers would run as nobody, who cannot enter $WORK (0700):
# every body nginx spills to a temp file (uploads over 16 KiB, responses over
# its 64 KiB of proxy buffers) would fail with 500. Keep them as this user.
NGINX_USER=""
((EUID == 0)) && NGINX_USER="user $(id -un) $(id -gn);"
cat >"$WORK/nginx/nginx.conf" <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_requests 1000000;
  client_max_body_size 0;
  upstream one {
    server 127.0.0.1:${ONE[0]};
    keepalive 16;
  }
  upstream bulk {
    server 127.0.0.1:${BULK[0]};
    server 127.0.0.1:${BULK[1]};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://one; }
    location /bulk/ { proxy_pass http://bulk; }
  }
}
EOF
start_nginx
NGINX_PID=$LAST_PID

# --- HAProxy (no buffering beyond its 16 KiB buffers; no http-buffer-request) --
# maxconn 1 makes the single-slot backend HAProxy's own slot, held until the
# response has reached the client, as corral's max_inflight = 1 is; the others
# wait in HAProxy's queue (timeout queue as corral's queue timeout), and
# abortonclose drops a queued request whose client has gone, as corral does.
# That frontend runs on one thread: with nbthread 2, HAProxy 2.6 hands a
# maxconn 1 slot between threads slowly (about 1.2k req/s here, and now and then
# a request stalled past 2 s, against 15k on one thread). The bulk app has its
# own frontend on HAPROXY_BULK_PORT, on both threads, as in proxy.sh.
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  option abortonclose
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend public
  bind 127.0.0.1:$HAPROXY_PORT thread 1
  default_backend one
frontend public_bulk
  bind 127.0.0.1:$HAPROXY_BULK_PORT
  default_backend bulk
backend one
  timeout queue 10s
  server w1 127.0.0.1:${ONE[0]} maxconn 1
backend bulk
  server w2 127.0.0.1:${BULK[0]}
  server w3 127.0.0.1:${BULK[1]}
EOF
start_haproxy
HAPROXY_PID=$LAST_PID

# --- targets ------------------------------------------------------------------
declare -A BASE=(
  [corral]="http://127.0.0.1:$CORRAL_PORT"
  [nginx]="http://127.0.0.1:$NGINX_PORT"
  [haproxy]="http://127.0.0.1:$HAPROXY_PORT"
  [corral-nobuf]="http://127.0.0.1:$NOBUF_PORT"
)
# The bulk app: the same base, but HAProxy's has its own frontend (see above).
declare -A BULK_BASE=([corral]=${BASE[corral]} [nginx]=${BASE[nginx]} [haproxy]="http://127.0.0.1:$HAPROXY_BULK_PORT" [corral-nobuf]=${BASE[corral-nobuf]})
# The single-slot worker behind each target, asked directly to see it is free.
declare -A DIRECT=([corral]=${ONE[0]} [nginx]=${ONE[0]} [haproxy]=${ONE[0]} [corral-nobuf]=${NOBUF_ONE[0]:-})
declare -A LOGS=([nginx]=$WORK/nginx/error.log [haproxy]=$WORK/haproxy.log [corral]=$WORK/corral.log [corral-nobuf]=$WORK/corral-nobuf.log)
declare -A NAME=([corral]=corral [nginx]="nginx (proxy_buffering on)" [haproxy]="haproxy (no buffering)" [corral-nobuf]="corral, buffering off")
ALL_TARGETS=(corral nginx haproxy)
((NOBUF == 1)) && ALL_TARGETS+=(corral-nobuf)
for t in "${ALL_TARGETS[@]}"; do
  for u in "${BASE[$t]}/small" "${BULK_BASE[$t]}/bulk/small"; do
    if ! wait_until "$t to answer $u" 15 answers "$u" '^ok'; then
      tail -20 "${LOGS[$t]}" >&2
      die "$t does not answer $u"
    fi
  done
done
log "${ALL_TARGETS[*]} answer"

# targets_for SCENARIO: the targets of a scenario.
targets_for() {
  local t=(corral nginx haproxy)
  if ((NOBUF == 1)) && [[ " $AB_SCENARIOS " == *" $1 "* ]]; then t+=(corral-nobuf); fi
  echo "${t[@]}"
}

# kv FILE KEY: one value from a slowclient key=value line.
kv() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }

# run_fast TARGET OUTFILE: the fast clients against the single-slot app.
run_fast() {
  "$SC" fast -url "${BASE[$1]}/small" -c "$FAST_CONNS" -d "${DURATION}s" -timeout "$FAST_TIMEOUT" >"$2" 2>"$2.err" ||
    { cat "$2.err" >&2; die "fast clients against $1 failed"; }
}

# settle TARGET: wait until the single-slot worker answers directly again (a
# slow client's request may still hold it after the client hung up).
settle() {
  local port=${DIRECT[$1]}
  wait_until "the worker on :$port to be free after $1" 30 curl -fsS --max-time 1 "http://127.0.0.1:$port/small" ||
    log "warning: the worker on :$port is still busy 30 s after the slow clients left $1"
  wait_until "$1 to answer again" 30 curl -fsS --max-time 1 "${BASE[$1]}/small" ||
    log "warning: $1 still does not answer /small within 1 s, 30 s after the slow clients left"
}

# slow_round SCENARIO TARGET ROUND MODE: slow clients (MODE read or upload) for
# SLOW_SECONDS; after SLOW_LEAD seconds the fast clients for DURATION.
slow_round() {
  local s=$1 t=$2 r=$3 mode=$4 url pid
  if [[ $mode == read ]]; then url="${BASE[$t]}/big?size=$SLOW_SIZE"; else url="${BASE[$t]}/upload"; fi
  start_bg "$WORK/s$s-slow-$t-$r.txt" "$SC" slow -url "$url" -mode "$mode" -n "$SLOW_CLIENTS" -rate "$SLOW_RATE" \
    -size "$UPLOAD_SIZE" -sockbuf "$SLOW_SOCKBUF" -d "${SLOW_SECONDS}s"
  pid=$LAST_PID
  sleep "$SLOW_LEAD"
  run_fast "$t" "$WORK/s$s-fast-$t-$r.txt"
  wait "$pid" || { cat "$WORK/s$s-slow-$t-$r.txt" >&2; die "slow clients against $t failed"; }
  settle "$t"
  log "scenario $s round $r $t: fast $(kv "$WORK/s$s-fast-$t-$r.txt" rps) req/s, $(kv "$WORK/s$s-fast-$t-$r.txt" timeouts) timeouts; slow: $(sed 's/^clients=[0-9]* //' "$WORK/s$s-slow-$t-$r.txt")"
}

# rotated ROUND TARGET...: the targets, rotated by ROUND-1.
rotated() {
  local r=$1 i n
  shift
  n=$#
  local a=("$@")
  for ((i = 0; i < n; i++)); do echo "${a[(i + r - 1) % n]}"; done
}

check_alive() {
  local t pid_var
  if grep -qE '\[(crit|alert|emerg)\]' "$WORK/nginx/error.log"; then
    grep -E '\[(crit|alert|emerg)\]' "$WORK/nginx/error.log" | tail -3 >&2
    die "nginx logged critical errors (see above); its numbers would be wrong"
  fi
  for t in "${ALL_TARGETS[@]}"; do
    pid_var=${t^^}_PID
    pid_var=${pid_var//-/_}
    if ! alive "${!pid_var}"; then
      tail -20 "${LOGS[$t]}" >&2
      die "$t (pid ${!pid_var}) exited during the benchmark"
    fi
  done
}

CPU_BEFORE=$(cpu_snapshot)
CPU_START=$SECONDS

# --- scenario 1: slow readers --------------------------------------------------
if has_scenario 1; then
  read -ra T1 <<<"$(targets_for 1)"
  for ((r = 1; r <= ROUNDS; r++)); do
    for t in $(rotated "$r" "${T1[@]}"); do
      run_fast "$t" "$WORK/s1-fast-base-$t-$r.txt"
      log "scenario 1 round $r $t baseline: $(kv "$WORK/s1-fast-base-$t-$r.txt" rps) req/s"
      slow_round 1 "$t" "$r" read
    done
  done
  check_alive
fi

# --- scenario 2: slow uploaders ------------------------------------------------
if has_scenario 2; then
  read -ra T2 <<<"$(targets_for 2)"
  for ((r = 1; r <= ROUNDS; r++)); do
    for t in $(rotated "$r" "${T2[@]}"); do slow_round 2 "$t" "$r" upload; done
  done
  check_alive
fi

# --- scenario 3: throughput, 1 MiB downloads and uploads --------------------------
if has_scenario 3; then
  read -ra T3 <<<"$(targets_for 3)"
  TP_BYTES=$("$SC" size "$TP_SIZE") || die "bad TP_SIZE=$TP_SIZE"
  write_upload_lua "$WORK/upload.lua" "$TP_BYTES"
  for kind in download upload; do
    for ((r = 1; r <= ROUNDS; r++)); do
      for t in $(rotated "$r" "${T3[@]}"); do
        f=$WORK/s3-$kind-$t-$r.txt
        if [[ $kind == download ]]; then
          wrk -t"$TP_THREADS" -c"$TP_CONNS" -d"$TP_DURATION"s --latency "${BULK_BASE[$t]}/bulk/big?size=$TP_BYTES" >"$f" 2>&1 ||
            { cat "$f" >&2; die "wrk against $t failed"; }
        else
          wrk -t"$TP_THREADS" -c"$TP_CONNS" -d"$TP_DURATION"s --latency -s "$WORK/upload.lua" "${BULK_BASE[$t]}/bulk/upload" >"$f" 2>&1 ||
            { cat "$f" >&2; die "wrk against $t failed"; }
        fi
        log "scenario 3 $kind round $r $t: $(wrk_field "$f" rps) req/s"
      done
    done
  done
  check_alive
fi

CPU_SHARE=$(cpu_share "$CPU_BEFORE" "$(cpu_snapshot)" $((SECONDS - CPU_START)))

# --- report -------------------------------------------------------------------
status=0
strict_fail() {
  if [[ $STRICT == 1 ]]; then
    log "STRICT: $*"
    status=1
  fi
}
sum_kv() {
  local key=$1 total=0 f
  shift
  for f in "$@"; do total=$((total + $(kv "$f" "$key"))); done
  echo "$total"
}

# fast_row LABEL SLOWLABEL FILES... (FILES: fast-client outputs of the rounds):
# a table row, and the per-round req/s in ROUNDS_LINE.
fast_row() {
  local label=$1 slow=$2 f rps=() p50=() p99=()
  shift 2
  for f in "$@"; do
    rps+=("$(kv "$f" rps)")
    p50+=("$(kv "$f" p50_ms)")
    p99+=("$(kv "$f" p99_ms)")
  done
  printf '| %s | %s | %.0f | %.2f | %.2f | %s / %s | %s of %s |' "$label" "$slow" "$(median "${rps[@]}")" \
    "$(median "${p50[@]}")" "$(median "${p99[@]}")" "$(sum_kv non2xx "$@")" "$(sum_kv errors "$@")" \
    "$(sum_kv timeouts "$@")" "$(sum_kv requests "$@")"
  ROUNDS_LINE="$(printf '%.0f ' "${rps[@]}")"
}

# slow_cells FILES...: the slow clients' cells: response heads 2xx / non-2xx,
# transfers completed, errors, KiB/s each while transferring a body and over the run.
slow_cells() {
  local f act=() per=()
  for f in "$@"; do
    act+=("$(kv "$f" kib_s_active)")
    per+=("$(kv "$f" kib_s_per_client)")
  done
  printf ' %s / %s | %s | %s | %.1f | %.1f |' "$(sum_kv ok "$@")" "$(sum_kv non2xx "$@")" "$(sum_kv complete "$@")" \
    "$(sum_kv errors "$@")" "$(median "${act[@]}")" "$(median "${per[@]}")"
}

# strict_slow SCENARIO TARGET: with STRICT=1, corral's fast clients must not time out.
strict_slow() {
  local files=() r
  for ((r = 1; r <= ROUNDS; r++)); do files+=("$WORK/s$1-fast-$2-$r.txt"); done
  local to err
  to=$(sum_kv timeouts "${files[@]}")
  err=$(($(sum_kv errors "${files[@]}") + $(sum_kv non2xx "${files[@]}")))
  ((to == 0 && err == 0)) || strict_fail "scenario $1: $2's fast clients had $to timeouts and $err errors"
}

echo "## corral vs nginx vs HAProxy with slow clients ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
machine_line
echo "- $(go version 2>/dev/null || echo 'go: not found'); $("$CORRAL" version) (commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- CPU of all $(nproc) cores during the runs: $CPU_SHARE"
echo "- single-slot app: 1 worker (port ${ONE[0]}) serving one request at a time, corral max_inflight = 1 (queue: its defaults, 256 / 10s); bulk app: 2 workers (ports ${BULK[*]}); nginx and HAProxy front the same processes; HAProxy: maxconn 1 on the single-slot worker, its frontend on 1 thread"
echo "- fast clients: $FAST_CONNS keep-alive connections, closed loop, GET /small for ${DURATION}s, timeout $FAST_TIMEOUT per request; slow clients start ${SLOW_LEAD}s before and stop ${FAST_TIMEOUT_S}s after"
echo "- slow clients: $SLOW_CLIENTS, $SLOW_RATE B/s each, socket buffer $SLOW_SOCKBUF asked (the kernel doubles it); rounds: $ROUNDS (rotated order), each cell the median of rounds or their sum"
echo "- corral with buffering off (A/B row): $NOBUF_NOTE"

if has_scenario 1; then
  echo
  echo "### 1. slow readers: $SLOW_CLIENTS clients download $SLOW_SIZE at $SLOW_RATE/s from the single-slot worker"
  echo
  echo "| proxy | slow readers | fast req/s | p50 ms | p99 ms | fast non-2xx / errors | fast timeouts of requests | slow: heads 2xx / non-2xx | slow: complete | slow: errors | slow: KiB/s each while receiving | slow: KiB/s each over the run |"
  echo "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|"
  lines=()
  for t in "${T1[@]}"; do
    base=() fast=() slow=()
    for ((r = 1; r <= ROUNDS; r++)); do
      base+=("$WORK/s1-fast-base-$t-$r.txt") fast+=("$WORK/s1-fast-$t-$r.txt") slow+=("$WORK/s1-slow-$t-$r.txt")
    done
    fast_row "${NAME[$t]}" 0 "${base[@]}"
    echo " - | - | - | - | - |"
    lines+=("- ${NAME[$t]}, baseline: $ROUNDS_LINE")
    fast_row "${NAME[$t]}" "$SLOW_CLIENTS" "${fast[@]}"
    slow_cells "${slow[@]}"
    echo
    lines+=("- ${NAME[$t]}, $SLOW_CLIENTS slow readers: $ROUNDS_LINE")
    if [[ $t == corral ]]; then strict_slow 1 "$t"; fi
  done
  echo
  echo "fast req/s of each round:"
  printf '%s\n' "${lines[@]}"
fi

if has_scenario 2; then
  echo
  echo "### 2. slow uploaders: $SLOW_CLIENTS clients POST $UPLOAD_SIZE at $SLOW_RATE/s to the single-slot worker"
  echo
  echo "| proxy | slow uploaders | fast req/s | p50 ms | p99 ms | fast non-2xx / errors | fast timeouts of requests | slow: heads 2xx / non-2xx | slow: complete | slow: errors | slow: KiB/s each while sending | slow: KiB/s each over the run |"
  echo "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|"
  lines=()
  for t in "${T2[@]}"; do
    fast=() slow=()
    for ((r = 1; r <= ROUNDS; r++)); do fast+=("$WORK/s2-fast-$t-$r.txt") slow+=("$WORK/s2-slow-$t-$r.txt"); done
    fast_row "${NAME[$t]}" "$SLOW_CLIENTS" "${fast[@]}"
    slow_cells "${slow[@]}"
    echo
    lines+=("- ${NAME[$t]}: $ROUNDS_LINE")
    if [[ $t == corral ]]; then strict_slow 2 "$t"; fi
  done
  echo
  echo "fast req/s of each round (the baseline without slow clients is scenario 1's):"
  printf '%s\n' "${lines[@]}"
fi

if has_scenario 3; then
  declare -A ERR3 P3
  for kind in download upload; do
    echo
    echo "### 3. throughput: $TP_SIZE ${kind}s, wrk -t$TP_THREADS -c$TP_CONNS -d${TP_DURATION}s, bulk app (2 workers)"
    echo
    echo "| proxy | req/s | p50 ms | p99 ms | vs nginx | vs corral, buffering off | non-2xx / socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    declare -A RPS=()
    lines=()
    for t in "${T3[@]}"; do
      rps=() p50=() p99=() non2xx=0 sockerr=0
      for ((r = 1; r <= ROUNDS; r++)); do
        f=$WORK/s3-$kind-$t-$r.txt
        rps+=("$(wrk_field "$f" rps)") p50+=("$(wrk_field "$f" p50)") p99+=("$(wrk_field "$f" p99)")
        non2xx=$((non2xx + $(wrk_field "$f" non2xx)))
        sockerr=$((sockerr + $(wrk_field "$f" sockerr)))
      done
      RPS[$t]=$(median "${rps[@]}")
      P50_3=$(median "${p50[@]}") P99_3=$(median "${p99[@]}")
      lines+=("- ${NAME[$t]}: $(printf '%.0f ' "${rps[@]}")")
      ERR3[$t]="$non2xx / $sockerr"
      P3[$t]="$P50_3 $P99_3"
      if ((non2xx + sockerr > 0)); then
        log "scenario 3 $kind: non-2xx responses or socket errors from $t (KEEP_WORK=1 keeps the wrk output)"
        status=1
      fi
    done
    for t in "${T3[@]}"; do
      vs_nobuf="-"
      if [[ $t == corral && -n ${RPS[corral-nobuf]:-} ]]; then vs_nobuf=$(awk -v a="${RPS[corral]}" -v b="${RPS[corral-nobuf]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'); fi
      read -r a b <<<"${P3[$t]}"
      printf '| %s | %.0f | %.2f | %.2f | %s | %s | %s |\n' "${NAME[$t]}" "${RPS[$t]}" "$a" "$b" \
        "$(awk -v a="${RPS[$t]}" -v b="${RPS[nginx]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" "$vs_nobuf" "${ERR3[$t]}"
      if [[ $vs_nobuf != - ]] && awk -v r="$vs_nobuf" 'BEGIN { exit !(r < 0.9) }'; then
        strict_fail "scenario 3 $kind: corral with buffering is at $vs_nobuf of corral without"
      fi
    done
    echo
    echo "req/s of each round:"
    printf '%s\n' "${lines[@]}"
    unset RPS
  done
fi

exit "$status"
