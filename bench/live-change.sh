#!/usr/bin/env bash
# live-change.sh: changes a running corral under load and checks that no
# request fails. corral runs 2 workers of examples/hello; while wrk keeps 32
# connections busy the script
#   1. scales to 4 workers   (rewrites the config file in place: same inode)
#   2. changes env GREETING  (sed -i: a new file renamed over the old one)
#                            -> rolling restart of every worker
#   3. sends SIGUSR2         -> another rolling restart
#   4. scales to 1 worker    (in place again) -> 3 workers drain and stop
#   5. writes an invalid config (instances = 0) -> the reload is refused and
#      the running worker keeps serving
# waiting after each step until /status shows the expected state. Then it
# prints wrk's summary and each step's reload / roll outcome from /status.
#
# Usage: bench/live-change.sh     (as root it installs wrk and jq if missing)
#   DURATION=25 CONNS=32 THREADS=2   wrk settings
#   STEP_TIMEOUT=60   seconds each step may take to reach its state
#   SETTLE=2          seconds of load held in each state before the next step
#   CORRAL_BIN= HELLO_BIN=   prebuilt binaries; KEEP_WORK=1 keeps the temp dir
#   ports: CORRAL_PORT=18180 ADMIN_PORT=19280 WORKER_PORTS=21911-21930
#
# Exits non-zero when wrk reports any non-2xx/3xx response or socket error
# (connect, read, write, timeout), when a step does not reach its state in
# time, or when the steps outlast the load. Only 127.0.0.1 is ever used.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-25}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
SETTLE=${SETTLE:-2}
CORRAL_PORT=${CORRAL_PORT:-18180}
ADMIN_PORT=${ADMIN_PORT:-19280}
WORKER_PORTS=${WORKER_PORTS:-21911-21930}
ADMIN=127.0.0.1:$ADMIN_PORT
URL=http://127.0.0.1:$CORRAL_PORT/

bench_init
ensure_packages wrk jq curl
require_free_ports "$CORRAL_PORT" "$ADMIN_PORT"
require_free_range "$WORKER_PORTS"
build_binaries
CONFIG=$WORK/corral.hcl

