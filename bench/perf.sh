#!/usr/bin/env bash
# perf.sh: corral's performance benchmark (issue #12). corral next to nginx,
# HAProxy, Node's cluster module and PM2, in front of the same worker
# processes, driven by the same client, in one run, and one table.
#
# Scenarios (SCENARIOS="a b c d e f" runs all):
#   a  hello world, keep-alive, KA_CONNS (64 and 256) connections: GO_WORKERS
#      examples/hello workers, then NODE_WORKERS Node workers (Node cluster and
#      PM2 as extra peers in the Node rows)
#   b  a new connection per request (Connection: close); HTTPS with HTTP/1.1
#      (wrk); HTTPS with HTTP/2 (h2load) - Go workers
#   c  head-of-line: HOL_WORKERS single-threaded Node workers, HOL_BLOCK_CONNS
#      clients whose requests busy-loop a worker BLOCK_MS, HOL_FAST_CONNS clients
#      of instant requests; the latency of the instant ones
#   d  fairness: the same 4 workers, FAIR_CONNS keep-alive clients; the share of
#      requests each worker answered (counted from its X-Worker header), as the
#      largest deviation from an even share
#   e  1 MiB bodies down (GET) and up (POST), BODY_CONNS connections, two
#      bench/slowclient workers
#   f  socket workers: corral over Unix sockets ({socket} in the command) vs
#      nginx over the same sockets vs nginx over TCP; skipped with a note when
#      this corral rejects {socket}
#
# Usage: flock /tmp/bench.lock bench/perf.sh    (~16 min; as root it installs what is missing)
#   ROUNDS=3        rounds; each round runs every target of a test once, order rotated
#   DURATION=6      seconds per measured run (FAIR_DURATION for d)
#   WARMUP=1        seconds of unrecorded load per target before a test's rounds
#   SCENARIOS="a b c d e f"
#   KA_CONNS="64 256" CLOSE_CONNS=64 TLS_CONNS=64 H2_CLIENTS=16 H2_STREAMS=10
#   GO_WORKERS=2 NODE_WORKERS=2 HOL_WORKERS=4 HOL_BLOCK_CONNS=2 HOL_FAST_CONNS=16 BLOCK_MS=50
#   FAIR_CONNS=4 BODY_CONNS=16 BODY_SIZE=1m
#   WRK_CPU=0       the CPU wrk and h2load are pinned to (taskset), with one thread each
#   PM2=1 CLUSTER=1 0 leaves the PM2 / Node cluster rows out
#   PM2_BIN=        a pm2 to use instead of installing it with npm into the temp dir
#   CORRAL_BIN= HELLO_BIN= SLOWCLIENT_BIN=   prebuilt binaries instead of building this tree
#   PORT_BASE=18500 WORKER_PORT_BASE=22000   ports used upwards from these (all 127.0.0.1)
#   KEEP_WORK=1     keep the temp dir (configs, logs, raw client output)
#
# Prints the environment, one markdown table and the issue #12 targets on
# stdout; progress on stderr. Exits 1 when something fails to run, a proxy
# exits, or a run saw non-2xx answers or socket errors (they are in the table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
SCENARIOS=${SCENARIOS:-a b c d e f}
KA_CONNS=${KA_CONNS:-64 256}
CLOSE_CONNS=${CLOSE_CONNS:-64}
TLS_CONNS=${TLS_CONNS:-64}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-10}
GO_WORKERS=${GO_WORKERS:-2}
NODE_WORKERS=${NODE_WORKERS:-2}
HOL_WORKERS=${HOL_WORKERS:-4}
HOL_BLOCK_CONNS=${HOL_BLOCK_CONNS:-2}
HOL_FAST_CONNS=${HOL_FAST_CONNS:-16}
BLOCK_MS=${BLOCK_MS:-50}
FAIR_CONNS=${FAIR_CONNS:-4}
FAIR_DURATION=${FAIR_DURATION:-$DURATION}
BODY_CONNS=${BODY_CONNS:-16}
BODY_SIZE=${BODY_SIZE:-1m}
WRK_CPU=${WRK_CPU:-0}
PM2=${PM2:-1}
CLUSTER=${CLUSTER:-1}
PORT_BASE=${PORT_BASE:-18500}
WORKER_PORT_BASE=${WORKER_PORT_BASE:-22000}
WORKERS_JS=$BENCH_DIR/workers

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

bench_init
# The tree being measured, read before the run (it may change while the run goes on).
COMMIT="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes')"
need=(wrk nginx haproxy jq curl taskset:util-linux openssl ss:iproute2)
has b && need+=(h2load:nghttp2-client)
if has a || has c || has d; then
  need+=(node:nodejs)
  [[ $PM2 != 1 || -n ${PM2_BIN:-} ]] || need+=(npm)
fi
ensure_packages "${need[@]}"

build_binaries
SC=${SLOWCLIENT_BIN:-$WORK/slowclient}
if has e && [[ -z ${SLOWCLIENT_BIN:-} ]]; then
  log "building bench/slowclient"
  (cd "$BENCH_DIR/slowclient" && go build -o "$SC" .) || die "building bench/slowclient failed"
fi

NOTES=()     # printed under the table: skipped rows and why
PM2_HOMES=() # every PM2_HOME a daemon may run in; cleanup_hook stops them
PM2_NOTE=""
if [[ $PM2 == 1 ]] && { has a || has c || has d; }; then
  if [[ -n ${PM2_BIN:-} ]]; then
    PM2CMD=$PM2_BIN
  else
    log "installing pm2 with npm into $WORK/pm2"
    if npm install --prefix "$WORK/pm2" --no-audit --no-fund --loglevel=error pm2 >"$WORK/npm.log" 2>&1; then
      PM2CMD=$WORK/pm2/node_modules/.bin/pm2
    else
      tail -5 "$WORK/npm.log" >&2
      NOTES+=("PM2 rows skipped: npm install pm2 failed (see above)")
      PM2=0
    fi
  fi
  # Any pm2 command starts a daemon in PM2_HOME (~/.pm2 by default): ask the
  # package for its version instead, and give an installed pm2 a private home.
  if [[ $PM2 == 1 && -z ${PM2_BIN:-} ]]; then
    PM2_NOTE=$(node -p "require('$WORK/pm2/node_modules/pm2/package.json').version" 2>/dev/null || true)
  elif [[ $PM2 == 1 ]]; then
    mkdir -p "$WORK/pm2home-version"
    PM2_HOMES+=("$WORK/pm2home-version")
    PM2_NOTE=$(PM2_HOME=$WORK/pm2home-version "$PM2CMD" --version 2>/dev/null | tail -1)
  fi
