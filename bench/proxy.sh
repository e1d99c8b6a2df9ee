#!/usr/bin/env bash
# proxy.sh: corral vs nginx vs HAProxy in front of the very same two worker
# processes (examples/hello started by corral), same client (wrk), same run.
#
# Usage: bench/proxy.sh              (as root it installs wrk, nginx, haproxy, jq if missing)
#   DURATION=10   seconds per wrk run
#   ROUNDS=3      rounds; each round runs every target once, in a rotated order
#   THREADS=2 CONNS=64  wrk -t/-c
#   WARMUP=2      seconds of unrecorded load per target before the rounds
#   CLOSE=1       also measure nginx and corral with "Connection: close" (0 = skip)
#   MIN_RATIO=    e.g. 0.8: exit 1 when corral's req/s / nginx's req/s is lower
#   CORRAL_BIN= HELLO_BIN=   prebuilt binaries instead of building from this tree
#   KEEP_WORK=1   keep the temp dir (configs, logs, raw wrk output)
#   SKIP_CORRAL=1 dry run without corral: the script starts the two workers itself
#   PERF=1        profile corral with perf during its first round; prints its hottest functions
#   ports: CORRAL_PORT=18080 ADMIN_PORT=19180 NGINX_PORT=18081 HAPROXY_PORT=18082
#          WORKER_PORTS=21901-21908 (corral needs twice instances+surge ports)
#
# Prints the environment and a markdown table on stdout; progress on stderr.
# Exits non-zero when something fails to run, a proxy exits, or wrk sees a
# non-2xx answer or a socket error; on the ratio only when MIN_RATIO is set. Only 127.0.0.1 is ever used.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
CLOSE=${CLOSE:-1}
MIN_RATIO=${MIN_RATIO:-}
SKIP_CORRAL=${SKIP_CORRAL:-0}
PERF=${PERF:-0}
CORRAL_PORT=${CORRAL_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-19180}
NGINX_PORT=${NGINX_PORT:-18081}
HAPROXY_PORT=${HAPROXY_PORT:-18082}
WORKER_PORTS=${WORKER_PORTS:-21901-21908}
ADMIN=127.0.0.1:$ADMIN_PORT

bench_init
ensure_packages wrk nginx haproxy jq curl
if [[ $PERF == 1 ]] && ! command -v perf >/dev/null; then die "PERF=1 needs perf (apt-get install linux-perf)"; fi
require_free_ports "$CORRAL_PORT" "$ADMIN_PORT" "$NGINX_PORT" "$HAPROXY_PORT"
require_free_range "$WORKER_PORTS"
if [[ $SKIP_CORRAL == 1 ]]; then CORRAL_BIN=none; fi
build_binaries

# --- the two workers ------------------------------------------------------------
if [[ $SKIP_CORRAL == 1 ]]; then
  # Dry run of the nginx/HAProxy half: the script starts the two workers.
  PORTS=("${WORKER_PORTS%-*}" "$((${WORKER_PORTS%-*} + 1))")
  for i in 0 1; do
    start_bg "$WORK/hello-$((i + 1)).log" env PORT="${PORTS[i]}" CORRAL_WORKER="hello-$((i + 1))" "$HELLO"
  done
else
  # corral owns the two workers every proxy fronts.
  cat >"$WORK/corral.hcl" <<EOF
