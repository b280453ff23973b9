#!/usr/bin/env bash
# Instructions mmgate executes per proxied request, counted by valgrind's
# callgrind: repeatable to about ±5 % on a quiet machine and ±10 % on a busy
# one (how many requests each wake-up finds ready varies; take the median
# of three runs), where wrk's requests per second vary by tens of percent.
# For where the instructions go, keep the profile (PROFILE=path) and read
# it with `callgrind_annotate --inclusive=yes path`.
# Compare two builds with it before trusting a small optimisation.
#
#   bench/instructions.sh [BINARY]      # default: target/release/mmgate
#   PROFILE=/tmp/cg.out bench/instructions.sh   # also keep the loaded run's profile
#   MODE=graphql bench/instructions.sh  # the 1 KB GraphQL POST instead of the GET
#   MODE=post bench/instructions.sh     # a small REST POST: the GET's path without sharing
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
BIN=${1:-target/release/mmgate}
require valgrind:valgrind nginx:nginx-light
[[ -x $BIN ]] || cargo build --release --locked --bin mmgate 2>&1 | tail -1
LAT=$(latency_probe)
work=$(mktemp -d)
trap 'pkill -f "nginx -c $work" 2>/dev/null || true; rm -rf "$work"' EXIT
UP=18181 MMG=18183 ADMIN=18193 KEY=bench-key RATE=400 SECONDS_=5

write_upstream_conf "$work" "$UP" "$KEY"
nginx -c "$work/upstream.conf" -e "$work/upstream.err" &
write_mmgate_conf "$work" "$MMG" "$ADMIN" "$UP" "$KEY"
case ${MODE:-rest} in
  rest) TARGET=/reports/production WHAT="keep-alive GET /reports/production" ;;
  graphql)
    write_graphql_request "$work"
    export PROBE_BODY="$work/graphql.json"
    TARGET=/graphql WHAT="keep-alive POST /graphql of $(wc -c <"$work/graphql.json") bytes, checked"
    ;;
  post)
    # Not a read (the route is not read_only): it never shares, so GET minus
    # POST is about what sharing reads costs.
    printf '{"n":1}' >"$work/post.json"
    export PROBE_BODY="$work/post.json"
    TARGET=/reports/production WHAT="keep-alive POST /reports/production of 7 bytes, not shared"
    ;;
  *) echo "MODE is rest, graphql or post" >&2; exit 2 ;;
esac

run() { # requests-per-second (0: none) -> total instructions
  TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" "$BIN" --config "$work/mmgate.toml" >"$work/vg.$1" 2>&1 &
  local pid=$!
  wait_for_ports "$MMG"
  if [[ $1 != 0 ]]; then
    "$LAT" "http://127.0.0.1:$UP$TARGET" "http://127.0.0.1:$MMG$TARGET" "$KEY" "$1" "$SECONDS_" >/dev/null
  fi
  sleep 1
  kill -INT $pid
  wait $pid || true
  local profile total startup
  profile=$(callgrind_annotate --inclusive=yes --threshold=100 "$work/cg.$1" 2>/dev/null)
  total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' <<<"$profile")
  # quanta calibrates the TSC once at start (the limiters' clock) for a fixed
  # time, not a fixed count: millions of instructions that differ from run to
  # run. Left out of both runs, so that they do not swing the difference.
  startup=$(awk '/mmgate::limit::Limiters::new \[/ {gsub(",", "", $1); print $1; exit}' <<<"$profile")
  echo $(( total - ${startup:-0} ))
}
idle=$(run 0)
busy=$(run $RATE)
if [[ -n ${PROFILE:-} ]]; then cp "$work/cg.$RATE" "$PROFILE"; cp "$work/cg.0" "$PROFILE.idle"; fi
# The part spent polling tasks (hyper, mmgate, the upstream connections):
# it leaves out waiting in epoll and timers, whose share per request depends
# on how many requests each wake-up finds, so it moves by ~1 % between runs
# where the total moves by ~5 %: compare builds with it.
in_tasks() {
  callgrind_annotate --inclusive=yes --threshold=100 "$work/cg.$1" 2>/dev/null \
    | awk '/current_thread::Context::run_task \[/ {gsub(",", "", $1); print $1; exit}'
}
# The latency probe sends half of its requests through mmgate, plus 50 to warm up.
requests=$(( RATE * SECONDS_ / 2 + 50 ))
echo "instructions per proxied request: $(( (busy - idle) / requests )) ($requests $WHAT, access log on)"
echo "of which polling tasks: $(( ($(in_tasks $RATE) - $(in_tasks 0)) / requests ))"