fi

# The nginx workers run as this user: as root they would run as nobody, who can
# enter neither the 0700 temp dir (request bodies over 16 KiB spill there) nor
# corral's private socket directory.
NGINX_USER=""
((EUID == 0)) && NGINX_USER="user $(id -un) $(id -gn);"

# --- ports --------------------------------------------------------------------
NEXT_PORT=$PORT_BASE
NEXT_WORKER_PORT=$WORKER_PORT_BASE
# in_use PORT...: something listens on one of them.
in_use() {
  local p
  for p in "$@"; do ss -Htln "( sport = :$p )" | grep -q . && return 0; done
  return 1
}
# alloc_port VAR: the next free port into VAR.
alloc_port() {
  while in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
  printf -v "$1" '%s' "$NEXT_PORT"
  NEXT_PORT=$((NEXT_PORT + 1))
}
# alloc_range VAR N: the next N free worker ports, as "first-last", into VAR.
alloc_range() {
  # shellcheck disable=SC2046
  while in_use $(seq "$NEXT_WORKER_PORT" $((NEXT_WORKER_PORT + $2 - 1))); do NEXT_WORKER_PORT=$((NEXT_WORKER_PORT + $2)); done
  printf -v "$1" '%s' "$NEXT_WORKER_PORT-$((NEXT_WORKER_PORT + $2 - 1))"
  NEXT_WORKER_PORT=$((NEXT_WORKER_PORT + $2))
}

# --- targets: a proxy process and the address a client loads -------------------
declare -A URL PIDOF KIDS LABEL WPIDS WPORTS LOGOF
# target NAME LABEL PID KIDS URL LOG: KIDS=1 counts the proxy's children as
# the proxy (nginx's workers); 0 counts the process alone (corral, whose
# children are the app's workers; a Node cluster master; PM2's daemon).
target() {
  LABEL[$1]=$2 PIDOF[$1]=$3 KIDS[$1]=$4 URL[$1]=$5 LOGOF[$1]=$6
}
proxy_cpu() { CHILDREN=${KIDS[$1]} cpu_ticks "${PIDOF[$1]}"; }
proxy_rss() { CHILDREN=${KIDS[$1]} rss_kb "${PIDOF[$1]}"; }

# corral_up NAME INSTANCES COMMAND_HCL [APP_LINES] [TOP_LINES]: starts a corral
# with one app; sets PIDOF-style facts for NAME: CPORT, WPORTS (sorted worker
# ports), WPIDS. Returns 1, without starting it, when corral rejects the config.
# With SOFT=1, a corral whose workers do not become ready within 20 s is
# stopped and corral_up returns 2 (instead of failing the whole run).
corral_up() {
  local name=$1 n=$2 cmd=$3 app=${4:-} top=${5:-} port admin range pid
  alloc_port port
  alloc_port admin
  alloc_range range $((2 * (n + 1) + 2))
  cat >"$WORK/$name.hcl" <<EOF
listen       = "127.0.0.1:$port"
worker_ports = "$range"
admin { listen = "127.0.0.1:$admin" }
log { level = "warn" }
$top
app "$name" {
  command   = $cmd
  instances = $n
  $app
  health { path = "/healthz" }
}
EOF
  if ! "$CORRAL" validate -config "$WORK/$name.hcl" >"$WORK/$name.validate" 2>&1; then
    return 1
  fi
  log "starting $name ($n workers)"
  start_bg "$WORK/$name.log" "$CORRAL" run -config "$WORK/$name.hcl"
  pid=$LAST_PID
  if [[ ${SOFT:-0} == 1 ]] && ! wait_until "$name: $n ready workers" 20 status_check "127.0.0.1:$admin" "[.apps[0].workers[] | select(.state == \"ready\")] | length == $n"; then
    remember_workers "127.0.0.1:$admin"
    stop_pid "$pid" 20
    return 2
  fi
  wait_corral "$name" "127.0.0.1:$admin" "$WORK/$name.log" "$n"
  remember_workers "127.0.0.1:$admin"
  CPID[$name]=$pid
  CADMIN[$name]=127.0.0.1:$admin
  CPORT[$name]=$port
  WPORTS[$name]=$(corral_status "127.0.0.1:$admin" | jq -r '.apps[0].workers[] | select(.state == "ready") | .port' | sort -n | tr '\n' ' ')
  WPIDS[$name]=$(corral_status "127.0.0.1:$admin" | jq -r '.apps[0].workers[] | select(.state == "ready") | .pid' | tr '\n' ' ')
}
declare -A CPID CADMIN CPORT

# node_cluster_up NAME N: Node's cluster module, N forks of node-worker.js.
node_cluster_up() {
  local name=$1 n=$2 port
  alloc_port port
  log "starting Node cluster $name ($n workers)"
  start_bg "$WORK/$name.log" env PORT="$port" WORKERS="$n" BLOCK_MS="$BLOCK_MS" node "$WORKERS_JS/node-cluster.js"
  CPID[$name]=$LAST_PID
  CPORT[$name]=$port
  wait_until "$name to listen" 30 grep -q 'workers listening' "$WORK/$name.log" || { cat "$WORK/$name.log" >&2; die "$name did not start"; }
  WPIDS[$name]=$(ps -o pid= --ppid "${CPID[$name]}" | tr -d ' ' | tr '\n' ' ')
  local p
  for p in ${WPIDS[$name]}; do ORPHAN_PIDS+=("$p"); done
  target "$name" "Node cluster ($n forks)" "${CPID[$name]}" 0 "http://127.0.0.1:$port" "$WORK/$name.log"
}

