#!/usr/bin/env bash
# benches/load/instructions.sh — instructions per request on the plain route, under callgrind.
#
# Instruction counts do not depend on what else the machine is doing, so this is the figure to
# compare before and after a data-path change on a busy 2-core VM (the CPU-time ratios of
# run.sh need a quiet machine). One proxy worker, one keep-alive connection, a fixed-response
# backend; counters are zeroed after a warm-up and dumped after $REQUESTS requests.
#
#   benches/load/instructions.sh [path/to/outrigger]   # default: target/release/outrigger
#   REQUESTS=5000 benches/load/instructions.sh
#   VARIANT=resilient benches/load/instructions.sh     # the route with a retry policy, the
#                                                      # cluster with circuit breakers and
#                                                      # outlier detection (healthy upstream)
set -euo pipefail
BIN=${1:-target/release/outrigger}
REQUESTS=${REQUESTS:-3000}
VARIANT=${VARIANT:-plain}
WARMUP=${WARMUP:-300}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

BACKEND_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Backend: answers every request head with a fixed 200 (requests carry no body).
python3 "$(dirname "$0")/backend.py" "$BACKEND_PORT" &

ROUTE_EXTRA=""
CLUSTER_EXTRA=""
if [ "$VARIANT" = resilient ]; then
  # Istio's default retry policy, its default circuit breakers, and outlier detection.
  ROUTE_EXTRA=', retry_policy: {retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", num_retries: 2, retriable_status_codes: [503], host_selection_retry_max_attempts: 5, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]}'
  CLUSTER_EXTRA='
    circuit_breakers: {thresholds: [{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295}]}
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 10}'
fi

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
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: app$ROUTE_EXTRA}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: app
    type: STATIC$CLUSTER_EXTRA
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND_PORT}}}}]}]
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
YAML

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 \
  >"$WORK/proxy.log" 2>&1 &
VG=$!

client() {
  python3 - "$PROXY_PORT" "$1" <<'PY'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(600):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.1)
req = b"GET /plain HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions.sh\r\nAccept: */*\r\n\r\n"
for _ in range(n):
    s.sendall(req)
    buf = b""
    while not (b"\r\n\r\n" in buf and buf.endswith(b"ok")):
        buf += s.recv(65536)
PY
}
client "$WARMUP"
callgrind_control -z "$VG" >/dev/null 2>&1
client "$REQUESTS"
callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
kill "$VG"; wait "$VG" 2>/dev/null || true
DUMP=$(ls "$WORK"/cg.*.1 2>/dev/null | head -1)
TOTAL=$(grep -m1 '^summary:' "$DUMP" | awk '{print $2}')
echo "binary: $BIN"
echo "variant: $VARIANT"
echo "requests: $REQUESTS"
echo "instructions per request: $((TOTAL / REQUESTS))"
