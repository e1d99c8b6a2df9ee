#!/usr/bin/env bash
# autoscale.sh: latency under a burst of slow requests, autoscaling on vs a fixed
# pool of its min size. One corral runs two apps of examples/hello with
# max_inflight = 1 (a single-threaded app): "fixed" (instances = MIN, under /fixed)
# and "auto" (autoscale { min = MIN, max = MAX }, the default app). wrk sends the
# same burst to each in turn: CONNS connections, each asking for one request that
# takes DELAY in the worker (hello's ?delay=), for DURATION seconds. While it runs
# the script samples the app's worker count from /status; after the auto burst it
# waits until the app is back at MIN and reports how long that took and how many
# scale-down decisions it took.
#
# Usage: flock /tmp/bench.lock bench/autoscale.sh   (as root it installs wrk, jq, curl if missing)
#   DURATION=20        seconds of burst per app
#   CONNS=16 THREADS=2 wrk connections and threads
#   DELAY=100ms        time each request spends in the worker
#   MIN=1 MAX=4        the autoscale bounds; the fixed pool has MIN workers
#   SCALE_UP_AFTER=1s SCALE_DOWN_AFTER=5s COOLDOWN=1s CHECK_INTERVAL=250ms   the auto app's autoscale keys
#   CORRAL_BIN= HELLO_BIN=   prebuilt binaries instead of building from this tree
#   KEEP_WORK=1        keep the temp dir (config, logs, raw wrk output)
#   ports: CORRAL_PORT=18480 ADMIN_PORT=19480 WORKER_PORTS=22101-22130
#
# Prints the environment and a markdown table on stdout, progress on stderr. Exits
# non-zero when something fails to run, corral exits, or wrk sees a non-2xx answer or
# a socket error. Only 127.0.0.1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-20}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
DELAY=${DELAY:-100ms}
MIN=${MIN:-1}
MAX=${MAX:-4}
SCALE_UP_AFTER=${SCALE_UP_AFTER:-1s}
SCALE_DOWN_AFTER=${SCALE_DOWN_AFTER:-5s}
COOLDOWN=${COOLDOWN:-1s}
CHECK_INTERVAL=${CHECK_INTERVAL:-250ms}
CORRAL_PORT=${CORRAL_PORT:-18480}
ADMIN_PORT=${ADMIN_PORT:-19480}
WORKER_PORTS=${WORKER_PORTS:-22101-22130}
ADMIN=127.0.0.1:$ADMIN_PORT
BASE=http://127.0.0.1:$CORRAL_PORT

bench_init
ensure_packages wrk jq curl
require_free_ports "$CORRAL_PORT" "$ADMIN_PORT"
require_free_range "$WORKER_PORTS"
build_binaries

cat >"$WORK/corral.hcl" <<EOF
listen       = "127.0.0.1:$CORRAL_PORT"
worker_ports = "$WORKER_PORTS"
admin { listen = "$ADMIN" }
log { level = "info" }
app "fixed" {
  command      = ["$HELLO"]
  instances    = $MIN
  path_prefix  = "/fixed"
  max_inflight = 1
  queue { timeout = "60s" }
  health { path = "/healthz" }
}
app "auto" {
  command      = ["$HELLO"]
  max_inflight = 1
  queue { timeout = "60s" }
  health { path = "/healthz" }
  autoscale {
    min              = $MIN
    max              = $MAX
    scale_up_after   = "$SCALE_UP_AFTER"
    scale_down_after = "$SCALE_DOWN_AFTER"
    cooldown         = "$COOLDOWN"
    check_interval   = "$CHECK_INTERVAL"
  }
}
EOF
"$CORRAL" validate -config "$WORK/corral.hcl" >/dev/null || die "corral rejects its config"
log "starting corral"
start_corral "$WORK/corral.hcl" "$ADMIN"
wait_until "$MIN + $MIN ready workers" 30 status_check "$ADMIN" \
  '[.apps[].workers[] | select(.state == "ready")] | length == $n' --argjson n "$((2 * MIN))" ||
  die "corral has no $((2 * MIN)) ready workers"
for u in "$BASE/fixed/" "$BASE/"; do
  wait_until "corral to answer $u" 15 answers "$u" 'from' || die "corral does not answer $u"