# pm2_up NAME N: PM2 in cluster mode (-i N) with its own PM2_HOME in the temp dir.
pm2_up() {
  local name=$1 n=$2 port home=$WORK/pm2home-$1
  alloc_port port
  mkdir -p "$home"
  PM2_HOMES+=("$home")
  cat >"$WORK/$name.config.js" <<EOF
module.exports = { apps: [{
  name: "$name", script: "$WORKERS_JS/node-worker.js", exec_mode: "cluster", instances: $n,
  env: { PORT: "$port", BLOCK_MS: "$BLOCK_MS" }, max_restarts: 3
}] };
EOF
  log "starting PM2 $name (cluster mode, -i $n)"
  PM2_HOME=$home "$PM2CMD" start "$WORK/$name.config.js" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; die "pm2 start failed"; }
  wait_until "$name to answer" 30 curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" || die "$name does not answer"
  CPID[$name]=$(cat "$home/pm2.pid")
  CPORT[$name]=$port
  WPIDS[$name]=$(PM2_HOME=$home "$PM2CMD" jlist 2>/dev/null | jq -r '.[].pid' | tr '\n' ' ')
  local p
  for p in ${WPIDS[$name]}; do ORPHAN_PIDS+=("$p"); done
  target "$name" "PM2 (cluster mode, -i $n)" "${CPID[$name]}" 0 "http://127.0.0.1:$port" "$home/pm2.log"
}

# pm2_down HOME: pm2 kill, then the daemon by PID if it is still there.
pm2_down() {
  local home=$1 pid
  pid=$(cat "$home/pm2.pid" 2>/dev/null || true)
  PM2_HOME=$home timeout 20 "$PM2CMD" kill >/dev/null 2>&1 || true
  if [[ -n $pid ]]; then stop_pid "$pid" 5; fi
}
cleanup_hook() {
  local h
  for h in "${PM2_HOMES[@]}"; do pm2_down "$h"; done
  PM2_HOMES=()
}

# nginx_conf DIR BODY: DIR/nginx.conf with the common settings and BODY (upstreams
# and servers) inside http { }.
nginx_conf() {
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes auto;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  # nginx closes a keep-alive connection (HTTP/2 ones included) after 1000
  # requests by default; the clients would then reconnect, unlike with the others.
  keepalive_requests 1000000;
  client_max_body_size 0;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
$2
}
EOF
}

# nginx_upstream NAME "PORTS or unix:PATHS" [POLICY_LINES]
nginx_upstream() {
  local s
  echo "  upstream $1 {"
  [[ -z ${3:-} ]] || echo "    $3"
  for s in $2; do
    if [[ $s == unix:* ]]; then echo "    server $s;"; else echo "    server 127.0.0.1:$s;"; fi
  done
  echo "    keepalive 256;"
  echo "    keepalive_requests 1000000;"
  echo "  }"
}

# nginx_server PORT UPSTREAM [LISTEN_FLAGS]
nginx_server() {
  echo "  server {"
  echo "    listen 127.0.0.1:$1${3:+ $3};"
  if [[ ${3:-} == *ssl* ]]; then
    echo "    ssl_certificate $WORK/tls/cert.pem;"
    echo "    ssl_certificate_key $WORK/tls/key.pem;"
  fi
  echo "    location / { proxy_pass http://$2; }"
  echo "  }"
}

# fronts SET PORTS NGINX_LABEL: nginx (target nginx-SET) and HAProxy (target
# haproxy-SET), each round robin over the worker PORTS.
fronts() {
  local set=$1 ports=$2 ngx_port hap_port
  alloc_port ngx_port
  alloc_port hap_port
  nginx_conf "$WORK/nginx-$set" "$(nginx_upstream "$set" "$ports")
$(nginx_server "$ngx_port" "$set")"
  start_nginx "$WORK/nginx-$set"
  target "nginx-$set" "$3" "$LAST_PID" 1 "http://127.0.0.1:$ngx_port" "$WORK/nginx-$set/error.log"
  {
    haproxy_head
    printf 'frontend plain\n  bind 127.0.0.1:%s\n  default_backend %s\n' "$hap_port" "$set"
    haproxy_backend "$set" "$ports"
  } >"$WORK/haproxy-$set.cfg"
  start_haproxy "$WORK/haproxy-$set.cfg"
  target "haproxy-$set" HAProxy "$LAST_PID" 1 "http://127.0.0.1:$hap_port" "$WORK/haproxy-$set.log"
}

# haproxy_backend NAME PORTS [LINES] [SERVER_OPTS]
haproxy_backend() {
  local p i=0
  echo "backend $1"
  [[ -z ${3:-} ]] || echo "  $3"
  for p in $2; do
    i=$((i + 1))
    echo "  server w$i 127.0.0.1:$p${4:+ $4}"
  done
}

make_cert() {
  [[ -s $WORK/tls/cert.pem ]] && return 0
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 >"$WORK/tls/openssl.log" 2>&1 || { cat "$WORK/tls/openssl.log" >&2; die "openssl failed"; }
  cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"
}

# check_up TARGET PATTERN: the target answers / with PATTERN.
check_up() {
  local t=$1
  if ! wait_until "$t to answer" 15 sh -c "curl -fsSk --max-time 2 '${URL[$t]}/' | grep -q '$2'"; then
    tail -20 "${LOGOF[$t]}" >&2 || true
    die "$t does not answer ${URL[$t]}/"
  fi
}

# --- phases: the processes of a group of tests --------------------------------
PHASE_FROM=0
phase_begin() {
  PHASE_FROM=${#STARTED_PIDS[@]}
  log "--- phase $1"
}
# phase_end: every process the phase started is alive (else die), then stopped.
phase_end() {
  local i t
  for t in "${PHASE_TARGETS[@]}"; do
    if ! alive "${PIDOF[$t]}"; then
      tail -20 "${LOGOF[$t]}" >&2 || true
      die "$t (pid ${PIDOF[$t]}) exited during the benchmark"
    fi
  done
  cleanup_hook
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= PHASE_FROM; i--)); do stop_pid "${STARTED_PIDS[i]}" 20; done
  PHASE_TARGETS=()
}
PHASE_TARGETS=()

