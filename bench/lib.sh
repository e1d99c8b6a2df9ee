# lib.sh: helpers shared by the bench scripts. Source it, do not run it.
#
# Every process a script starts goes through start_bg, so the EXIT trap can
# stop exactly those processes by PID and nothing else on the machine.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

STARTED_PIDS=()  # processes this script started, in start order
ORPHAN_PIDS=()   # corral workers, stopped by corral itself; killed only if they outlive it
LAST_PID=""

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# stop_pid PID GRACE_SECONDS: SIGTERM, wait up to GRACE, then SIGKILL.
stop_pid() {
  local pid=$1 grace=$2 deadline
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + grace))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    log "pid $pid ignored SIGTERM for ${grace}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# cleanup stops, newest first, every process start_bg started, then any corral
# worker that outlived corral. Installed as the EXIT trap by bench_init.
cleanup() {
  local rc=$? i
  trap - EXIT
  # A script whose processes are not all its children (PM2's daemon) stops
  # them in its own cleanup_hook first.
  if declare -F cleanup_hook >/dev/null; then cleanup_hook || true; fi
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED_PIDS[i]}" 20
  done
  for i in "${ORPHAN_PIDS[@]}"; do
    if alive "$i"; then
      log "worker pid $i outlived corral, killing it"
      kill -KILL "$i" 2>/dev/null || true
    fi
  done
  if [[ -n ${WORK:-} && -d $WORK && -z ${KEEP_WORK:-} ]]; then
    rm -rf "$WORK"
  elif [[ -n ${WORK:-} ]]; then
    log "kept $WORK"
  fi
  exit "$rc"
}

