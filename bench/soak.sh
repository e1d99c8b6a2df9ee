#!/usr/bin/env bash
# soak.sh: corral under load for a given time while its workers are killed
# (SIGKILL), frozen (SIGSTOP, then SIGCONT), rolled and scaled and its config
# is reloaded (valid and broken edits); then a summary table and leak checks
# (goroutines, open fds, RSS). Exits 1 on a leak, on a failed request that was
# not in flight on a worker it killed, or on a chaos step that did not reach
# its state. See bench/README.md.
#
#   bench/soak.sh [-d DURATION] [soak run flags...]
#   flock /tmp/bench.lock bench/soak.sh -d 30m     # the long run
#   bench/soak.sh -d 30s -warmup 5s                # .ci/run's short form
#
# Settings: CORRAL_BIN (a prebuilt corral), KEEP_WORK=1 (keep the config,
# corral.log, chaos.log and failures.log in /tmp/corral-bench.*).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

args=()
while (($#)); do
  case $1 in
    -d) args+=(-d "$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

bench_init
CORRAL=${CORRAL_BIN:-$WORK/corral}
if [[ -z ${CORRAL_BIN:-} ]]; then
  log "building corral"
  (cd "$REPO_DIR" && go build -o "$CORRAL" ./cmd/corral) || die "building corral failed"
fi
log "building bench/soak"
(cd "$REPO_DIR" && go build -o "$WORK/soak" ./bench/soak) || die "building bench/soak failed"
log "commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO_DIR" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'), $(machine_line | sed 's/^- //')"

# soak runs corral as its child and stops it (and so its workers) itself;
# start_bg lets cleanup stop soak too on Ctrl-C or an error.
: >"$WORK/soak.out"
start_bg "$WORK/soak.out" "$WORK/soak" run -corral "$CORRAL" -dir "$WORK" "${args[@]}"
soak_pid=$LAST_PID
tail -n +1 -f --pid="$soak_pid" "$WORK/soak.out" &
tail_pid=$!
rc=0
wait "$soak_pid" || rc=$?
wait "$tail_pid" 2>/dev/null || true
if ((rc != 0)) && [[ -z ${KEEP_WORK:-} ]]; then
  KEEP_WORK=1 # keep the logs of a failed soak
fi
exit "$rc"