# --- tests --------------------------------------------------------------------
TESTS=()
declare -A T_TITLE T_KIND T_CONNS T_PATH T_TARGETS T_REF T_DUR
# add_test ID KIND CONNS PATH "TITLE" REF TARGET...
add_test() {
  local id=$1
  TESTS+=("$id")
  T_KIND[$id]=$2 T_CONNS[$id]=$3 T_PATH[$id]=$4 T_TITLE[$id]=$5 T_REF[$id]=$6
  shift 6
  T_TARGETS[$id]="$*"
  T_DUR[$id]=$DURATION
  [[ ${T_KIND[$id]} != fair ]] || T_DUR[$id]=$FAIR_DURATION
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
mkdir -p "$WORK/out"
BODY_BYTES=""

# wrk1 SECONDS CONNS OUT ARGS...: one pinned single-threaded wrk.
wrk1() {
  local secs=$1 conns=$2 out=$3
  shift 3
  taskset -c "$WRK_CPU" wrk -t1 -c"$conns" -d"$secs"s --latency "$@" >"$out" 2>&1 || { cat "$out" >&2; die "wrk $* failed"; }
}

# h2_field FILE FIELD: rps, requests (succeeded), non2xx, sockerr from h2load's report.
h2_field() {
  awk -v want="$2" '
    /^finished in/ { rps = $4 }
    /^requests:/ { succeeded = $8; errored = $12; timeout = $14 }
    /^status codes:/ { n3 = $5; n4 = $7; n5 = $9 }
    END {
      if (want == "rps") print rps + 0
      else if (want == "requests") print succeeded + 0
      else if (want == "non2xx") print n3 + n4 + n5
      else if (want == "sockerr") print errored + timeout
    }' "$1"
}
# log_pct LOGFILE: "p50 p99" in ms from h2load's --log-file (3rd column: µs).
log_pct() {
  cut -f3 "$1" | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "0 0"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    printf "%.2f %.2f\n", v[i50] / 1000, v[i99] / 1000 }'
}

# load TEST TARGET SECONDS OUT: the test's client against the target. Writes
# OUT (the report) and OUT.row: "rps p50 p99 non2xx sockerr requests note".
load() {
  local id=$1 t=$2 secs=$3 out=$4 url=${URL[$2]}${T_PATH[$1]} c=${T_CONNS[$1]}
  case ${T_KIND[$id]} in
  ka) wrk1 "$secs" "$c" "$out" "$url" ;;
  close) wrk1 "$secs" "$c" "$out" -H "Connection: close" "$url" ;;
  up) wrk1 "$secs" "$c" "$out" -s "$WORK/upload.lua" "$url" ;;
  fair) wrk1 "$secs" "$c" "$out" -s "$WORKERS_JS/count-workers.lua" "$url" ;;
  h2)
    taskset -c "$WRK_CPU" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$secs" --log-file="$out.log" "$url" >"$out" 2>&1 ||
      { cat "$out" >&2; die "h2load against $t failed"; }
    ;;
  hol)
    # The blocking clients start first and stop last, so every instant request
    # runs while both are busy.
    start_bg "$out.block" taskset -c "$WRK_CPU" wrk -t1 -c"$HOL_BLOCK_CONNS" -d"$((secs + 2))"s --latency "${URL[$t]}/block"
    local bpid=$LAST_PID
    sleep 1
    wrk1 "$secs" "$c" "$out" "$url"
    wait "$bpid" || { cat "$out.block" >&2; die "the blocking wrk against $t failed"; }
    ;;
  *) die "unknown test kind ${T_KIND[$id]}" ;;
  esac
  if [[ ${T_KIND[$id]} == h2 ]]; then
    local pct
    pct=$(log_pct "$out.log")
    rm -f "$out.log"
    echo "$(h2_field "$out" rps) $pct $(h2_field "$out" non2xx) $(h2_field "$out" sockerr) $(h2_field "$out" requests) -" >"$out.row"
    return
  fi
  local note=- non2xx sockerr requests
  non2xx=$(wrk_field "$out" non2xx)
  sockerr=$(wrk_field "$out" sockerr)
  requests=$(wrk_field "$out" requests)
  if [[ ${T_KIND[$id]} == hol ]]; then
    non2xx=$((non2xx + $(wrk_field "$out.block" non2xx)))
    sockerr=$((sockerr + $(wrk_field "$out.block" sockerr)))
    requests=$((requests + $(wrk_field "$out.block" requests)))
    note=$(wrk_field "$out.block" rps),$(wrk_field "$out.block" p99)
  elif [[ ${T_KIND[$id]} == fair ]]; then
    # The largest deviation from an even share, in % of the even share, over
    # the workers behind the target (a worker that answered nothing is -100 %).
    note=$(awk -v want="${WPIDS[$t]}" '
      BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) c[w[i]] = 0 }
      $1 == "worker" { if ($2 in c) c[$2] = $3; else stray += $3 }
      END {
        for (k in c) total += c[k]
        if (total == 0 || n == 0) { print "100"; exit }
        for (k in c) { d = (c[k] * n / total - 1) * 100; if (d < 0) d = -d; if (d > max) max = d }
        if (stray > 0) max = 100
        printf "%.1f\n", max }' "$out")
  fi
  echo "$(wrk_field "$out" rps) $(wrk_field "$out" p50) $(wrk_field "$out" p99) $non2xx $sockerr $requests $note" >"$out.row"
}

