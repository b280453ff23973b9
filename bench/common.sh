# Shared by the bench scripts (sourced, not run): the tools they need, the
# local upstream, nginx as the proxy, mmgate's bench config, waiting for ports.

# Installs from Debian the package of each `command:package` pair whose
# command is missing.
require() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The main context of an nginx config named $2 in dir $1: one worker, in the
# foreground, its pid and errors in $1/$2.pid and $1/$2.err.
nginx_preamble() {
  cat <<CONF
worker_processes 1;
daemon off;
pid $1/$2.pid;
error_log $1/$2.err warn;
events { worker_connections 8192; }
CONF
}

# An nginx upstream on 127.0.0.1:$2 in dir $1 that answers 401 unless it sees
# `Authorization: Bearer $3`, and serves $1/big at /reports/big.
write_upstream_conf() {
  local dir=$1 port=$2 key=$3
  { nginx_preamble "$dir" upstream; cat <<CONF; } > "$dir/upstream.conf"
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $dir;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location /reports/big { root $dir; try_files /big =404; }
    # An OTLP collector that accepts every export (bench/telemetry.sh).
    location /v1/traces { return 200; }
    location / {
      if (\$http_authorization != "Bearer $key") { return 401; }
      default_type application/json;
      return 200 '{"data":{"machines":[{"name":"Haas VF-2"}]}}';
    }
  }
}
CONF
}

# nginx as the proxy mmgate is measured against, in $1/proxy.conf: one
# worker, listening on $2, the key $4 injected, upstream ($3) connections
# kept alive; $5, if given, is more of the `http` block's text (a cache) and
# $6 more of the `server` block's (its location).
write_proxy_conf() {
  local dir=$1 listen=$2 upstream=$3 key=$4 http_extra=${5:-} server_extra=${6:-}
  { nginx_preamble "$dir" proxy; cat <<CONF; } > "$dir/proxy.conf"
http {
  access_log $dir/proxy.access combined buffer=64k;
  keepalive_requests 10000000;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  upstream mm { server 127.0.0.1:$upstream; keepalive 128; }
$http_extra
  server {
    listen 127.0.0.1:$listen backlog=4096;
    location / {
      proxy_pass http://mm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $key";
    }
$server_extra
  }
}
CONF
}

# mmgate's bench config in $1/mmgate.toml: listen $2, admin $3, upstream port
# $4, key $5 in a file; /graphql and /reports/*; an anonymous client; a key
# limit high enough never to refuse, so that the limiter's cost is measured.
write_mmgate_conf() {
  local dir=$1 listen=$2 admin=$3 upstream=$4 key=$5
  printf '%s\n' "$key" > "$dir/key"
  cat > "$dir/mmgate.toml" <<CONF
[server]
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
[upstream]
url = "http://127.0.0.1:$upstream"
[keys.reporting]
file = "$dir/key"
scopes = ["reporting"]
limit = { per_second = 1000000, burst = 1000000 }
# The bench's query has 13 nodes: more than MachineMetrics allows, but what
# is measured here is the cost of checking a 1 KB document, not its limits.
[[routes]]
path = "/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
max_nodes = 20
# The same, answered from mmgate's cache (compared with nginx's proxy_cache).
[[routes]]
path = "/cached/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
max_nodes = 20
cache = { ttl = "1h" }
[[routes]]
path = "/reports/*"
key = "reporting"
scope = "reporting"
[clients.bench]
anonymous = true
scopes = ["reporting"]
CONF
}

# Waits until every given loopback port accepts connections.
wait_for_ports() {
  local port
  for port in "$@"; do
    for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  done
}

# Builds the added-latency probe and prints its path.
latency_probe() {
  cargo bench --locked --bench added_latency --no-run 2>&1 | tail -1 >&2
  ls -t target/release/deps/added_latency-* | grep -v '\.d$' | head -1
}

# A 1 KB GraphQL request (query and variables) in $1/graphql.json, as
# MachineMetrics dashboards send them; mmgate checks it on every request.
write_graphql_request() {
  local query='query MachineUtilization($start: timestamptz!, $end: timestamptz!) { machines(where: {decommissionedAt: {_is_null: true}}, order_by: {name: asc}) { machineRef name machineGroup { name } activities(where: {startAt: {_gte: $start}, endAt: {_lte: $end}}, order_by: {startAt: asc}, limit: 500) { activityRef startAt endAt state activitySet { activitySetRef name } } operatorRuns(where: {startAt: {_gte: $start}}, limit: 50) { operatorRunRef startAt endAt operator { name } } status { state since reason { name category } } currentJob { jobRef name partCount expectedPartCount } latestAnnotation { annotationRef message createdAt author { name } } downtime(where: {reason: {category: {_neq: "planned"}}}) { durationSeconds reason { name } } } }'
  QUERY="$query" python3 -c 'import json, os; print(json.dumps({"query": os.environ["QUERY"], "variables": {"start": "2024-07-15T00:00:00Z", "end": "2024-07-16T00:00:00Z"}}), end="")' > "$1/graphql.json"
}

# A scratch directory in $work, removed on exit with every process whose pid
# is added to $pids.
start_workdir() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# $1/distinct.lua: wrk GETs /reports/production with a counter in the query
# string, so that no two requests are the same (mmgate shares identical
# reads in flight; nginx and Caddy do not).
write_distinct_lua() {
  cat > "$1/distinct.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/reports/production?n=" .. n)
end
LUA
}