listen       = "127.0.0.1:$CORRAL_PORT"
worker_ports = "$WORKER_PORTS"
admin { listen = "$ADMIN" }
log { level = "warn" }
app "hello" {
  command   = ["$HELLO"]
  instances = 2
  health { path = "/healthz" }
}
EOF
  log "starting corral"
  start_corral "$WORK/corral.hcl" "$ADMIN"
  if ! wait_until "2 ready workers" 30 status_check "$ADMIN" '[.apps[0].workers[] | select(.state == "ready")] | length == 2'; then
    corral_status "$ADMIN" >&2 || true
    die "corral has no 2 ready workers"
  fi
  mapfile -t PORTS < <(corral_status "$ADMIN" | jq -r '.apps[0].workers[] | select(.state == "ready") | .port' | sort -n)
  ((${#PORTS[@]} == 2)) || die "expected 2 worker ports, got: ${PORTS[*]}"
fi
log "worker ports: ${PORTS[*]}"

# --- nginx --------------------------------------------------------------------
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
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
  # nginx closes a keep-alive connection after 1000 requests by default;
  # wrk would then reconnect, which measures something the others don't do.
  keepalive_requests 1000000;
  upstream workers {
    server 127.0.0.1:${PORTS[0]};
    server 127.0.0.1:${PORTS[1]};
    keepalive 64;
    keepalive_requests 1000000;
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
NGINX_PID=$LAST_PID

# --- HAProxy ------------------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<EOF
$(haproxy_head)
frontend public
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend workers
backend workers
  server w1 127.0.0.1:${PORTS[0]}
  server w2 127.0.0.1:${PORTS[1]}
EOF
start_haproxy
HAPROXY_PID=$LAST_PID

# --- targets ------------------------------------------------------------------
declare -A URL=(
  [direct]="http://127.0.0.1:${PORTS[0]}/"
  [nginx]="http://127.0.0.1:$NGINX_PORT/"
  [haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
  [corral]="http://127.0.0.1:$CORRAL_PORT/"
)
TARGETS=(direct nginx haproxy corral)
CLOSE_TARGETS=(nginx-close corral-close)
if [[ $SKIP_CORRAL == 1 ]]; then
  TARGETS=(direct nginx haproxy)
  CLOSE_TARGETS=(nginx-close)
fi
declare -A LOGS=([nginx]=$WORK/nginx/error.log [haproxy]=$WORK/haproxy.log [corral]=$WORK/corral.log [direct]=/dev/null)
for t in "${TARGETS[@]}"; do
  if ! wait_until "$t to answer" 15 answers "${URL[$t]}" '^hello from '; then
    tail -20 "${LOGS[$t]}" >&2
    die "$t does not answer ${URL[$t]}"
  fi
done
log "${TARGETS[*]} answer"
if [[ $CLOSE != 0 ]]; then
  for t in "${CLOSE_TARGETS[@]}"; do URL[$t]=${URL[${t%-close}]}; done
  TARGETS+=("${CLOSE_TARGETS[@]}")
fi

# run_wrk TARGET SECONDS OUTFILE
run_wrk() {
  local args=(-t"$THREADS" -c"$CONNS" -d"$2"s --latency)
  [[ $1 == *-close ]] && args+=(-H "Connection: close")
  wrk "${args[@]}" "${URL[$1]}" >"$3" 2>&1 || { cat "$3" >&2; die "wrk against $1 failed"; }
}

# proxy_cpu TARGET: CPU ticks the target's proxy has used so far (0 for direct).
proxy_cpu() {
  case ${1%-close} in
  nginx) cpu_ticks "$NGINX_PID" ;;
  haproxy) cpu_ticks "$HAPROXY_PID" ;;
  corral) CHILDREN=0 cpu_ticks "$CORRAL_PID" ;;
  *) echo 0 ;;
  esac
}

CPU_BEFORE=$(cpu_snapshot)
CPU_START=$SECONDS
if ((WARMUP > 0)); then
  log "warming up (${WARMUP}s each)"
  for t in "${TARGETS[@]}"; do run_wrk "$t" "$WARMUP" "$WORK/warmup-$t.txt"; done
fi

n=${#TARGETS[@]}
declare -A TICKS
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    t=${TARGETS[(i + r - 1) % n]}
    perf_pid=""
    if [[ $PERF == 1 && $t == corral && $r == 1 ]]; then
      # Sampling skips the first and last second, when wrk connects and stops.
      start_bg "$WORK/perf.log" perf record -F 499 -g -p "$CORRAL_PID" -o "$WORK/perf.data" -- sleep $((DURATION > 3 ? DURATION - 2 : 1))
      perf_pid=$LAST_PID
    fi
    c0=$(proxy_cpu "$t")
    run_wrk "$t" "$DURATION" "$WORK/wrk-$t-$r.txt"
    TICKS[$t-$r]=$(($(proxy_cpu "$t") - c0))
    [[ -z $perf_pid ]] || wait "$perf_pid" || log "perf record failed: $(tail -3 "$WORK/perf.log")"
    log "round $r/$ROUNDS $t: $(wrk_field "$WORK/wrk-$t-$r.txt" rps) req/s"
  done
done

# Sampled right after the last run, while the proxies still hold their buffers.
declare -A RSS=([nginx]=$(rss_kb "$NGINX_PID") [haproxy]=$(rss_kb "$HAPROXY_PID") [corral]=0)
[[ $SKIP_CORRAL == 1 ]] || RSS[corral]=$(CHILDREN=0 rss_kb "$CORRAL_PID")
CPU_SHARE=$(cpu_share "$CPU_BEFORE" "$(cpu_snapshot)" $((SECONDS - CPU_START)))
for t in nginx haproxy corral; do
  [[ $t == corral && $SKIP_CORRAL == 1 ]] && continue
  pid_var=${t^^}_PID
  if ! alive "${!pid_var}"; then
    tail -20 "${LOGS[$t]}" >&2
    die "$t (pid ${!pid_var}) exited during the benchmark"
  fi
done

# --- report -------------------------------------------------------------------
declare -A RPS P50 P99 CPU ERRS ALL
failed=()
hz=$(getconf CLK_TCK)
for t in "${TARGETS[@]}"; do
  rps=() p50=() p99=() cpu=() non2xx=0 sockerr=0
  for ((r = 1; r <= ROUNDS; r++)); do
    f=$WORK/wrk-$t-$r.txt
    rps+=("$(wrk_field "$f" rps)")
    cpu+=("$(awk -v t="${TICKS[$t-$r]}" -v hz="$hz" -v n="$(wrk_field "$f" requests)" 'BEGIN { print (n > 0 ? t / hz * 1e6 / n : 0) }')")
    p50+=("$(wrk_field "$f" p50)")
    p99+=("$(wrk_field "$f" p99)")
    non2xx=$((non2xx + $(wrk_field "$f" non2xx)))
    sockerr=$((sockerr + $(wrk_field "$f" sockerr)))
  done
  RPS[$t]=$(median "${rps[@]}")
  P50[$t]=$(median "${p50[@]}")
  P99[$t]=$(median "${p99[@]}")
  CPU[$t]=$(median "${cpu[@]}")
  ALL[$t]=$(printf '%.0f ' "${rps[@]}")
  ERRS[$t]="$non2xx / $sockerr"
  ((non2xx == 0 && sockerr == 0)) || failed+=("$t")
done

echo "## corral vs nginx vs HAProxy ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
machine_line
echo "- $(go version 2>/dev/null || echo 'go: not found'); $([[ $SKIP_CORRAL == 1 ]] && echo "corral skipped" || "$CORRAL" version); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- load: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency; rounds: $ROUNDS (rotated order), each cell the median of rounds; wrk, proxy and workers share the same $(nproc) cores"
echo "- CPU of all $(nproc) cores during the runs: $CPU_SHARE (other processes compete with wrk, proxies and workers)"
echo "- backends: 2 examples/hello workers on ports ${PORTS[*]}, the same processes behind every proxy; \"direct\" is one worker without a proxy"
echo
echo "| proxy | req/s | p50 ms | p99 ms | vs nginx | proxy CPU µs/req | proxy RSS MiB | non-2xx / socket errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for t in "${TARGETS[@]}"; do
  case $t in
  direct) name="direct (1 worker, no proxy)" base=${RPS[nginx]} rss="-" cpu="-" ;;
  *-close) name="${t%-close} (Connection: close)" base=${RPS[nginx-close]} rss="-" cpu=$(printf '%.1f' "${CPU[$t]}") ;;
  *) name=$t base=${RPS[nginx]} rss=$(mib "${RSS[$t]}") cpu=$(printf '%.1f' "${CPU[$t]}") ;;
  esac
  printf '| %s | %.0f | %.2f | %.2f | %s | %s | %s | %s |\n' "$name" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
    "$(ratio "${RPS[$t]}" "$base")" "$cpu" "$rss" "${ERRS[$t]}"
done
echo
echo "req/s of each round:"
for t in "${TARGETS[@]}"; do printf -- '- %s: %s\n' "$t" "${ALL[$t]}"; done

if [[ -s $WORK/perf.data ]]; then
  echo
  echo "corral's hottest functions (perf, round 1, % of samples including callees, user space):"
  echo '```'
  perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
    grep '%' | grep -v '\[k\]' | sed 's/[ -]*$//' | head -30 || true
  echo '```'
fi

status=0
if ((${#failed[@]} > 0)); then
  log "non-2xx responses or socket errors from: ${failed[*]} (KEEP_WORK=1 keeps the wrk output)"
  status=1
fi
if [[ -n $MIN_RATIO && $SKIP_CORRAL != 1 ]]; then
  r=$(ratio "${RPS[corral]}" "${RPS[nginx]}")
  if awk -v r="$r" -v m="$MIN_RATIO" 'BEGIN { exit !(r < m) }'; then
    log "corral/nginx = $r, below MIN_RATIO=$MIN_RATIO"
    status=1
  else
    log "corral/nginx = $r, at least MIN_RATIO=$MIN_RATIO"
  fi
fi
exit "$status"
