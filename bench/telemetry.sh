#!/usr/bin/env bash
# What OpenTelemetry tracing costs: mmgate with traces off, sampled at 100 %
# and at 1 %, side by side (three instances on core 0, one runtime thread
# each; wrk and an nginx upstream that also accepts the OTLP exports on
# core 1), every GET different, alternating rounds, medians.
#
#   bench/telemetry.sh            # ROUNDS=3 DURATION=10s CONNS=64
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
KEY="mm-bench-key-$(date +%s)"
UP=18181
require nginx:nginx-light wrk:wrk taskset:util-linux
cargo build --release --locked --bin mmgate 2>&1 | tail -1

start_workdir

write_upstream_conf "$work" "$UP" "$KEY"
taskset -c 1 nginx -c "$work/upstream.conf" -e "$work/upstream.err" & pids+=($!)

declare -A port=([off]=18183 [all]=18184 [one_percent]=18185)
declare -A telemetry=(
  [off]=""
  [all]=$'[telemetry]\notlp_endpoint = "http://127.0.0.1:'$UP$'"\nsampling_ratio = 1.0'
  [one_percent]=$'[telemetry]\notlp_endpoint = "http://127.0.0.1:'$UP$'"\nsampling_ratio = 0.01'
)
admin=18193
for mode in off all one_percent; do
  mkdir -p "$work/$mode"
  write_mmgate_conf "$work/$mode" "${port[$mode]}" "$admin" "$UP" "$KEY"
  printf '%s\n' "${telemetry[$mode]}" >> "$work/$mode/mmgate.toml"
  TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/mmgate --config "$work/$mode/mmgate.toml" 2>"$work/$mode/log" & pids+=($!)
  wait_for_ports "${port[$mode]}" "$admin"
  admin=$((admin + 1))
done

write_distinct_lua "$work"

declare -A results
for round in $(seq "$ROUNDS"); do
  order="off all one_percent"
  (( round % 2 == 0 )) && order="one_percent all off"
  for mode in $order; do
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/distinct.lua" "http://127.0.0.1:${port[$mode]}")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "FAIL: $mode: $out" >&2; exit 1; fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    results[$mode]+="$rps "
    echo "round $round $mode: $rps req/s" >&2
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
off=$(median "${results[off]}")
echo
echo "every GET different, wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds (medians, req/s)"
for mode in off all one_percent; do
  m=$(median "${results[$mode]}")
  printf '%-12s %8.0f  %.2f x off\n' "$mode" "$m" "$(awk -v a="$m" -v b="$off" 'BEGIN{print a/b}')"
done
for pair in all:18194 one_percent:18195; do
  metrics=$(curl -s "http://127.0.0.1:${pair#*:}/metrics")
  exported=$(awk '/^mmgate_telemetry_spans_exported_total/ {print $2}' <<<"$metrics")
  dropped=$(awk '/^mmgate_telemetry_spans_dropped_total/ {print $2}' <<<"$metrics")
  echo "${pair%%:*}: spans exported $exported, dropped $dropped"
done