# bench_init makes the work directory ($WORK) and installs the traps.
bench_init() {
  WORK=$(mktemp -d /tmp/corral-bench.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# ensure_packages TOOL[:PACKAGE]...: installs the Debian packages of the
# missing tools (PACKAGE when the package is named otherwise, as h2load:nghttp2-client).
# A policy-rc.d that denies service starts keeps the packages' own
# services (nginx on :80, haproxy) from starting during the install.
ensure_packages() {
  local missing=() spec policy=/usr/sbin/policy-rc.d added=""
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  ((EUID == 0)) || die "missing ${missing[*]}; install them or run as root"
  log "installing ${missing[*]}"
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
    >"$WORK/apt.log" 2>&1 || rc=$?
  [[ -n $added ]] && rm -f "$policy"
  ((rc == 0)) || { tail -20 "$WORK/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

# build_binaries sets CORRAL and HELLO, building them into $WORK unless
# CORRAL_BIN / HELLO_BIN name prebuilt ones.
build_binaries() {
  CORRAL=${CORRAL_BIN:-$WORK/corral}
  HELLO=${HELLO_BIN:-$WORK/hello}
  if [[ -z ${CORRAL_BIN:-} ]]; then
    log "building corral"
    (cd "$REPO_DIR" && go build -o "$CORRAL" ./cmd/corral) || die "building corral failed"
  fi
  if [[ -z ${HELLO_BIN:-} ]]; then
    log "building examples/hello"
    (cd "$REPO_DIR" && go build -o "$HELLO" ./examples/hello) || die "building examples/hello failed"
  fi
}

# require_free_ports PORT...: fails when something already listens there.
require_free_ports() {
  local p
  for p in "$@"; do
    if ss -Htln "( sport = :$p )" | grep -q .; then
      die "port $p is in use; pick other ports (see the variables at the top of the script)"
    fi
  done
}

# require_free_range FIRST-LAST: require_free_ports for a whole range.
require_free_range() {
  local first=${1%-*} last=${1#*-}
  # shellcheck disable=SC2046
  require_free_ports $(seq "$first" "$last")
}

# start_bg LOGFILE CMD...: starts CMD in the background, remembers its PID for
# cleanup and leaves it in LAST_PID.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# wait_until DESCRIPTION TIMEOUT_SECONDS CMD...: polls CMD every 0.1s until it
# succeeds; returns 1 (after logging) when the deadline passes.
wait_until() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

# answers URL PATTERN: the URL answers 2xx with a body matching PATTERN.
answers() {
  curl -fsS --max-time 2 "$1" 2>/dev/null | grep -q "$2"
}

# corral_status ADMIN_ADDR: the /status JSON.
corral_status() {
  curl -fsS --max-time 2 "http://$1/status"
}

# status_check ADMIN_ADDR JQ_FILTER [JQ_ARGS...]: the /status JSON passes
# jq -e JQ_ARGS FILTER (JQ_ARGS such as --arg name value).
status_check() {
  local admin=$1 filter=$2
  shift 2
  corral_status "$admin" | jq -e "$@" "$filter" >/dev/null 2>&1
}

# start_corral CONFIG ADMIN_ADDR: starts corral, waits for /readyz and records
# its workers' PIDs so cleanup can check none outlived corral. Sets CORRAL_PID.
start_corral() {
  local config=$1 admin=$2
  start_bg "$WORK/corral.log" "$CORRAL" run -config "$config"
  CORRAL_PID=$LAST_PID
  wait_corral corral "$admin" "$WORK/corral.log"
  remember_workers "$admin"
}

# wait_corral NAME ADMIN_ADDR LOGFILE [N]: waits for corral's /readyz and, with
# N, for N ready workers over all its apps; dies with its log or /status otherwise.
wait_corral() {
  local name=$1 admin=$2 logfile=$3 n=${4:-}
  if ! wait_until "$name /readyz" 60 curl -fsS --max-time 2 "http://$admin/readyz"; then
    tail -30 "$logfile" >&2
    die "$name did not become ready"
  fi
  [[ -n $n ]] || return 0
  if ! wait_until "$name: $n ready workers" 60 status_check "$admin" "[.apps[].workers[] | select(.state == \"ready\")] | length == $n"; then
    corral_status "$admin" >&2 || true
    die "$name has no $n ready workers"
  fi
}

# remember_workers ADMIN_ADDR: adds the PIDs of corral's current workers to
# ORPHAN_PIDS.
remember_workers() {
  local pid
  for pid in $(corral_status "$1" | jq -r '.apps[].workers[].pid | select(. > 0)'); do
    ORPHAN_PIDS+=("$pid")
  done
}

# proxy_pids PID: PID and its direct children (nginx's master and workers,
# haproxy's single process), or PID alone when CHILDREN=0 (corral, whose
# children are the app workers, not the proxy).
proxy_pids() {
  echo "$1"
  if [[ ${CHILDREN:-1} == 1 ]]; then ps -o pid= --ppid "$1" 2>/dev/null || true; fi
}

# rss_kb PID: VmRSS in kB summed over proxy_pids PID.
rss_kb() {
  local total=0 p kb
  for p in $(proxy_pids "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# cpu_ticks PID: user+system CPU time in clock ticks summed over proxy_pids PID.
cpu_ticks() {
  local total=0 p t
  for p in $(proxy_pids "$1"); do
    # Fields 14 and 15 (utime, stime), counted after the "(comm)" field,
    # which may itself hold spaces.
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# cpu_snapshot: "busy steal ours" clock ticks so far: busy is user+nice+system
# of the whole machine (/proc/stat), steal what the hypervisor took, ours the
# CPU of this script's finished children (wrk, curl) and of every process
# start_bg started, with their children (proxies, workers).
cpu_snapshot() {
  local ours p
  ours=$(sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}')
  for p in "${STARTED_PIDS[@]}"; do ours=$((ours + $(cpu_ticks "$p"))); done
  awk -v ours="$ours" '$1 == "cpu" { print $2 + $3 + $4, $9, ours; exit }' /proc/stat
}

# cpu_share BEFORE AFTER SECONDS: how the machine's CPU was spent between two
# cpu_snapshots, in percent of all cores.
cpu_share() {
  awk -v a="$1" -v b="$2" -v secs="$3" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); cap = secs * hz * n / 100
    ours = y[3] - x[3]; other = (y[1] - x[1]) - ours; if (other < 0) other = 0
    printf "this benchmark %.0f %%, other processes %.0f %%, hypervisor steal %.0f %%", ours / cap, other / cap, (y[2] - x[2]) / cap }'
}

# wrk_field FILE FIELD: one number from a wrk report. FIELD is rps, p50, p99
# (latencies in ms), requests, non2xx, or sockerr (connect+read+write+timeout).
wrk_field() {
  awk -v want="$2" '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000
      if (u == "ms") return n
      if (u == "s") return n * 1000
      if (u == "m") return n * 60000
      return n
    }
    /^Requests\/sec:/ { rps = $2 }
    $2 == "requests" && $3 == "in" { requests = $1 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    END {
      if (want == "rps") print rps + 0
      else if (want == "p50") printf "%.2f\n", p50
      else if (want == "p99") printf "%.2f\n", p99
      else if (want == "non2xx") print non2xx + 0
      else if (want == "sockerr") print sockerr + 0
      else if (want == "requests") print requests + 0
    }' "$1"
}

# ratio A B: A / B with two decimals ("-" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# mib KB: kB as MiB with one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# machine_line: the report's first environment line.
machine_line() {
  echo "- machine: nproc=$(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
}

# median NUMBER...: the median (the mean of the middle two for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print 0; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# start_nginx [DIR]: checks and starts the nginx whose config is
# DIR/nginx.conf (prefix DIR, default $WORK/nginx); its pid is in LAST_PID.
start_nginx() {
  local dir=${1:-$WORK/nginx}
  nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ||
    die "nginx rejects its config: $(cat "$dir/error.log")"
  log "starting nginx ($dir)"
  start_bg "$dir/stdout.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
}

# haproxy_head: the global and defaults sections every bench HAProxy uses:
# 2 threads, HTTP keep-alive on both sides, connections to workers reused.
haproxy_head() {
  cat <<EOF
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout queue 10s
EOF
}

# write_upload_lua FILE BYTES: a wrk script that POSTs a BYTES-long body.
write_upload_lua() {
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("u", $2)
EOF
}

# start_haproxy [CONFIG]: checks and starts HAProxy on CONFIG (default
# $WORK/haproxy.cfg; its log next to it, .log for .cfg); its pid is in LAST_PID.
start_haproxy() {
  local cfg=${1:-$WORK/haproxy.cfg}
  haproxy -c -q -f "$cfg" || die "haproxy rejects its config $cfg"
  log "starting haproxy ($cfg)"
  start_bg "${cfg%.cfg}.log" haproxy -db -f "$cfg"
}