done

# workers APP: how many of APP's workers are ready now.
workers() {
  corral_status "$ADMIN" | jq -r --arg app "$1" '[.apps[] | select(.name == $app) | .workers[] | select(.state == "ready")] | length'
}

# sample_workers APP OUTFILE: writes the ready count of APP every 0.2 s until killed.
sample_workers() {
  while :; do
    workers "$1" >>"$2" 2>/dev/null || true
    sleep 0.2
  done
}

# decisions APP DIRECTION: corral_autoscale_decisions_total of APP.
decisions() {
  curl -fsS --max-time 2 "http://$ADMIN/metrics" |
    awk -v want="corral_autoscale_decisions_total{app=\"$1\",direction=\"$2\"}" '$1 == want { print $2; found = 1 } END { if (!found) print 0 }'
}

status=0
declare -A ROW
# burst NAME APP URL: one wrk run against URL, sampling APP's workers.
burst() {
  local name=$1 app=$2 url=$3 sampler peak out=$WORK/wrk-$1.txt
  : >"$WORK/workers-$app.txt"
  start_bg "$WORK/sampler-$app.log" sample_workers "$app" "$WORK/workers-$app.txt"
  sampler=$LAST_PID
  log "burst against $name: wrk -t$THREADS -c$CONNS -d${DURATION}s $url"
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 60s --latency "$url" >"$out" 2>&1 ||
    { cat "$out" >&2; die "wrk against $name failed"; }
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  alive "$CORRAL_PID" || { tail -20 "$WORK/corral.log" >&2; die "corral exited during the burst"; }
  peak=$(sort -n "$WORK/workers-$app.txt" | tail -1)
  local non2xx sockerr
  non2xx=$(wrk_field "$out" non2xx) sockerr=$(wrk_field "$out" sockerr)
  if ((non2xx + sockerr > 0)); then
    log "$name: $non2xx non-2xx answers, $sockerr socket errors"
    status=1
  fi
  ROW[$name]=$(printf '| %s | %s -> %s | %.0f | %.0f | %.0f | %s / %s |' "$name" "$MIN" "${peak:-?}" \
    "$(wrk_field "$out" rps)" "$(wrk_field "$out" p50)" "$(wrk_field "$out" p99)" "$non2xx" "$sockerr")
  log "$name: $(wrk_field "$out" rps) req/s, p50 $(wrk_field "$out" p50) ms, p99 $(wrk_field "$out" p99) ms, peak $peak workers"
}

burst "fixed pool of $MIN" fixed "$BASE/fixed/?delay=$DELAY"
ups_before=$(decisions auto up)
burst "autoscale $MIN..$MAX" auto "$BASE/?delay=$DELAY"
ups=$(($(decisions auto up) - ups_before))

# After the burst: back to MIN, one worker at a time.
start=$SECONDS
wait_until "auto back at $MIN workers" 300 status_check "$ADMIN" \
  '.apps[] | select(.name == "auto") | .instances == $n and ([.workers[]] | length == $n)' --argjson n "$MIN" ||
  { status=1; log "auto did not return to $MIN workers"; }
back=$((SECONDS - start))
downs=$(decisions auto down)

echo "## autoscale.sh: a burst of slow requests, autoscaling vs a fixed pool"
echo
echo "- machine: $(nproc) CPUs, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- corral $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'), $(go version | awk '{print $3}')"
echo "- burst: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, every request ?delay=$DELAY in an examples/hello worker, max_inflight = 1"
echo "- autoscale { min = $MIN, max = $MAX, scale_up_after = \"$SCALE_UP_AFTER\", scale_down_after = \"$SCALE_DOWN_AFTER\", cooldown = \"$COOLDOWN\", check_interval = \"$CHECK_INTERVAL\" }"
echo
echo "| pool | ready workers (start -> peak) | req/s | p50 ms | p99 ms | non-2xx / socket errors |"
echo "|---|---|---|---|---|---|"
echo "${ROW[fixed pool of $MIN]}"
echo "${ROW[autoscale $MIN..$MAX]}"
echo
echo "autoscale: $ups scale-up decisions in the burst; back at $MIN workers ${back} s after it, in $downs scale-down decisions (one worker each)."
exit "$status"