# run_test ID: warm-up, then ROUNDS rounds over the test's targets, order rotated.
run_test() {
  local id=$1 t r i n c0 ticks rss out
  local targets
  read -ra targets <<<"${T_TARGETS[$id]}"
  n=${#targets[@]}
  log "test $id: ${T_TITLE[$id]} (${targets[*]})"
  if ((WARMUP > 0)); then
    for t in "${targets[@]}"; do load "$id" "$t" "$WARMUP" "$WORK/out/$id-$t-warmup.txt"; done
  fi
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      t=${targets[(i + r - 1) % n]}
      out=$WORK/out/$id-$t-$r.txt
      c0=$(proxy_cpu "$t")
      load "$id" "$t" "${T_DUR[$id]}" "$out"
      ticks=$(($(proxy_cpu "$t") - c0))
      rss=$(proxy_rss "$t")
      echo "$id $t $r $(cat "$out.row") $ticks $rss" >>"$RESULTS"
      log "  round $r/$ROUNDS $t: $(awk '{print $1 " req/s, p99 " $3 " ms"}' "$out.row")"
    done
  done
}

# --- phase: Go workers (a, b, f) ------------------------------------------------
phase_go() {
  phase_begin "Go workers (examples/hello)"
  corral_up corral-go "$GO_WORKERS" "[\"$HELLO\"]" || die "corral rejects $WORK/corral-go.hcl: $(cat "$WORK/corral-go.validate")"
  target corral-go corral "${CPID[corral-go]}" 0 "http://127.0.0.1:${CPORT[corral-go]}" "$WORK/corral-go.log"
  local body ngx_port ngx_tls hap_port hap_tls ngx_sock sock=0 paths="" p
  alloc_port ngx_port
  alloc_port hap_port
  body="$(nginx_upstream go "${WPORTS[corral-go]}")
$(nginx_server "$ngx_port" go)"
  local hap
  hap="$(haproxy_head)
frontend plain
  bind 127.0.0.1:$hap_port
  default_backend go"
  if has b; then
    make_cert
    corral_up corral-tls "$GO_WORKERS" "[\"$HELLO\"]" "" "proxy {
  tls {
    cert = \"$WORK/tls/cert.pem\"
    key  = \"$WORK/tls/key.pem\"
  }
}" || die "corral rejects $WORK/corral-tls.hcl: $(cat "$WORK/corral-tls.validate")"
    target corral-tls "corral (own workers)" "${CPID[corral-tls]}" 0 "https://127.0.0.1:${CPORT[corral-tls]}" "$WORK/corral-tls.log"
    alloc_port ngx_tls
    alloc_port hap_tls
    body+="
$(nginx_server "$ngx_tls" go "ssl http2")"
    hap+="
frontend tls
  bind 127.0.0.1:$hap_tls ssl crt $WORK/tls/haproxy.pem alpn h2,http/1.1
  default_backend go"
  fi
  if has f; then
    # {socket} in the command: the worker gets a Unix socket path.
    local rc=0
    SOFT=1 corral_up corral-sock "$GO_WORKERS" "[\"$HELLO\", \"-socket\", \"{socket}\"]" || rc=$?
    if ((rc == 0)); then
      target corral-sock "corral, socket workers" "${CPID[corral-sock]}" 0 "http://127.0.0.1:${CPORT[corral-sock]}" "$WORK/corral-sock.log"
      # The workers' socket paths from /status, else each worker process's
      # listening Unix socket (ss -x: the local address is field 5).
      for p in $(corral_status "${CADMIN[corral-sock]}" | jq -r '.apps[0].workers[] | select(.state == "ready") | .socket // empty'); do
        paths+="unix:$p "
      done
      if [[ -z $paths ]]; then
        for p in ${WPIDS[corral-sock]}; do
          paths+="unix:$(ss -Hxlp | awk -v pid="pid=$p," 'index($0, pid) { print $5; exit }') "
        done
      fi
      if [[ $paths == *"unix: "* || -z $paths ]]; then
        NOTES+=("f skipped: the socket workers' paths were not found with ss -xlp (got: $paths)")
      else
        sock=1
        alloc_port ngx_sock
        body+="
$(nginx_upstream sock "$paths")
$(nginx_server "$ngx_sock" sock)"
      fi
    elif ((rc == 1)); then
      NOTES+=("f (socket workers) skipped: this corral rejects {socket} in an app command: $(grep -m1 . "$WORK/corral-sock.validate")")
      log "scenario f skipped: corral rejects {socket}"
    else
      NOTES+=("f (socket workers) skipped: this corral accepts {socket} but its workers did not become ready in 20 s (a corral without socket support passes the literal text; its log: $(grep -m1 -oE 'flag provided but not defined: -socket|invalid value "[^"]*"' "$WORK/corral-sock.log" || echo see corral-sock.log))")
      log "scenario f skipped: corral-sock's workers did not become ready"
    fi
  fi
  nginx_conf "$WORK/nginx-go" "$body"
  start_nginx "$WORK/nginx-go"
  local ngx=$LAST_PID
  target nginx-go nginx "$ngx" 1 "http://127.0.0.1:$ngx_port" "$WORK/nginx-go/error.log"
  echo "$hap
$(haproxy_backend go "${WPORTS[corral-go]}")" >"$WORK/haproxy-go.cfg"
  start_haproxy "$WORK/haproxy-go.cfg"
  target haproxy-go HAProxy "$LAST_PID" 1 "http://127.0.0.1:$hap_port" "$WORK/haproxy-go.log"
  PHASE_TARGETS=(corral-go nginx-go haproxy-go)
  if has b; then
    target nginx-tls nginx "$ngx" 1 "https://127.0.0.1:$ngx_tls" "$WORK/nginx-go/error.log"
    target haproxy-tls HAProxy "${PIDOF[haproxy-go]}" 1 "https://127.0.0.1:$hap_tls" "$WORK/haproxy-go.log"
    PHASE_TARGETS+=(corral-tls nginx-tls haproxy-tls)
  fi
  if ((sock == 1)); then
    target nginx-sock "nginx, the same socket workers" "$ngx" 1 "http://127.0.0.1:$ngx_sock" "$WORK/nginx-go/error.log"
    target nginx-tcp "nginx, TCP workers" "$ngx" 1 "${URL[nginx-go]}" "$WORK/nginx-go/error.log"
    target corral-tcp "corral, TCP workers" "${PIDOF[corral-go]}" 0 "${URL[corral-go]}" "$WORK/corral-go.log"
    PHASE_TARGETS+=(corral-sock nginx-sock)
  fi
  for t in "${PHASE_TARGETS[@]}"; do check_up "$t" '^hello from '; done

  local c
  if has a; then
    for c in $KA_CONNS; do
      add_test "a-go-$c" ka "$c" / "a. keep-alive, $c connections, $GO_WORKERS Go workers" nginx-go nginx-go haproxy-go corral-go
      run_test "a-go-$c"
    done
  fi
  if has b; then
    add_test b-close close "$CLOSE_CONNS" / "b. new connection per request (Connection: close), $CLOSE_CONNS connections" nginx-go nginx-go haproxy-go corral-go
    run_test b-close
    add_test b-tls ka "$TLS_CONNS" / "b. HTTPS, HTTP/1.1, wrk $TLS_CONNS connections" nginx-tls nginx-tls haproxy-tls corral-tls
    run_test b-tls
    add_test b-h2 h2 "$H2_CLIENTS" / "b. HTTPS, HTTP/2, h2load -c$H2_CLIENTS -m$H2_STREAMS" nginx-tls nginx-tls haproxy-tls corral-tls
    run_test b-h2
  fi
  if ((sock == 1)); then
    local c0=${KA_CONNS%% *}
    add_test f-sock ka "$c0" / "f. socket workers, keep-alive, $c0 connections" nginx-sock corral-sock nginx-sock nginx-tcp corral-tcp
    run_test f-sock
  fi
  phase_end
}

# --- phase: Node workers (a) ------------------------------------------------------
phase_node() {
  phase_begin "Node workers"
  local node_cmd="[\"node\", \"$WORKERS_JS/node-worker.js\"]"
  corral_up corral-node "$NODE_WORKERS" "$node_cmd" || die "corral rejects $WORK/corral-node.hcl"
  target corral-node corral "${CPID[corral-node]}" 0 "http://127.0.0.1:${CPORT[corral-node]}" "$WORK/corral-node.log"
  fronts node "${WPORTS[corral-node]}" nginx
  local targets=(nginx-node haproxy-node corral-node)
  if [[ $CLUSTER == 1 ]]; then node_cluster_up cluster-node "$NODE_WORKERS" && targets+=(cluster-node); fi
  if [[ $PM2 == 1 ]]; then pm2_up pm2-node "$NODE_WORKERS" && targets+=(pm2-node); fi
  PHASE_TARGETS=("${targets[@]}")
  for t in "${targets[@]}"; do check_up "$t" '^hello from node'; done
  local c
  for c in $KA_CONNS; do
    add_test "a-node-$c" ka "$c" / "a. keep-alive, $c connections, $NODE_WORKERS Node workers" nginx-node "${targets[@]}"
    run_test "a-node-$c"
  done
  phase_end
}

# --- phase: head-of-line and fairness (c, d) -----------------------------------------
phase_hol() {
  phase_begin "head-of-line and fairness: $HOL_WORKERS single-threaded Node workers"
  local node_cmd="[\"node\", \"$WORKERS_JS/node-worker.js\"]" rr lc hap
  corral_up corral-mi1 "$HOL_WORKERS" "$node_cmd" "max_inflight = 1
  env = { BLOCK_MS = \"$BLOCK_MS\" }" || die "corral rejects $WORK/corral-mi1.hcl"
  target corral-mi1 "corral, max_inflight = 1" "${CPID[corral-mi1]}" 0 "http://127.0.0.1:${CPORT[corral-mi1]}" "$WORK/corral-mi1.log"
  corral_up corral-def "$HOL_WORKERS" "$node_cmd" "env = { BLOCK_MS = \"$BLOCK_MS\" }" || die "corral rejects $WORK/corral-def.hcl"
  target corral-def "corral, defaults (own workers)" "${CPID[corral-def]}" 0 "http://127.0.0.1:${CPORT[corral-def]}" "$WORK/corral-def.log"
  # nginx, HAProxy and corral with max_inflight = 1 front the same 4 processes.
  local ports=${WPORTS[corral-mi1]}
  alloc_port rr
  alloc_port lc
  alloc_port hap
  # zone: the least_conn counts are shared by nginx's worker processes.
  nginx_conf "$WORK/nginx-hol" "$(nginx_upstream hol_rr "$ports")
$(nginx_upstream hol_lc "$ports" "least_conn; zone hol_lc 64k;")
$(nginx_server "$rr" hol_rr)
$(nginx_server "$lc" hol_lc)"
  start_nginx "$WORK/nginx-hol"
  target nginx-rr "nginx, round robin" "$LAST_PID" 1 "http://127.0.0.1:$rr" "$WORK/nginx-hol/error.log"
  target nginx-lc "nginx, least_conn" "$LAST_PID" 1 "http://127.0.0.1:$lc" "$WORK/nginx-hol/error.log"
  # maxconn 1: one request per worker, the others wait in HAProxy's queue.
  # The frontend runs on one thread: with two, HAProxy 2.6 hands maxconn-1
  # slots between threads slowly (see slow.sh).
  {
    haproxy_head
    printf 'frontend hol\n  bind 127.0.0.1:%s thread 1\n  default_backend hol\n' "$hap"
    haproxy_backend hol "$ports" "balance leastconn" "maxconn 1"
  } >"$WORK/haproxy-hol.cfg"
  start_haproxy "$WORK/haproxy-hol.cfg"
  target haproxy-hol "HAProxy, leastconn, maxconn 1 + queue" "$LAST_PID" 1 "http://127.0.0.1:$hap" "$WORK/haproxy-hol.log"
  local t targets=()
  if [[ $CLUSTER == 1 ]]; then node_cluster_up cluster-hol "$HOL_WORKERS" && targets+=(cluster-hol); fi
  if [[ $PM2 == 1 ]]; then pm2_up pm2-hol "$HOL_WORKERS" && targets+=(pm2-hol); fi
  targets+=(nginx-rr nginx-lc haproxy-hol corral-def corral-mi1)
  for t in nginx-rr nginx-lc haproxy-hol; do WPIDS[$t]=${WPIDS[corral-mi1]}; done
  PHASE_TARGETS=("${targets[@]}")
  for t in "${targets[@]}"; do check_up "$t" '^hello from node'; done
  if has c; then
    add_test c-hol hol "$HOL_FAST_CONNS" / "c. head-of-line: $HOL_FAST_CONNS instant + $HOL_BLOCK_CONNS ${BLOCK_MS} ms blocking clients, $HOL_WORKERS Node workers" nginx-rr "${targets[@]}"
    run_test c-hol
  fi
  if has d; then
    add_test d-fair fair "$FAIR_CONNS" / "d. fairness: $FAIR_CONNS keep-alive clients, $HOL_WORKERS Node workers" nginx-rr "${targets[@]}"
    run_test d-fair
  fi
  phase_end
}

# --- phase: 1 MiB bodies (e) ---------------------------------------------------
phase_body() {
  phase_begin "1 MiB bodies: 2 bench/slowclient workers"
  BODY_BYTES=$("$SC" size "$BODY_SIZE") || die "bad BODY_SIZE=$BODY_SIZE"
  write_upload_lua "$WORK/upload.lua" "$BODY_BYTES"
  local size
  size=$(awk -v b="$BODY_BYTES" 'BEGIN { if (b % 1048576 == 0) printf "%d MiB", b / 1048576; else if (b % 1024 == 0) printf "%d KiB", b / 1024; else printf "%d bytes", b }')
  corral_up corral-body 2 "[\"$SC\", \"worker\"]" || die "corral rejects $WORK/corral-body.hcl"
  target corral-body corral "${CPID[corral-body]}" 0 "http://127.0.0.1:${CPORT[corral-body]}" "$WORK/corral-body.log"
  fronts body "${WPORTS[corral-body]}" "nginx (buffering on, its default)"
  PHASE_TARGETS=(nginx-body haproxy-body corral-body)
  local t
  for t in "${PHASE_TARGETS[@]}"; do
    wait_until "$t to answer" 15 answers "${URL[$t]}/small" '^ok' || die "$t does not answer ${URL[$t]}/small"
  done
  add_test e-down ka "$BODY_CONNS" "/big?size=$BODY_BYTES" "e. $size responses (GET), $BODY_CONNS connections" nginx-body nginx-body haproxy-body corral-body
  run_test e-down
  add_test e-up up "$BODY_CONNS" /upload "e. $size request bodies (POST), $BODY_CONNS connections" nginx-body nginx-body haproxy-body corral-body
  run_test e-up
  if grep -qE '\[(crit|alert|emerg)\]' "$WORK/nginx-body/error.log"; then
    grep -E '\[(crit|alert|emerg)\]' "$WORK/nginx-body/error.log" | tail -3 >&2
    die "nginx logged critical errors (see above); its numbers would be wrong"
  fi
  phase_end
}

CPU_BEFORE=$(cpu_snapshot)
CPU_START=$SECONDS
if has a || has b || has f; then phase_go; fi
if has a; then phase_node; fi
if has c || has d; then phase_hol; fi
if has e; then phase_body; fi
CPU_SHARE=$(cpu_share "$CPU_BEFORE" "$(cpu_snapshot)" $((SECONDS - CPU_START)))
ELAPSED=$((SECONDS - CPU_START))

# --- report -------------------------------------------------------------------
declare -A M_RPS M_P50 M_P99 M_ERR M_RSS M_CPU M_NOTE M_ALL
hz=$(getconf CLK_TCK)
failed=()
# col TEST TARGET N: column N of the target's rows in the results.
col() { awk -v id="$1" -v t="$2" -v n="$3" '$1 == id && $2 == t { print $n }' "$RESULTS"; }
for id in "${TESTS[@]}"; do
  for t in ${T_TARGETS[$id]}; do
    k=$id/$t
    # shellcheck disable=SC2046
    {
      M_RPS[$k]=$(median $(col "$id" "$t" 4))
      M_P50[$k]=$(median $(col "$id" "$t" 5))
      M_P99[$k]=$(median $(col "$id" "$t" 6))
      M_RSS[$k]=$(median $(col "$id" "$t" 12))
    }
    M_ALL[$k]=$(col "$id" "$t" 4 | awk '{ printf "%.0f ", $1 }')
    M_ERR[$k]=$(awk -v id="$id" -v t="$t" '$1 == id && $2 == t { e += $7 + $8 } END { print e + 0 }' "$RESULTS")
    [[ ${M_ERR[$k]} == 0 ]] || failed+=("$k")
    M_CPU[$k]=$(median $(awk -v id="$id" -v t="$t" -v hz="$hz" '$1 == id && $2 == t { print ($9 > 0 ? $11 / hz * 1e6 / $9 : 0) }' "$RESULTS"))
    case ${T_KIND[$id]} in
    hol)
      M_NOTE[$k]=$(awk -v id="$id" -v t="$t" '$1 == id && $2 == t { split($10, b, ","); print b[1], b[2] }' "$RESULTS" |
        sort -k2 -g | awk '{ r[NR] = $1; p[NR] = $2 } END { m = int((NR + 1) / 2); printf "blockers: %.0f req/s, p99 %.0f ms", r[m], p[m] }')
      ;;
    fair)
      # shellcheck disable=SC2046
      M_NOTE[$k]="max deviation from an even share: $(median $(col "$id" "$t" 10)) % (rounds: $(col "$id" "$t" 10 | tr '\n' ' ' | sed 's/ $//'))"
      ;;
    *) M_NOTE[$k]="" ;;
    esac
  done
