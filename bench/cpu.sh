#!/usr/bin/env bash
# Where a proxied request's CPU goes: user and system time per request, and
# req/s, for nginx, mmgate and the floor (bench/floor: the least a
# key-injecting proxy on hyper and tokio can do), each on core 0 in front of
# the same upstream, distinct keep-alive GETs (nothing shared), alternating
# within every round; medians and ranges. Then the latency each adds at a
# fixed moderate rate (RATE, default 2000/s, 10 s each).
#
#   bench/cpu.sh                  # ROUNDS=3 DURATION=8s CONNS=64 RATE=2000
#
# The kernel's share (system time) is about the same for all three: the gap
# between them is user time, and mmgate's own work is what it spends above
# the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
RATE=${RATE:-2000}
KEY="mm-bench-key-$(date +%s)"
UP=18481 NGX=18482 MMG=18483 ADMIN=18493 FLR=18484

require nginx:nginx-light wrk:wrk taskset:util-linux
cargo build --release --locked --bin mmgate 2>&1 | tail -1
cargo build --release --locked --manifest-path bench/floor/Cargo.toml --target-dir target/floor 2>&1 | tail -1
LATENCY_BIN=$(latency_probe)
start_workdir

write_upstream_conf "$work" "$UP" "$KEY"
taskset -c 1 nginx -c "$work/upstream.conf" -e "$work/upstream.err" & pids+=($!)
write_proxy_conf "$work" "$NGX" "$UP" "$KEY"
taskset -c 0 nginx -c "$work/proxy.conf" -e "$work/proxy.err" & pids+=($!)
write_mmgate_conf "$work" "$MMG" "$ADMIN" "$UP" "$KEY"
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/mmgate --config "$work/mmgate.toml" 2>"$work/mmgate.log" & pids+=($!)
MMG_PID=$!
taskset -c 0 target/floor/release/mmgate-floor "127.0.0.1:$FLR" "127.0.0.1:$UP" "$KEY" & pids+=($!)
FLR_PID=$!
wait_for_ports $UP $NGX $MMG $FLR
for _ in $(seq 50); do [[ -s $work/proxy.pid ]] && break; sleep 0.1; done
NGX_PID=$(pgrep -P "$(cat "$work/proxy.pid")" | head -1) # the one worker
write_distinct_lua "$work"

ticks() { awk '{print $14 + 0, $15 + 0, $10 + 0}' "/proc/$1/stat"; } # user, system (clock ticks), minor faults
HZ=$(getconf CLK_TCK)
declare -A rps user sys faults
for round in $(seq "$ROUNDS"); do
  order="nginx mmgate floor"
  (( round % 2 == 0 )) && order="floor mmgate nginx"
  for target in $order; do
    case $target in nginx) pid=$NGX_PID port=$NGX ;; mmgate) pid=$MMG_PID port=$MMG ;; floor) pid=$FLR_PID port=$FLR ;; esac
    read -r u0 s0 f0 < <(ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/distinct.lua" "http://127.0.0.1:$port")
    read -r u1 s1 f1 < <(ticks "$pid")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "FAIL: $target: $out" >&2; exit 1; fi
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps[$target]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    user[$target]+="$(awk -v t=$((u1 - u0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}') "
    sys[$target]+="$(awk -v t=$((s1 - s0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}') "
    faults[$target]+="$(awk -v f=$((f1 - f0)) -v n="$n" 'BEGIN {printf "%.3f", f / n}') "
    echo "round $round $target: ${rps[$target]##* }" >&2
  done
done

stats() { # values [decimals] -> "median (min-max)"
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk -v d="${2:-2}" '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; f="%." d "f (%." d "f-%." d "f)"; printf f, m, v[1], v[NR]}'
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "distinct keep-alive GETs, wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds; CPU per request in µs"
printf '%-7s %-26s %-8s %-24s %-24s %s\n' proxy "req/s (range)" "/nginx" "user µs (range)" "system µs (range)" "page faults"
for target in nginx mmgate floor; do
  printf '%-7s %-26s %-8s %-24s %-24s %s\n' "$target" "$(stats "${rps[$target]}" 0)" \
    "$(awk -v a="$(median "${rps[$target]}")" -v b="$(median "${rps[nginx]}")" 'BEGIN {printf "%.2f", a / b}')" \
    "$(stats "${user[$target]}")" "$(stats "${sys[$target]}")" "$(median "${faults[$target]}")"
done
echo
for target in nginx mmgate floor; do
  case $target in nginx) port=$NGX ;; mmgate) port=$MMG ;; floor) port=$FLR ;; esac
  echo -n "$target: "
  taskset -c 1 "$LATENCY_BIN" "http://127.0.0.1:$UP/reports/production" "http://127.0.0.1:$port/reports/production" "$KEY" "$RATE" 10
done
