#!/usr/bin/env bash
# benches/load/run.sh — Outrigger's side-by-side HTTP/1.1 load benchmark.
#
# One command, one run, every row measured against the same backend with the
# same load generator, so rows can be compared with each other (absolute
# figures from different runs or machines are not comparable; ratios within a
# run are what this is for). Made for a small machine: 2 CPUs are enough.
#
#   benches/load/run.sh                         # defaults: ~2 min for 4 rows
#   DURATION=3 LAT_DURATION=3 benches/load/run.sh   # quick smoke run
#   ORION_BIN=/path/to/orion benches/load/run.sh    # adds an `orion` row
#
# Rows (each only where available; the script installs nothing):
#   direct     no proxy: the load goes straight to the backend (the baseline)
#   outrigger  `outrigger -c <generated bootstrap> --concurrency 1`: one HTTP
#              listener on 127.0.0.1:$PROXY_PORT, one route `prefix: /` to a
#              STATIC cluster 127.0.0.1:$BACKEND_PORT, no access log
#   haproxy    Debian's haproxy, nbthread 1, http-reuse always
#   nginx      Debian's nginx, one process, upstream keepalive
#   orion      when ORION_BIN is set: the same Envoy bootstrap inside Orion's
#              runtime config (1 CPU, 1 runtime); ORION_ARGS overrides its args
#
# Every proxy runs pinned to CPU $PROXY_CPU (taskset, all its threads); the
# backend (a single-process nginx answering `200 ok`, or haproxy when nginx is
# missing) and the load generators are pinned to CPU $LOADGEN_CPU.
#
# What is measured, per row:
#   a. saturation: wrk -t1 -c$CONNS -d$DURATION (HTTP/1.1 keep-alive) after a
#      $WARMUP s warm-up: requests/s, and the proxy's CPU time per request in
#      µs = (utime+stime) delta from /proc/PID/stat over the whole process tree
#      (all threads) / requests. Also how busy each CPU was (/proc/stat) and
#      the backend's CPU per request, which tell which side was the
#      bottleneck: with a proxy on CPU 1, wrk + backend on CPU 0 often saturate
#      first (~100k req/s on a 2-vCPU VM), so requests/s cannot show a proxy
#      cheaper than haproxy — CPU µs per request can, and repeats within ~2%.
#      It is the main comparison; requests/s is a check.
#   b. latency at a fixed $LAT_RATE req/s for $LAT_DURATION s over $LAT_CONNS
#      connections: p50 / p99 / p99.9, and the latency each proxy ADDS over
#      `direct`. Tool: oha (open loop, --latency-correction, i.e. corrected for
#      coordinated omission) when found (OHA_BIN, PATH or ~/.cargo/bin; not
#      installed by this script: `cargo install oha`), else wrk with a fixed
#      per-connection delay (wrk2-style rate, closed loop, not corrected).
#   b2. (LAT_1CPU=1, default) the fixed-rate run again after moving the proxy
#      onto the load generator's CPU. Why: on a VM whose idle vCPUs halt
#      without polling (e.g. Firecracker), waking the other idle vCPU costs
#      tens of µs per hop and a proxied request makes ~4 such hops at 1000
#      req/s, so the cross-CPU latency of b. is mostly the VM's wake-up cost,
#      nearly equal for every proxy. b2. shows the proxy's own added latency
#      (it then shares one CPU with the load generator and the backend).
#   c. idle RSS (VmRSS just after the proxy listens) and peak RSS (VmHWM after
#      all its runs), summed over its process tree.
#
# Output: tables on stdout (ratios vs haproxy, added latency vs direct, and a
# check of outrigger against issue 3's targets), and in $OUT_DIR:
# results.json (every figure, settings, machine, versions), results.tsv (raw
# rows), work/ (generated configs and every process's log).
#
# Knobs (environment; defaults in brackets):
#   PROXIES     rows and order  [direct outrigger haproxy nginx (+ orion)]
#   DURATION [8]  CONNS [32]  WARMUP [2]       saturation run (wrk)
#   LAT_RATE [1000]  LAT_DURATION [8]  LAT_CONNS [8]  LAT_1CPU [1]
#   USE_OHA [1] (0 forces the wrk fallback)  OHA_BIN [found in PATH]
#   ROUNDS [1]  each round restarts every proxy and prints its own tables
#   LOADGEN_CPU [0]  PROXY_CPU [1]  BACKEND_PORT [18080]  PROXY_PORT [18000]
#   OUTRIGGER_BIN [$CARGO_TARGET_DIR or target/release/outrigger]
#   OUTRIGGER_ARGS [] extra arguments for outrigger
#   BUILD [auto]  auto: `cargo build --release -p outrigger-proxy` only when
#               the binary is missing; always: run it anyway; never
#   ORION_BIN []  ORION_ARGS [--config <generated orion.yaml>]
#   OUT_DIR [target/load-bench/<date-time>]  MAX_TOTAL_S [900] overall bound
#
# Safety: only 127.0.0.1 is used; every command runs under `timeout`; every
# wait loop is bounded; everything started is stopped by PID on exit (trap).
#
# Needs: wrk curl taskset (util-linux) pgrep (procps) ss (iproute2) awk, and
# nginx or haproxy for the backend. Optional: haproxy, nginx (rows), oha + jq
# (open-loop latency), /usr/bin/time (wrk's own CPU). Debian:
#   apt-get install -y wrk nginx haproxy curl jq procps util-linux iproute2 time

set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
APT_LINE="apt-get install -y wrk nginx haproxy curl jq procps util-linux iproute2 time"