done

echo "## corral vs nginx, HAProxy, Node cluster and PM2 ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
machine_line
echo "- $(go version 2>/dev/null || echo 'go: not found'); $("$CORRAL" version) (commit $COMMIT); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3); node $(node --version 2>/dev/null)${PM2_NOTE:+; PM2 $PM2_NOTE}; $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version 2>/dev/null | head -1)"
echo "- clients: wrk -t1 (h2load -t1) pinned to CPU $WRK_CPU with taskset; proxies and workers share all $(nproc) cores with it; ${DURATION} s per run (${FAIR_DURATION} s in d), ${WARMUP} s warm-up per target; $ROUNDS rounds, order rotated each round; cells are medians of the rounds, errors their sum"
echo "- CPU of all $(nproc) cores during the ${ELAPSED} s of the run: $CPU_SHARE"
echo "- nginx: worker_processes auto, upstream keepalive 256; HAProxy: nbthread 2, http-reuse always; corral: its defaults unless the row says otherwise; the proxies of a test front the very same worker processes, except rows marked \"own workers\" and Node cluster / PM2, which start their own copies of the same program"
echo "- proxy CPU µs/req: user+system CPU of the proxy's processes during the run (/proc/PID/stat; nginx master and workers, HAProxy, corral without its workers, the Node cluster master, PM2's daemon) over the requests completed; proxy RSS: VmRSS of the same processes right after the run"
echo
echo "| scenario | target | req/s | p50 ms | p99 ms | errors | proxy RSS MiB | proxy CPU µs/req | req/s vs nginx | notes |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
for id in "${TESTS[@]}"; do
  ref=${T_REF[$id]}
  for t in ${T_TARGETS[$id]}; do
    k=$id/$t
    printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s | %.1f | %s | %s |\n' "${T_TITLE[$id]}" "${LABEL[$t]}" "${M_RPS[$k]}" "${M_P50[$k]}" \
      "${M_P99[$k]}" "${M_ERR[$k]}" "$(mib "${M_RSS[$k]}")" "${M_CPU[$k]}" "$(ratio "${M_RPS[$k]}" "${M_RPS[$id/$ref]}")" "${M_NOTE[$k]}"
  done
