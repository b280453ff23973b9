#!/usr/bin/env bash
# Two mmgate builds side by side, in the harness of bench/load.sh: the same
# upstream, config and wrk load, each on core 0 with TOKIO_WORKER_THREADS=1,
# alternating within every round; medians, ranges and the B/A ratio.
#
#   bench/ab.sh path/to/mmgate-A path/to/mmgate-B     # ROUNDS=5 DURATION=10s CONNS=64
#
# For a decision between two implementations (say, two ways of writing the
# access line), measured in one run rather than across noisy runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
A=$(realpath "$1") B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
KEY="mm-bench-key-$(date +%s)"
UP=18181 PA=18182 PB=18183 AA=18192 AB=18193

require nginx:nginx-light wrk:wrk taskset:util-linux
start_workdir

write_upstream_conf "$work" "$UP" "$KEY"
taskset -c 1 nginx -c "$work/upstream.conf" -e "$work/upstream.err" & pids+=($!)
mkdir -p "$work/a" "$work/b"
write_mmgate_conf "$work/a" "$PA" "$AA" "$UP" "$KEY"
write_mmgate_conf "$work/b" "$PB" "$AB" "$UP" "$KEY"
TOKIO_WORKER_THREADS=1 taskset -c 0 "$A" --config "$work/a/mmgate.toml" 2>"$work/a.log" & pids+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 "$B" --config "$work/b/mmgate.toml" 2>"$work/b.log" & pids+=($!)
wait_for_ports $UP $PA $PB $AA $AB

QUERY='query MachineUtilization($start: timestamptz!, $end: timestamptz!) { machines(where: {decommissionedAt: {_is_null: true}}, order_by: {name: asc}) { machineRef name machineGroup { name } activities(where: {startAt: {_gte: $start}, endAt: {_lte: $end}}, order_by: {startAt: asc}, limit: 500) { activityRef startAt endAt state activitySet { activitySetRef name } } operatorRuns(where: {startAt: {_gte: $start}}, limit: 50) { operatorRunRef startAt endAt operator { name } } } }'
QUERY="$QUERY" python3 -c 'import json, os; print(json.dumps({"query": os.environ["QUERY"]}), end="")' > "$work/graphql.json"
cat > "$work/graphql.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/graphql.json")
wrk.body = f:read("*a")
f:close()
LUA

run_wrk() { # port scenario -> rps; fails on any non-2xx
  local out
  if [[ $2 == graphql ]]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/graphql.lua" "http://127.0.0.1:$1/graphql")
  else
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1/reports/production")
  fi
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "FAIL: port $1 $2: $out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

declare -A results
for round in $(seq "$ROUNDS"); do
  order="A B"; (( round % 2 == 0 )) && order="B A"
  for scenario in rest graphql; do
    for target in $order; do
      port=$PA; [[ $target == B ]] && port=$PB
      rps=$(run_wrk "$port" "$scenario")
      results[$target.$scenario]+="$rps "
      echo "round $round $scenario $target: $rps req/s" >&2
    done
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
range() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk 'NR==1{a=$1} {b=$1} END {printf "%.0f-%.0f", a, b}'; }
echo "A: $A"
echo "B: $B"
printf '%-8s %-24s %-24s %s\n' scenario "A req/s median (range)" "B req/s median (range)" "B/A"
for scenario in rest graphql; do
  a=$(median "${results[A.$scenario]}"); b=$(median "${results[B.$scenario]}")
  printf '%-8s %-24s %-24s %.3f\n' "$scenario" "$(printf %.0f "$a") ($(range "${results[A.$scenario]}"))" \
    "$(printf %.0f "$b") ($(range "${results[B.$scenario]}"))" "$(awk -v a="$a" -v b="$b" 'BEGIN{print b/a}')"
done