# ---------------------------------------------------------------- settings --
BACKEND_PORT=${BACKEND_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-18000}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-2}
LAT_RATE=${LAT_RATE:-1000}
LAT_DURATION=${LAT_DURATION:-8}
LAT_CONNS=${LAT_CONNS:-8}
LAT_1CPU=${LAT_1CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
ROUNDS=${ROUNDS:-1}
MAX_TOTAL_S=${MAX_TOTAL_S:-900}
BUILD=${BUILD:-auto}
OUTRIGGER_ARGS=${OUTRIGGER_ARGS:-}
HOST=127.0.0.1
export PROXY_PORT BACKEND_PORT

for v in BACKEND_PORT PROXY_PORT DURATION CONNS WARMUP LAT_RATE LAT_DURATION LAT_CONNS LOADGEN_CPU PROXY_CPU \
         ROUNDS MAX_TOTAL_S; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number (got '${!v}')" >&2; exit 2; }
done

CLK_TCK=$(getconf CLK_TCK)
START_EPOCH=$(date +%s)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/target/load-bench/$(date +%Y%m%d-%H%M%S)}
WORK="$OUT_DIR/work"
mkdir -p "$WORK" || { echo "run.sh: cannot create $WORK" >&2; exit 1; }
OUT_DIR=$(cd "$OUT_DIR" && pwd); WORK="$OUT_DIR/work"
RESULTS="$OUT_DIR/results.tsv"
JSON="$OUT_DIR/results.json"