done
if has c; then
  echo
  echo "In c, req/s, p50 and p99 are the instant requests'; the blockers' rate and p99 are in the notes; errors count both."
fi
for n in "${NOTES[@]}"; do
  echo
  echo "Note: $n"
done
echo
echo "req/s of each round:"
for id in "${TESTS[@]}"; do
  line="- $id:"
  for t in ${T_TARGETS[$id]}; do line+=" $t ${M_ALL[$id/$t]% };"; done
  echo "${line%;}"
done

# --- issue #12 targets ------------------------------------------------------------
echo
echo "### Targets (issue #12, item 2), from this run"
echo
echo "| target | measured | |"
echo "|---|---|---|"
# verdict NAME MEASURED_TEXT CONDITION(awk expression on a, b)
verdict() {
  local ok
  ok=$(awk -v a="$3" -v b="$4" "BEGIN { print (($5) ? \"met\" : \"missed\") }")
  echo "| $1 | $2 | $ok |"
}
have() { [[ -n ${M_RPS[$1]:-} ]]; }
for id in "${TESTS[@]}"; do
  case $id in
  a-go-* | a-node-*)
    c=${id##*-}
    kind=Go
    [[ $id == a-node-* ]] && kind=Node
    ct=corral-${id#a-}
    ct=${ct%-*}
    ng=nginx-${id#a-}
    ng=${ng%-*}
    hp=haproxy-${id#a-}
    hp=${hp%-*}
    r1=$(ratio "${M_RPS[$id/$ct]}" "${M_RPS[$id/$ng]}")
    r2=$(ratio "${M_RPS[$id/$ct]}" "${M_RPS[$id/$hp]}")
    verdict "keep-alive $c, $kind workers: >= 1.0x nginx" "${r1}x" "$r1" 1 "a >= b"
    verdict "keep-alive $c, $kind workers: >= 1.0x HAProxy" "${r2}x" "$r2" 1 "a >= b"
    verdict "CPU per request <= nginx (keep-alive $c, $kind)" "$(printf '%.1f vs %.1f µs' "${M_CPU[$id/$ct]}" "${M_CPU[$id/$ng]}")" "${M_CPU[$id/$ct]}" "${M_CPU[$id/$ng]}" "a <= b"
    if [[ $c == 256 ]]; then
      verdict "proxy RSS <= nginx at 256 connections ($kind)" "$(mib "${M_RSS[$id/$ct]}") vs $(mib "${M_RSS[$id/$ng]}") MiB" "${M_RSS[$id/$ct]}" "${M_RSS[$id/$ng]}" "a <= b"
    fi
    ;;
  b-close)
    r=$(ratio "${M_RPS[$id/corral-go]}" "${M_RPS[$id/nginx-go]}")
    verdict "new connection per request >= 1.0x nginx" "${r}x" "$r" 1 "a >= b"
    ;;
  b-tls)
    r=$(ratio "${M_RPS[$id/corral-tls]}" "${M_RPS[$id/nginx-tls]}")
    verdict "HTTPS HTTP/1.1 >= 1.0x nginx" "${r}x" "$r" 1 "a >= b"
    ;;
  b-h2)
    r=$(ratio "${M_RPS[$id/corral-tls]}" "${M_RPS[$id/haproxy-tls]}")
    verdict "HTTPS HTTP/2 >= 0.5x HAProxy" "${r}x (nginx: $(ratio "${M_RPS[$id/corral-tls]}" "${M_RPS[$id/nginx-tls]}")x)" "$r" 0.5 "a >= b"
    ;;
  f-sock)
    r=$(ratio "${M_RPS[$id/corral-sock]}" "${M_RPS[$id/nginx-sock]}")
    verdict "socket workers >= 1.0x nginx over the same sockets" "${r}x (vs nginx over TCP: $(ratio "${M_RPS[$id/corral-sock]}" "${M_RPS[$id/nginx-tcp]}")x)" "$r" 1 "a >= b"
    ;;
  c-hol)
    me=${M_P99[$id/corral-mi1]}
    for peer in cluster-hol pm2-hol; do
      have "$id/$peer" || continue
      verdict "head-of-line p99 >= 5x lower than ${LABEL[$peer]}" "$(printf '%.2f vs %.2f ms (%sx)' "$me" "${M_P99[$id/$peer]}" "$(ratio "${M_P99[$id/$peer]}" "$me")")" "${M_P99[$id/$peer]}" "$me" "a >= 5 * b"
    done
    verdict "head-of-line p99 no worse than HAProxy's" "$(printf '%.2f vs %.2f ms' "$me" "${M_P99[$id/haproxy-hol]}")" "$me" "${M_P99[$id/haproxy-hol]}" "a <= b"
    ;;
  d-fair)
    for ct in corral-def corral-mi1; do
      d=$(median $(col "$id" "$ct" 10))
      verdict "fairness within 5 % of an even share (${LABEL[$ct]})" "$d %" "$d" 5 "a <= b"
    done
    ;;
  esac
done

status=0
if ((${#failed[@]} > 0)); then
  log "non-2xx responses or socket errors from: ${failed[*]} (KEEP_WORK=1 keeps the client output)"
  status=1
fi
exit "$status"