# write_config INSTANCES GREETING: rewrites $CONFIG in place (truncate and
# write the same inode), the edit some file watchers miss.
write_config() {
  cat >"$CONFIG" <<EOF
listen       = "127.0.0.1:$CORRAL_PORT"
worker_ports = "$WORKER_PORTS"
admin { listen = "$ADMIN" }
log { level = "warn" }
app "hello" {
  command      = ["$HELLO"]
  env          = { GREETING = "$2" }
  instances    = $1
  stop_timeout = "10s"
  health {
    path     = "/healthz"
    interval = "250ms"
    timeout  = "250ms"
  }
}
EOF
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# workers_filter N: jq filter true when the app wants N workers and has
# exactly N, all ready.
workers_filter() {
  echo ".apps[0].instances == $1 and (.apps[0].workers | length) == $1 and ([.apps[0].workers[] | select(.state == \"ready\")] | length) == $1"
}

# roll_done N BEFORE: a rolling restart newer than the one in BEFORE (a
# roll_mark) has finished, N workers are ready, and none of them is a process
# that ran before: a roll that says done must have replaced every worker.
roll_done() {
  status_check "$ADMIN" "(.apps[0].roll.started // \"\") != \$before.started and .apps[0].roll.state == \"done\"
    and $(workers_filter "$1") and ([.apps[0].workers[].pid] - \$before.pids | length) == $1" --argjson before "$2"
}

# roll_mark: the app's last roll start and worker PIDs, for roll_done.
roll_mark() { corral_status "$ADMIN" | jq -c '{started: (.apps[0].roll.started // ""), pids: [.apps[0].workers[].pid]}'; }

# greeting_changed N BEFORE: roll_done, and the workers answer with the new
# greeting.
greeting_changed() {
  roll_done "$1" "$2" && answers "$URL" '^changed from '
}

write_config 2 hello
log "starting corral"
start_corral "$CONFIG" "$ADMIN"
wait_until "2 ready workers" 30 status_check "$ADMIN" "$(workers_filter 2)" || die "corral has no 2 ready workers"
answers "$URL" '^hello from ' || die "corral does not answer $URL"

log "starting wrk -t$THREADS -c$CONNS -d${DURATION}s"
LOAD_START=$(now)
start_bg "$WORK/wrk.txt" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION"s --latency "$URL"
WRK_PID=$LAST_PID

STEPS=()
step_failed=0
# record NAME STEP_START OK: one row of the steps table from /status.
record() {
  local name=$1 start=$2 ok=$3 done st outcome
  done=$(now)
  st=$(corral_status "$ADMIN" || echo '{}')
  outcome=$(jq -r '[
      (if .last_reload then (.last_reload.trigger + ", " + (if .last_reload.applied then "applied" else "NOT applied" end)
        + (if .last_reload.changes then " (" + .last_reload.changes + ")" else "" end)
        + ((.last_reload.problems // []) | map("; " + .) | join(""))
        + (if .last_reload.error then "; " + .last_reload.error else "" end)) else "none" end),
      (.apps[0].roll.state // "none") + (if .apps[0].roll.reason then " (" + .apps[0].roll.reason + ")" else "" end)
        + (if .apps[0].roll.message then ": " + .apps[0].roll.message else "" end),
      ([.apps[0].workers[] | .id + "=" + .state + " gen " + (.generation | tostring)] | join(" "))
    ] | join(" | ")' <<<"$st" 2>/dev/null || echo "no status | | ")
  STEPS+=("| $name | $(secs "$LOAD_START" "$start") | $(secs "$start" "$done") | $([[ $ok == 1 ]] && echo ok || echo TIMED OUT) | $outcome |")
  [[ $ok == 1 ]] || step_failed=1
  remember_workers "$ADMIN" || true
  log "$name: $([[ $ok == 1 ]] && echo "done in $(secs "$start" "$done")s" || echo "timed out")"
}

# run_step NAME ACTION CHECK...: does ACTION (a shell snippet), then waits
# for CHECK to succeed, then holds the new state under load for SETTLE.
run_step() {
  local name=$1 action=$2 start ok=1
  shift 2
  sleep "$SETTLE"
  start=$(now)
  eval "$action"
  wait_until "$name" "$STEP_TIMEOUT" "$@" || ok=0
  record "$name" "$start" "$ok"
}

sleep 1 # let wrk open its connections before the first change
run_step "scale 2 -> 4 (in-place write)" 'write_config 4 hello' \
  status_check "$ADMIN" "$(workers_filter 4) and .last_reload.applied == true"
before=$(roll_mark)
run_step "env GREETING=changed (sed -i)" "sed -i 's/GREETING = \"hello\"/GREETING = \"changed\"/' \"\$CONFIG\"" \
  greeting_changed 4 "$before"
before=$(roll_mark)
run_step "SIGUSR2 rolling restart" 'kill -USR2 "$CORRAL_PID"' roll_done 4 "$before"
run_step "scale 4 -> 1 (in-place write)" 'write_config 1 changed' \
  status_check "$ADMIN" "$(workers_filter 1) and .last_reload.applied == true"
run_step "invalid edit: instances = 0" 'write_config 0 changed' \
  status_check "$ADMIN" ".last_reload.applied == false and (.last_reload.problems | length) > 0 and $(workers_filter 1)"

outlasted=0
if ! alive "$WRK_PID"; then
  outlasted=1
  log "the steps took longer than the load (${DURATION}s): raise DURATION"
fi
log "waiting for wrk to finish"
wrk_rc=0
wait "$WRK_PID" || wrk_rc=$?
answers "$URL" '^changed from ' || log "corral no longer answers after the steps"

non2xx=$(wrk_field "$WORK/wrk.txt" non2xx)
sockerr=$(wrk_field "$WORK/wrk.txt" sockerr)

echo "## corral live change under load ($(date -u '+%Y-%m-%d %H:%M UTC'), nproc=$(nproc), $("$CORRAL" version))"
echo
echo '```'
cat "$WORK/wrk.txt"
echo '```'
echo
echo "| step | at s | took s | reached | last reload (/status afterwards) | last roll | workers |"
echo "|---|---:|---:|---|---|---|---|"
printf '%s\n' "${STEPS[@]}"
echo
echo "final workers: $(corral_status "$ADMIN" | jq -c '[.apps[0].workers[] | {id, port, state, generation}]' || echo unknown)"
if [[ -s $WORK/corral.log ]]; then
  echo
  echo "corral log (warn and above, last 20 lines):"
  echo '```'
  tail -20 "$WORK/corral.log"
  echo '```'
fi
echo
echo "result: $non2xx non-2xx/3xx responses, $sockerr socket errors, wrk exit $wrk_rc"

status=0
if ((non2xx > 0 || sockerr > 0)); then
  log "requests failed during the changes"
  status=1
fi
((wrk_rc == 0)) || status=1
((step_failed == 0)) || status=1
((outlasted == 0)) || status=1
exit "$status"