log() { printf '[load-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------- process handling --
STARTED_PIDS=()   # every background process we started; all stopped on exit

# All PIDs of a process tree (the root first), at most 5 levels deep.
tree_pids() {
  local frontier=("$1") all=("$1") next c p
  for _ in 1 2 3 4 5; do
    next=()
    for p in "${frontier[@]}"; do
      for c in $(pgrep -P "$p" 2>/dev/null); do next+=("$c"); done
    done
    [ ${#next[@]} -eq 0 ] && break
    all+=("${next[@]}"); frontier=("${next[@]}")
  done
  echo "${all[@]}"
}

# Stop a process tree by PID: SIGTERM, wait at most 5 s, then SIGKILL.
stop_tree() {
  local root=$1 pids p alive
  kill -0 "$root" 2>/dev/null || { wait "$root" 2>/dev/null; return 0; }
  pids=$(tree_pids "$root")
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  wait "$root" 2>/dev/null
  return 0
}

cleanup() {
  local p
  for p in "${STARTED_PIDS[@]}"; do stop_tree "$p"; done
  STARTED_PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

forget_pid() {
  local p keep=()
  for p in "${STARTED_PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

# Pin every thread of every process in a tree to one CPU.
pin_tree() {
  local p
  for p in $(tree_pids "$1"); do taskset -a -p -c "$2" "$p" >/dev/null 2>&1; done
}

# ------------------------------------------------------ /proc measurement --
# utime+stime (clock ticks) over a process tree; /proc/PID/stat fields 14, 15
# (the process-wide sum over its threads), read after the last ')' so that a
# command name with spaces cannot shift the fields.
tree_cpu_ticks() {
  local sum=0 p s
  for p in $(tree_pids "$1"); do
    s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
    [ -n "$s" ] && sum=$((sum + s))
  done
  echo "$sum"
}

# A /proc/PID/status field in kB (VmRSS, VmHWM), summed over a process tree.
tree_status_kb() {
  local sum=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

# "busy total steal" jiffies of one CPU (/proc/stat).
cpu_jiffies() {
  awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $9}' /proc/stat
}

# --------------------------------------------------------------- helpers --
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# Wait (at most LIMIT s) until 127.0.0.1:PORT accepts and PID is alive.
wait_port() {
  local port=$1 pid=$2 limit=${3:-20}
  for _ in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || return 1
    timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$port" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# GET / must give 200 with body "ok": the proxy really forwards to the backend.
check_http() {
  local out code body
  out=$(timeout 5 curl -s -o - -w '\n%{http_code}' "http://$HOST:$1/" 2>/dev/null)
  code=${out##*$'\n'}; body=${out%$'\n'*}
  [ "$code" = 200 ] && [ "$body" = ok ]
}

time_left() { echo $((MAX_TOTAL_S - ($(date +%s) - START_EPOCH))); }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------- prerequisites --
for tool in wrk curl taskset pgrep ss awk sed getconf; do
  have "$tool" || die "missing '$tool'. Debian: $APT_LINE"
done
NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || log "WARNING: only $NCPU CPU; the proxy and the load generator share it"
[ "$LOADGEN_CPU" -lt "$NCPU" ] && [ "$PROXY_CPU" -lt "$NCPU" ] || die "LOADGEN_CPU/PROXY_CPU must be < $NCPU"
for p in "$BACKEND_PORT" "$PROXY_PORT"; do
  port_in_use "$p" && die "port $p is already in use on this machine (set BACKEND_PORT / PROXY_PORT)"
done

OHA=${OHA_BIN:-$(command -v oha || true)}
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
[ "${USE_OHA:-1}" = 0 ] && OHA=""
if [ -n "$OHA" ] && ! have jq; then
  log "oha found but jq is missing (needed to read oha's JSON): using the wrk fallback. Debian: apt-get install -y jq"
  OHA=""
fi

MISSING=()
have haproxy || MISSING+=(haproxy)
have nginx || MISSING+=(nginx)
if [ ${#MISSING[@]} -gt 0 ]; then
  log "not installed: ${MISSING[*]} — their rows are skipped. To add them: apt-get install -y ${MISSING[*]}"
fi
if have nginx; then BACKEND_KIND=nginx
elif have haproxy; then BACKEND_KIND=haproxy
else die "the backend needs nginx (or haproxy). Debian: $APT_LINE"
fi

# The outrigger binary: given, or this workspace's release build.
if [ -n "${OUTRIGGER_BIN:-}" ]; then
  [ -x "$OUTRIGGER_BIN" ] || die "OUTRIGGER_BIN=$OUTRIGGER_BIN is not an executable"
else
  OUTRIGGER_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/outrigger"
  if [ "$BUILD" = always ] || { [ "$BUILD" = auto ] && [ ! -x "$OUTRIGGER_BIN" ]; }; then
    have cargo || die "no $OUTRIGGER_BIN and no cargo to build it"
    log "building: cargo build --release -p outrigger-proxy (fat LTO: a few minutes)"
    (cd "$REPO_ROOT" && timeout "${BUILD_TIMEOUT_S:-2400}" cargo build --release -p outrigger-proxy) >&2 \
      || die "cargo build --release -p outrigger-proxy failed"
  fi
  [ -x "$OUTRIGGER_BIN" ] || die "no outrigger binary at $OUTRIGGER_BIN (BUILD=$BUILD)"
fi
OUTRIGGER_BIN=$(cd "$(dirname "$OUTRIGGER_BIN")" && pwd)/$(basename "$OUTRIGGER_BIN")

if [ -n "${ORION_BIN:-}" ]; then
  [ -x "$ORION_BIN" ] || die "ORION_BIN=$ORION_BIN is not an executable"
fi

# ------------------------------------------------------- generated files --
# wrk script: one machine-readable summary line at the end of a run.
cat > "$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d sock_errors=%d status_errors=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
EOF
# Fixed-rate fallback (no oha): each connection waits LAT_CONNS*1000/LAT_RATE
# ms before each request, about LAT_RATE req/s in all. Closed loop.
{
  echo "delay = function() return $((LAT_CONNS * 1000 / LAT_RATE)) end"
  cat "$WORK/report.lua"
} > "$WORK/rate.lua"

# The Envoy bootstrap for outrigger (and, wrapped, for orion).
envoy_bootstrap() {  # INDENT
  sed "s/^/$1/" <<EOF
node: { id: load-bench, cluster: load-bench }
static_resources:
  listeners:
  - name: bench_http
    address:
      socket_address: { address: $HOST, port_value: $PROXY_PORT }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench_http
          route_config:
            name: bench
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: $HOST, port_value: $BACKEND_PORT }
EOF
}
envoy_bootstrap "" > "$WORK/outrigger.yaml"
{
  cat <<EOF
runtime:
  num_cpus: 1
  num_runtimes: 1
logging:
  log_level: error
envoy_bootstrap:
EOF
  envoy_bootstrap "  "
} > "$WORK/orion.yaml"

# nginx: paths every instance needs writable, inside the work dir.
nginx_common() {
  local d="$WORK/$1"; mkdir -p "$d"
  cat <<EOF
daemon off;
master_process off;      # one single process: the one we pin and measure
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
EOF
}
{ nginx_common backend; cat <<EOF
  server {
    listen $HOST:$BACKEND_PORT backlog=4096;
    location / { default_type text/plain; return 200 "ok"; }
  }
}
EOF
} > "$WORK/backend-nginx.conf"
{ nginx_common nginx; cat <<EOF
  upstream backend {
    server $HOST:$BACKEND_PORT;
    keepalive 64;                  # pooled upstream connections
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen $HOST:$PROXY_PORT backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;      # needed for upstream keepalive
      proxy_set_header Connection "";
    }
  }
}
EOF
} > "$WORK/nginx-proxy.conf"

haproxy_common() {
  cat <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 300s
EOF
}
{ haproxy_common; cat <<EOF
frontend fe
  bind $HOST:$PROXY_PORT
  default_backend be
backend be
  http-reuse always
  server s1 $HOST:$BACKEND_PORT
EOF
} > "$WORK/haproxy.cfg"
{ haproxy_common; cat <<EOF
frontend backend
  bind $HOST:$BACKEND_PORT
  http-request return status 200 content-type text/plain string ok
EOF
} > "$WORK/backend-haproxy.cfg"

# --------------------------------------------------------- proxy registry --
declare -A PROXY_CMD
PROXY_CMD[outrigger]="$(printf '%q' "$OUTRIGGER_BIN") -c $WORK/outrigger.yaml --concurrency 1 $OUTRIGGER_ARGS"
PROXY_CMD[haproxy]="haproxy -db -f $WORK/haproxy.cfg"
PROXY_CMD[nginx]="nginx -p $WORK/nginx -e $WORK/nginx/error.log -c $WORK/nginx-proxy.conf"
[ -n "${ORION_BIN:-}" ] && PROXY_CMD[orion]="$(printf '%q' "$ORION_BIN") ${ORION_ARGS:---config $WORK/orion.yaml}"

DEFAULT_PROXIES="direct outrigger"
have haproxy && DEFAULT_PROXIES+=" haproxy"
have nginx && DEFAULT_PROXIES+=" nginx"
[ -n "${ORION_BIN:-}" ] && DEFAULT_PROXIES+=" orion"
PROXIES=${PROXIES:-$DEFAULT_PROXIES}

# Catch a bootstrap outrigger refuses before any load is sent.
if [[ " $PROXIES " == *" outrigger "* ]]; then
  timeout 30 "$OUTRIGGER_BIN" --mode validate -c "$WORK/outrigger.yaml" >"$WORK/outrigger.validate.log" 2>&1 \
    || die "outrigger refuses the generated bootstrap: $(tail -3 "$WORK/outrigger.validate.log")"
fi

# ------------------------------------------------------------- backend --
if [ "$BACKEND_KIND" = nginx ]; then
  mkdir -p "$WORK/nginx"
  timeout 10 nginx -t -q -p "$WORK/backend" -e "$WORK/backend/error.log" -c "$WORK/backend-nginx.conf" \
    >"$WORK/backend.check.log" 2>&1 || die "backend nginx config invalid: $(cat "$WORK/backend.check.log")"
  BACKEND_CMD="nginx -p $WORK/backend -e $WORK/backend/error.log -c $WORK/backend-nginx.conf"
else
  BACKEND_CMD="haproxy -db -f $WORK/backend-haproxy.cfg"
fi
# shellcheck disable=SC2086
( cd "$WORK" && exec taskset -c "$LOADGEN_CPU" $BACKEND_CMD ) >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!
STARTED_PIDS+=("$BACKEND_PID")
wait_port "$BACKEND_PORT" "$BACKEND_PID" 10 || die "backend did not start (see $WORK/backend.log)"
check_http "$BACKEND_PORT" || die "backend does not answer 200 ok"

if [ -n "$OHA" ]; then
  LAT_TOOL="oha"
  LAT_TOOL_DESC="oha -q $LAT_RATE --latency-correction (open loop, corrected for coordinated omission)"
else
  LAT_TOOL="wrk-delay"
  LAT_TOOL_DESC="wrk with a fixed per-connection delay (closed loop, not CO-corrected; install oha for open loop)"
fi
CPU_MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
# Anything else busy on the two CPUs (a build, another benchmark) skews every
# row: measure them for a second before starting, and say so.
ia0=$(cpu_jiffies "$LOADGEN_CPU"); ia1=$(cpu_jiffies "$PROXY_CPU"); sleep 1
ib0=$(cpu_jiffies "$LOADGEN_CPU"); ib1=$(cpu_jiffies "$PROXY_CPU")
read -r IDLE_BUSY0 IDLE_BUSY1 <<<"$(awk -v a="$ia0" -v b="$ib0" -v c="$ia1" -v d="$ib1" 'BEGIN{
  split(a, x, " "); split(b, y, " "); split(c, p, " "); split(d, q, " "); t0 = y[2] - x[2]; t1 = q[2] - p[2]
  printf "%.0f %.0f", t0 ? 100 * (y[1] - x[1]) / t0 : 0, t1 ? 100 * (q[1] - p[1]) / t1 : 0 }')"
if [ "$IDLE_BUSY0" -gt 10 ] || [ "$IDLE_BUSY1" -gt 10 ]; then
  log "WARNING: the machine is not idle before the run (cpu$LOADGEN_CPU ${IDLE_BUSY0}% busy, cpu$PROXY_CPU ${IDLE_BUSY1}% busy):"
  log "         figures will be noisy and rows not comparable; stop other work first"
fi
log "output: $OUT_DIR"
log "rows: $PROXIES   rounds: $ROUNDS   cpu: loadgen+backend($BACKEND_KIND)=$LOADGEN_CPU proxy=$PROXY_CPU"
log "latency tool: $LAT_TOOL_DESC"
log "machine: $NCPU CPUs, $CPU_MODEL, kernel $(uname -r)"
log "outrigger: $OUTRIGGER_BIN ($(date -r "$OUTRIGGER_BIN" '+built %F %T'))"

COLS="round proxy status rps proxy_cpu_us_per_req wrk_cpu_us_per_req backend_cpu_us_per_req cpu_loadgen_busy_pct"
COLS+=" cpu_proxy_busy_pct steal_pct throughput_errors lat_rate p50_us p99_us p999_us lat_errors idle_rss_kb"
COLS+=" peak_rss_kb p50_1cpu_us p99_1cpu_us p999_1cpu_us"
NCOLS=$(wc -w <<<"$COLS")
tr ' ' '\t' <<<"$COLS" > "$RESULTS"

record() {  # round proxy status [fields...]: one TSV row, padded with NA
  local row=("$@") i
  for ((i = ${#row[@]}; i < NCOLS; i++)); do row+=(NA); done
  (IFS=$'\t'; echo "${row[*]}") >> "$RESULTS"
}

# ---------------------------------------------------------- measurements --
# wrk pinned to LOADGEN_CPU; prints the BENCH line, plus "WRKCPU user sys"
# when /usr/bin/time is there to measure wrk itself.
run_wrk() {
  local port=$1 secs=$2 conns=$3 script=$4 tfile="$WORK/wrk.time"
  if [ -x /usr/bin/time ]; then
    rm -f "$tfile"
    timeout $((secs + 20)) /usr/bin/time -f '%U %S' -o "$tfile" \
      taskset -c "$LOADGEN_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$script" \
      "http://$HOST:$port/" 2>&1 | grep '^BENCH'
    [ -s "$tfile" ] && echo "WRKCPU $(tail -1 "$tfile")"
  else
    timeout $((secs + 20)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
      -s "$script" "http://$HOST:$port/" 2>&1 | grep '^BENCH'
  fi
}
kv() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -1; }
kv0() { local v; v=$(kv "$1" "$2"); echo "${v:-0}"; }

# Fixed-rate run against PORT: prints "p50 p99 p999 achieved_rate errors"
# (µs; NA when unknown).
run_latency() {
  local port=$1 tag=$2 lat out
  if [ -n "$OHA" ]; then
    timeout $((LAT_DURATION + 30)) taskset -c "$LOADGEN_CPU" "$OHA" --no-tui --output-format json \
      --latency-correction -q "$LAT_RATE" -z "${LAT_DURATION}s" -c "$LAT_CONNS" -t 5s \
      "http://$HOST:$port/" >"$WORK/$tag.oha.json" 2>"$WORK/$tag.oha.err"
    lat=$(jq -r '[ (.latencyPercentiles.p50 // "NA"), (.latencyPercentiles.p99 // "NA"),
                  (.latencyPercentiles["p99.9"] // "NA"), (.summary.requestsPerSec // "NA"),
                  (([.statusCodeDistribution // {} | to_entries[] | select(.key != "200") | .value] | add // 0)
                   + ([.errorDistribution // {} | to_entries[] | select(.key != "aborted due to deadline")
                      | .value] | add // 0)) ] | @tsv' "$WORK/$tag.oha.json" 2>/dev/null)
    if [ -n "$lat" ]; then
      awk -F'\t' '{printf "%.0f %.0f %.0f %.0f %d\n", $1 * 1e6, $2 * 1e6, $3 * 1e6, $4, $5}' <<<"$lat"
      return
    fi
    log "$tag: oha gave no usable JSON (see $WORK/$tag.oha.err)"
  else
    out=$(run_wrk "$port" "$LAT_DURATION" "$LAT_CONNS" "$WORK/rate.lua")
    if [ -n "$(kv requests "$out")" ]; then
      echo "$(kv p50_us "$out") $(kv p99_us "$out") $(kv p999_us "$out")" \
        "$(awk -v r="$(kv requests "$out")" -v d="$(kv duration_us "$out")" 'BEGIN{printf "%.0f", r / (d / 1e6)}')" \
        "$(($(kv0 sock_errors "$out") + $(kv0 status_errors "$out")))"
      return
    fi
  fi
  echo "NA NA NA NA NA"
}

# One row: start the proxy (unless direct), measure a, b, b2, c, stop it.
measure() {
  local round=$1 name=$2 port pid="" cmd idle_rss=NA peak_rss=NA log_file
  local t0 t1 b0 b1 c0a c0b c1a c1b out req dur rps errs pcpu wcpu bcpu
  local c0busy c1busy steal p50 p99 p999 laterr latrate q50 q99 q999
  if [ "$name" = direct ]; then
    port=$BACKEND_PORT
  else
    cmd=${PROXY_CMD[$name]:-}
    if [ -z "$cmd" ]; then
      log "$name: not available (not installed, or ORION_BIN unset) — skipped"; record "$round" "$name" MISSING; return
    fi
    port=$PROXY_PORT
    if port_in_use "$PROXY_PORT"; then
      log "$name: port $PROXY_PORT still busy — skipped"; record "$round" "$name" PORTBUSY; return
    fi
    log_file="$WORK/$name.r$round.log"
    ( cd "$WORK" && exec taskset -c "$PROXY_CPU" bash -c "exec $cmd" ) >"$log_file" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$PROXY_PORT" "$pid" 30; then
      log "$name: did not start listening (log: $log_file)"
      stop_tree "$pid"; forget_pid "$pid"; record "$round" "$name" NOSTART; return
    fi
    pin_tree "$pid" "$PROXY_CPU"   # also threads that set their own affinity
    sleep 0.5                      # let it finish initialising
    idle_rss=$(tree_status_kb "$pid" VmRSS)
    if ! check_http "$PROXY_PORT"; then
      log "$name: GET / through the proxy did not give 200 ok (log: $log_file)"
      stop_tree "$pid"; forget_pid "$pid"; record "$round" "$name" BADREPLY; return
    fi
  fi

  # a. warm-up (discarded), then saturation
  log "$name: warm-up ${WARMUP}s, saturation ${DURATION}s (wrk -t1 -c$CONNS)"
  [ "$WARMUP" -gt 0 ] && run_wrk "$port" "$WARMUP" "$CONNS" "$WORK/report.lua" >/dev/null
  t0=0; [ -n "$pid" ] && t0=$(tree_cpu_ticks "$pid")
  b0=$(tree_cpu_ticks "$BACKEND_PID")
  c0a=$(cpu_jiffies "$LOADGEN_CPU"); c1a=$(cpu_jiffies "$PROXY_CPU")
  out=$(run_wrk "$port" "$DURATION" "$CONNS" "$WORK/report.lua")
  c0b=$(cpu_jiffies "$LOADGEN_CPU"); c1b=$(cpu_jiffies "$PROXY_CPU")
  b1=$(tree_cpu_ticks "$BACKEND_PID")
  t1=0; [ -n "$pid" ] && t1=$(tree_cpu_ticks "$pid")
  req=$(kv requests "$out"); dur=$(kv duration_us "$out")
  errs=$(($(kv0 sock_errors "$out") + $(kv0 status_errors "$out")))
  rps=NA; pcpu=NA; wcpu=NA; bcpu=NA
  if [ -z "$req" ] || [ "${req:-0}" -eq 0 ]; then
    log "$name: wrk produced no result"
  else
    rps=$(awk -v r="$req" -v d="$dur" 'BEGIN{printf "%.0f", r / (d / 1e6)}')
    [ -n "$pid" ] && pcpu=$(awk -v a="$t0" -v b="$t1" -v r="$req" -v hz="$CLK_TCK" \
      'BEGIN{printf "%.2f", (b - a) * 1e6 / hz / r}')
    bcpu=$(awk -v a="$b0" -v b="$b1" -v r="$req" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b - a) * 1e6 / hz / r}')
    grep -q '^WRKCPU' <<<"$out" && wcpu=$(awk -v r="$req" '/^WRKCPU/{printf "%.2f", ($2 + $3) * 1e6 / r}' <<<"$out")
  fi
  read -r c0busy c1busy steal <<<"$(awk -v a="$c0a" -v b="$c0b" -v c="$c1a" -v d="$c1b" 'BEGIN{
    split(a, x, " "); split(b, y, " "); split(c, p, " "); split(d, q, " ")
    t0 = y[2] - x[2]; t1 = q[2] - p[2]
    printf "%.1f %.1f %.1f", t0 ? 100 * (y[1] - x[1]) / t0 : 0, t1 ? 100 * (q[1] - p[1]) / t1 : 0,
      (t0 + t1) ? 100 * ((y[3] - x[3]) + (q[3] - p[3])) / (t0 + t1) : 0 }')"

  # b. fixed rate, proxy on its own CPU
  log "$name: fixed rate $LAT_RATE req/s for ${LAT_DURATION}s over $LAT_CONNS connections"
  read -r p50 p99 p999 latrate laterr <<<"$(run_latency "$port" "$name.r$round")"
  # b2. the same with the proxy moved onto the load generator's CPU
  q50=NA; q99=NA; q999=NA
  if [ "$LAT_1CPU" = 1 ]; then
    if [ -z "$pid" ]; then
      q50=$p50; q99=$p99; q999=$p999     # direct already runs on one CPU
    else
      pin_tree "$pid" "$LOADGEN_CPU"
      log "$name: fixed rate again with the proxy moved to CPU $LOADGEN_CPU"
      read -r q50 q99 q999 _ _ <<<"$(run_latency "$port" "$name.r$round.1cpu")"
    fi
  fi

  # c. memory, then stop the proxy
  if [ -n "$pid" ]; then
    peak_rss=$(tree_status_kb "$pid" VmHWM)
    kill -0 "$pid" 2>/dev/null || log "$name: the proxy died during the run (log: $log_file)"
    stop_tree "$pid"; forget_pid "$pid"
    for _ in $(seq 1 50); do port_in_use "$PROXY_PORT" || break; sleep 0.1; done
  fi
  record "$round" "$name" ok "$rps" "$pcpu" "$wcpu" "$bcpu" "$c0busy" "$c1busy" "$steal" "$errs" \
    "$latrate" "$p50" "$p99" "$p999" "$laterr" "$idle_rss" "$peak_rss" "$q50" "$q99" "$q999"
}

# ---------------------------------------------------------------- report --
print_round() {
  awk -F'\t' -v R="$1" -v RATE="$LAT_RATE" -v C="$CONNS" -v D="$DURATION" -v L1="$LAT_1CPU" \
      -v LC="$LOADGEN_CPU" -v PC="$PROXY_CPU" '
  NR == 1 || $1 != R { next }
  { n++; name[n] = $2; st[n] = $3; rps[n] = $4; pc[n] = $5; wc[n] = $6; bc[n] = $7
    c0[n] = $8; c1[n] = $9; sl[n] = $10; er[n] = $11; lr[n] = $12
    p50[n] = $13; p99[n] = $14; p999[n] = $15; le[n] = $16; ir[n] = $17; pr[n] = $18
    q50[n] = $19; q99[n] = $20; q999[n] = $21
    if ($2 == "direct" && $3 == "ok") d = n; if ($2 == "haproxy" && $3 == "ok") h = n }
  function na(x) { return x == "NA" || x == "" }
  function ratio(a, b) { return (na(a) || na(b) || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
  function diff(a, b) { return (na(a) || na(b)) ? "NA" : sprintf("%+d", a - b) }
  function mib(k) { return (na(k) || k + 0 == 0) ? "-" : sprintf("%.1f", k / 1024) }
  function skip(i) { printf "%-10s %s\n", name[i], st[i] }
  END {
    printf "\n== round %s: saturation (wrk -t1 -c%s -d%ss, HTTP/1.1 keep-alive) and memory ==\n", R, C, D
    printf "%-10s %8s %7s %10s %7s %6s %6s %10s %6s %5s %9s %9s %7s\n", "proxy", "rps", "/hap",
      "cpu-us/req", "/hap", "cpu" PC "%", "cpu" LC "%", "backend-us", "steal%", "errs", "idle-MiB", "peak-MiB", "peak/hap"
    for (i = 1; i <= n; i++) {
      if (st[i] != "ok") { skip(i); continue }
      printf "%-10s %8s %7s %10s %7s %6s %6s %10s %6s %5s %9s %9s %7s\n", name[i], rps[i],
        h ? ratio(rps[i], rps[h]) : "-", pc[i], h ? ratio(pc[i], pc[h]) : "-", c1[i], c0[i], bc[i], sl[i],
        er[i], mib(ir[i]), mib(pr[i]), h ? ratio(pr[i], pr[h]) : "-"
    }
    # With no proxy, CPU PC has nothing of ours to run: if it was busy, something else was.
    if (d && !na(c1[d]) && c1[d] + 0 > 20)
      printf "WARNING: CPU %s was %s%% busy during the direct row, which runs nothing there: other work shares\n" \
        "         this machine, so every figure of this round is suspect. Rerun on an idle machine.\n", PC, c1[d]
    printf "\n== round %s: latency at %s req/s, proxy on CPU %s (us; +x = added over direct) ==\n", R, RATE, PC
    printf "%-10s %7s %7s %7s %7s %7s %8s %8s %8s %6s %5s\n", "proxy", "p50", "p99", "p99.9",
      "+p50", "+p99", "+p99.9", "+p50/hap", "+p99/hap", "rate", "errs"
    for (i = 1; i <= n; i++) {
      if (st[i] != "ok") { skip(i); continue }
      a50 = d ? diff(p50[i], p50[d]) : "NA"; a99 = d ? diff(p99[i], p99[d]) : "NA"
      h50 = (d && h) ? diff(p50[h], p50[d]) : "NA"; h99 = (d && h) ? diff(p99[h], p99[d]) : "NA"
      printf "%-10s %7s %7s %7s %7s %7s %8s %8s %8s %6s %5s\n", name[i], p50[i], p99[i], p999[i],
        i == d ? "-" : a50, i == d ? "-" : a99, (d && i != d) ? diff(p999[i], p999[d]) : "-",
        (i == d || i == h) ? "-" : ratio(a50, h50), (i == d || i == h) ? "-" : ratio(a99, h99), lr[i], le[i]
    }
    if (L1 != 1) exit
    printf "\n== round %s: latency at %s req/s, proxy moved onto CPU %s with the load generator (us) ==\n",
      R, RATE, LC
    printf "%-10s %7s %7s %7s %7s %7s %8s %8s %8s\n", "proxy", "p50", "p99", "p99.9",
      "+p50", "+p99", "+p99.9", "+p50/hap", "p99/hap"
    for (i = 1; i <= n; i++) {
      if (st[i] != "ok") { skip(i); continue }
      a50 = d ? diff(q50[i], q50[d]) : "NA"; h50 = (d && h) ? diff(q50[h], q50[d]) : "NA"
      printf "%-10s %7s %7s %7s %7s %7s %8s %8s %8s\n", name[i], q50[i], q99[i], q999[i],
        i == d ? "-" : a50, (d && i != d) ? diff(q99[i], q99[d]) : "-", (d && i != d) ? diff(q999[i], q999[d]) : "-",
        (i == d || i == h) ? "-" : ratio(a50, h50), (i == d || i == h) ? "-" : ratio(q99[i], q99[h])
    }
  }' "$RESULTS"
}

# Issue 3 targets for the outrigger row of a round (a check, not a test).
print_targets() {
  awk -F'\t' -v R="$1" '
  NR == 1 || $1 != R || $3 != "ok" { next }
  { row[$2] = $0 }
  function v(name, col,   f) { if (!(name in row)) return "NA"; split(row[name], f, "\t"); return f[col] }
  function na(x) { return x == "NA" || x == "" }
  function line(what, ok, detail) { printf "  %-4s %-58s %s\n", ok == "" ? "n/a" : (ok ? "MET" : "MISS"), what, detail }
  END {
    if (!("outrigger" in row)) exit
    printf "\n== round %s: outrigger vs issue 3 targets ==\n", R
    oc = v("outrigger", 5); hc = v("haproxy", 5)
    line("CPU per request <= 0.8x haproxy", (na(oc) || na(hc)) ? "" : (oc <= 0.8 * hc),
      (na(oc) || na(hc)) ? "" : sprintf("%.2f vs %.2f us (%.2fx)", oc, hc, oc / hc))
    d50 = v("direct", 19); o50 = v("outrigger", 19); h50 = v("haproxy", 19)
    d99 = v("direct", 20); o99 = v("outrigger", 20)
    ok50 = (na(d50) || na(o50) || na(h50)) ? "" : (o50 - d50 <= h50 - d50)
    line("same-CPU added p50 <= haproxy added p50", ok50,
      ok50 == "" ? "" : sprintf("%+d vs %+d us", o50 - d50, h50 - d50))
    ok99 = (na(d99) || na(o99)) ? "" : (o99 - d99 < 100)
    line("same-CPU added p99 < 100 us", ok99, ok99 == "" ? "" : sprintf("%+d us", o99 - d99))
    ir = v("outrigger", 17); pr = v("outrigger", 18)
    line("idle RSS < 8 MB", na(ir) ? "" : (ir * 1024 < 8e6), na(ir) ? "" : sprintf("%.1f MB", ir * 1024 / 1e6))
    line("peak RSS < 20 MB", na(pr) ? "" : (pr * 1024 < 20e6), na(pr) ? "" : sprintf("%.1f MB", pr * 1024 / 1e6))
  }' "$RESULTS"
}

# results.json from results.tsv: settings, machine, one object per row with
# the raw figures, the latency added over direct and the ratios vs haproxy.
write_json() {
  local ver_wrk ver_hap ver_ngx ver_out rev
  ver_wrk=$(wrk -v 2>&1 | head -1)
  ver_hap=$( (have haproxy && haproxy -v 2>&1 | head -1) || echo "")
  ver_ngx=$( (have nginx && nginx -v 2>&1 | head -1) || echo "")
  ver_out=$(timeout 5 "$OUTRIGGER_BIN" --version 2>/dev/null | head -1)
  rev=$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  awk -F'\t' -v OFS='' \
    -v date="$(date -u +%FT%TZ)" -v cpu="$CPU_MODEL" -v ncpu="$NCPU" -v kernel="$(uname -r)" \
    -v duration="$DURATION" -v conns="$CONNS" -v warmup="$WARMUP" -v rate="$LAT_RATE" \
    -v latdur="$LAT_DURATION" -v latconns="$LAT_CONNS" -v l1="$LAT_1CPU" -v lc="$LOADGEN_CPU" -v pc="$PROXY_CPU" \
    -v backend="$BACKEND_KIND" -v lattool="$LAT_TOOL" -v wrkv="$ver_wrk" -v hapv="$ver_hap" -v ngxv="$ver_ngx" \
    -v outv="$ver_out" -v outbin="$OUTRIGGER_BIN" -v rev="$rev" -v rounds="$ROUNDS" \
    -v busy0="$IDLE_BUSY0" -v busy1="$IDLE_BUSY1" '
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return "\"" s "\"" }
  function num(x) { return (x == "NA" || x == "") ? "null" : x + 0 }
  function sub_(a, b) { return (a == "NA" || b == "NA" || a == "" || b == "") ? "null" : a - b }
  function ratio(a, b) { return (a == "NA" || b == "NA" || a == "null" || b == "null" || b + 0 == 0) ? "null" : sprintf("%.3f", a / b) + 0 }
  NR == 1 { for (i = 1; i <= NF; i++) col[i] = $i; ncol = NF; next }
  { n++; for (i = 1; i <= ncol; i++) cell[n, col[i]] = $i
    if ($3 == "ok" && $2 == "direct") dir[$1] = n; if ($3 == "ok" && $2 == "haproxy") hap[$1] = n }
  END {
    print "{"
    print "  \"benchmark\": \"outrigger load bench (benches/load/run.sh)\","
    print "  \"date\": ", esc(date), ","
    print "  \"git_rev\": ", esc(rev), ","
    print "  \"machine\": {\"cpus\": ", ncpu, ", \"cpu_model\": ", esc(cpu), ", \"kernel\": ", esc(kernel), "},"
    print "  \"settings\": {\"duration_s\": ", duration, ", \"conns\": ", conns, ", \"warmup_s\": ", warmup,
      ", \"lat_rate\": ", rate, ", \"lat_duration_s\": ", latdur, ", \"lat_conns\": ", latconns,
      ", \"lat_1cpu\": ", (l1 == 1 ? "true" : "false"), ", \"loadgen_cpu\": ", lc, ", \"proxy_cpu\": ", pc,
      ", \"rounds\": ", rounds, ", \"backend\": ", esc(backend), ", \"latency_tool\": ", esc(lattool), "},"
    print "  \"busy_before_run_pct\": {\"loadgen_cpu\": ", busy0 + 0, ", \"proxy_cpu\": ", busy1 + 0, "},"
    print "  \"versions\": {\"wrk\": ", esc(wrkv), ", \"haproxy\": ", esc(hapv), ", \"nginx\": ", esc(ngxv),
      ", \"outrigger\": ", esc(outv), ", \"outrigger_bin\": ", esc(outbin), "},"
    print "  \"results\": ["
    for (r = 1; r <= n; r++) {
      R = cell[r, "round"]; d = dir[R]; h = hap[R]
      printf "    {\"round\": %d, \"proxy\": %s, \"status\": %s", R, esc(cell[r, "proxy"]), esc(cell[r, "status"])
      for (i = 4; i <= ncol; i++) printf ", \"%s\": %s", col[i], num(cell[r, col[i]])
      split("p50_us p99_us p999_us p50_1cpu_us p99_1cpu_us p999_1cpu_us", lk, " ")
      printf ", \"added_over_direct\": {"
      for (k = 1; k <= 6; k++)
        printf "%s\"%s\": %s", (k > 1 ? ", " : ""), lk[k], d ? sub_(cell[r, lk[k]], cell[d, lk[k]]) : "null"
      printf "}, \"vs_haproxy\": {"
      printf "\"rps\": %s, \"proxy_cpu_us_per_req\": %s, \"peak_rss_kb\": %s, \"idle_rss_kb\": %s",
        h ? ratio(cell[r, "rps"], cell[h, "rps"]) : "null",
        h ? ratio(cell[r, "proxy_cpu_us_per_req"], cell[h, "proxy_cpu_us_per_req"]) : "null",
        h ? ratio(cell[r, "peak_rss_kb"], cell[h, "peak_rss_kb"]) : "null",
        h ? ratio(cell[r, "idle_rss_kb"], cell[h, "idle_rss_kb"]) : "null"
      for (k = 1; k <= 6; k++) {
        a = d ? sub_(cell[r, lk[k]], cell[d, lk[k]]) : "null"; b = (d && h) ? sub_(cell[h, lk[k]], cell[d, lk[k]]) : "null"
        printf ", \"added_%s\": %s", lk[k], ratio(a, b)
      }
      printf "}}%s\n", (r < n ? "," : "")
    }
    print "  ]"
    print "}"
  }' "$RESULTS" > "$JSON"
  if have jq && ! jq empty "$JSON" 2>/dev/null; then log "WARNING: $JSON is not valid JSON"; fi
}

# ------------------------------------------------------------------- run --
for round in $(seq 1 "$ROUNDS"); do
  for name in $PROXIES; do
    if [ "$(time_left)" -lt $((WARMUP + DURATION + 2 * LAT_DURATION + 40)) ]; then
      log "MAX_TOTAL_S=$MAX_TOTAL_S reached — stopping early"; break 2
    fi
    measure "$round" "$name"
  done
  print_round "$round"
  print_targets "$round"
done
write_json

cat <<EOF

Columns: rps = requests/s of the saturation run; cpu-us/req = the proxy's CPU time
(user+sys, all threads and processes) per request, in microseconds; /hap = ratio to
haproxy's figure in the same run; cpu$PROXY_CPU% / cpu$LOADGEN_CPU% = how busy the proxy's CPU
and the load generator's CPU were (a proxy row with cpu$PROXY_CPU% well under 100 was not
the bottleneck: CPU $LOADGEN_CPU was); backend-us = the backend's CPU per request; steal% =
hypervisor steal; idle/peak-MiB = VmRSS after start / VmHWM after all runs.
Latency: +x = the proxy's figure minus direct's; +p50/hap = that divided by
haproxy's; in the same-CPU table p99/hap = p99 / haproxy's p99. p99 and p99.9 of a
short run move a lot from run to run: compare them over several ROUNDS.
Latency tool: $LAT_TOOL_DESC.
Results: $JSON
         $RESULTS   (configs and logs: $WORK)
EOF
