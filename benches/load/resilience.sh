#!/usr/bin/env bash
# benches/load/resilience.sh — what the resilience features cost, in one run.
#
#   benches/load/resilience.sh [path/to/outrigger]   # default: target/release/outrigger
#
# 1. CPU: instructions per request (callgrind, benches/load/instructions.sh) on the plain route
#    and on the same route with Istio's default retry policy, circuit breakers and outlier
#    detection (healthy upstream), side by side, as a ratio.
# 2. Mirroring: wrk latency (p50/p99) of a route without mirroring and of one mirroring 100 % of
#    its requests to a shadow that answers after 1 s, one after the other against the same proxy
#    and backend, and the proxy's RSS sampled during the mirrored run (it must stay flat: shadows
#    in flight are bounded). Needs wrk and python3.
set -euo pipefail
BIN=${1:-target/release/outrigger}
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${SECS:-8}
CONNS=${CONNS:-8}

plain=$(REQUESTS=${REQUESTS:-3000} "$HERE/instructions.sh" "$BIN" | awk '/instructions per request/ {print $4}')
resilient=$(VARIANT=resilient REQUESTS=${REQUESTS:-3000} "$HERE/instructions.sh" "$BIN" | awk '/instructions per request/ {print $4}')
echo "instructions/request: plain $plain, retries + breakers + outlier detection $resilient ($(awk -v a="$resilient" -v b="$plain" 'BEGIN {printf "%.3f", a / b}')x)"

command -v wrk >/dev/null || { echo "wrk is not installed: skipping the mirroring run (apt-get install -y wrk)"; exit 0; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND_PORT=$(port); SHADOW_PORT=$(port); PROXY_PORT=$(port)

# A fixed-answer backend and a shadow that answers every request after 1 s.
python3 "$HERE/backend.py" "$BACKEND_PORT" &
python3 "$HERE/backend.py" "$SHADOW_PORT" 1 &

cluster() {
  cat <<YAML
  - name: $1
    type: STATIC
    load_assignment:
      cluster_name: $1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}}]}]
YAML
}
cat > "$WORK/bootstrap.yaml" <<YAML
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: $PROXY_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: /mirror}, route: {cluster: app, request_mirror_policies: [{cluster: shadow}]}}
              - {match: {prefix: /}, route: {cluster: app}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
$(cluster app "$BACKEND_PORT")
$(cluster shadow "$SHADOW_PORT")
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
YAML
"$BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 --admin-address-path "$WORK/admin" >"$WORK/proxy.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -s "$WORK/admin" ] && break; sleep 0.1; done
sleep 0.5
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

run() {
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$PROXY_PORT$1" |
    awk '/requests in/ {n=$1} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {printf "%s requests, p50 %s, p99 %s", n, p50, p99}'
}
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PROXY_PORT/" >/dev/null
before=$(rss)
echo "no mirror:     $(run /plain)"
( for _ in $(seq $((SECS * 4))); do rss; sleep 0.25; done ) >"$WORK/rss" &
SAMPLER=$!
echo "100 % mirror:  $(run /mirror)"
wait "$SAMPLER"
echo "proxy RSS: $before KiB before, max $(sort -n "$WORK/rss" | tail -1) KiB and last $(tail -1 "$WORK/rss") KiB during the mirrored run"
ADMIN=$(cat "$WORK/admin")
curl -s "http://$ADMIN/stats/prometheus" | grep -E '^envoy_cluster_upstream_rq_shadow(_overflow)?_total\{envoy_cluster_name="shadow"\}' || true
kill "$PID"
