#!/usr/bin/env bash
# Side-by-side benchmark of the real etcd 3.4 and Cairn on this machine.
#
# Starts both on loopback ports with fresh data dirs, drives the same
# workloads through the same cairn-bench binary, alternating etcd/cairn
# (and which goes first) every round, and prints markdown tables of
# throughput, p99 latency and cairn/etcd ratios; then loads N keys
# (32-byte keys, 256-byte values) into fresh servers and reports resident
# memory and the time a restart with that data takes to answer again.
#
# Usage: scripts/bench-compare.sh [--quick] [--members 1|3] [--rounds R]
#          [--profile release|dev-opt|dev] [--workloads put,range-l,...]
#          [--keys N] [--skip-memory] [--out DIR] [--tls] [--auth] [--gateway]
# --gateway measures etcd's JSON gateway instead (puts and ranges as JSON
# over HTTP/1.1 keep-alive connections, cairn-bench --gateway), with the
# official etcd 3.5.1 (ETCD35_BIN, default where scripts/install-deps.sh
# puts it) as a third system beside etcd 3.4 and Cairn; no memory run.
# Environment: ETCD_BIN (default /usr/bin/etcd), CAIRN_BIN and BENCH_BIN to
# use prebuilt binaries instead of building, CARGO_TARGET_DIR as for cargo.
# Profiles: dev-opt (default), the dev profile (dependencies at opt-level 2)
# with the cairn crate at opt-level 3 and without debug assertions, which
# reuses the dependencies `make test` already built and is what
# docs/benchmarks.md reports; release, a full release build (RocksDB's C++
# included, ~20 minutes cold on 2 cores); dev, the test profile as is
# (cairn's own code unoptimised).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
MEMBERS=1
ROUNDS=""
PROFILE=dev-opt
WORKLOADS="put,range-l,range-s,txn,mixed,watch,lease-keepalive"
KEYS=""
SKIP_MEMORY=0
OUT=""
TLS=0
AUTH=0
GATEWAY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --members) MEMBERS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --profile) PROFILE="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --keys) KEYS="$2"; shift ;;
    --skip-memory) SKIP_MEMORY=1 ;;
    --out) OUT="$2"; shift ;;
    --tls) TLS=1 ;;
    --auth) AUTH=1 ;;
    --gateway) GATEWAY=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
case "$MEMBERS" in 1|3) ;; *) echo "--members must be 1 or 3" >&2; exit 2 ;; esac

if [ "$QUICK" = 1 ]; then
  TOTAL=${TOTAL:-3000}; ROUNDS=${ROUNDS:-1}; KEYS=${KEYS:-20000}; KEY_SPACE=${KEY_SPACE:-2000}
else
  TOTAL=${TOTAL:-30000}; ROUNDS=${ROUNDS:-2}; KEYS=${KEYS:-1000000}; KEY_SPACE=${KEY_SPACE:-10000}
fi
CONNS=${CONNS:-10}
CLIENTS=${CLIENTS:-100}
KEY_SIZE=${KEY_SIZE:-32}
VAL_SIZE=${VAL_SIZE:-256}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
ETCD35_BIN=${ETCD35_BIN:-${CAIRN_ETCD35_DIR:-$HOME/.cache/cairn-tools/etcd-3.5.1}/etcd}
SYSTEMS="etcd cairn"
if [ "$GATEWAY" = 1 ]; then
  SYSTEMS="etcd etcd35 cairn"
  [ "$WORKLOADS" = "put,range-l,range-s,txn,mixed,watch,lease-keepalive" ] && WORKLOADS="gateway-put,gateway-range-l,gateway-range-s"
  SKIP_MEMORY=1
  # HTTP/1.1 carries one request at a time: a connection per client.
  CONNS=${GATEWAY_CONNS:-$CLIENTS}
fi

# --- binaries --------------------------------------------------------------
if [ -z "${CAIRN_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  case "$PROFILE" in
    release) (cd "$ROOT" && cargo build --release -p cairn -p cairn-bench) >&2; PROFILE_DIR=release ;;
    # --workspace --all-targets: the feature set `make test` builds with, so
    # RocksDB is not rebuilt.
    # The server, its wire types and the load generator, fully optimised.
    dev-opt) (cd "$ROOT" && cargo build --workspace --all-targets \
      $(for p in cairn cairn-proto cairn-bench; do
          printf -- "--config profile.dev.package.%s.%s " "$p" opt-level=3 "$p" debug-assertions=false "$p" overflow-checks=false
        done)) >&2; PROFILE_DIR=debug ;;
    dev) (cd "$ROOT" && cargo build --workspace --all-targets) >&2; PROFILE_DIR=debug ;;
    *) echo "--profile must be release, dev-opt or dev" >&2; exit 2 ;;
  esac
  CAIRN_BIN=${CAIRN_BIN:-$TARGET_DIR/$PROFILE_DIR/cairn}
  BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/$PROFILE_DIR/cairn-bench}
fi
bins=("$ETCD_BIN" "$CAIRN_BIN" "$BENCH_BIN")
[ "$GATEWAY" = 1 ] && bins+=("$ETCD35_BIN")
for b in "${bins[@]}"; do
  [ -x "$b" ] || { echo "missing binary: $b" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-compare.XXXXXX")
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK/data"
}
trap cleanup EXIT

# --- TLS and auth ------------------------------------------------------------
SCHEME=http
SERVER_TLS=()
CLIENT_TLS=()
if [ "$TLS" = 1 ]; then
  SCHEME=https
  certs="$WORK/certs"
  mkdir -p "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
      -keyout "$certs/$who.key" -out "$certs/$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$certs/$who.ext"
    openssl x509 -req -in "$certs/$who.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
      -days 2 -extfile "$certs/$who.ext" -out "$certs/$who.crt" 2>/dev/null
  done
  SERVER_TLS=(--cert-file "$certs/server.crt" --key-file "$certs/server.key" --trusted-ca-file "$certs/ca.crt" --client-cert-auth)
  CLIENT_TLS=(--cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key")
fi
BENCH_USER=()
[ "$AUTH" = 1 ] && BENCH_USER=(--user bench:bench-password)

# enable_auth SYSTEM: a root user, and a user whose role may read and write
# every key the workloads touch ("0"... onwards), then auth on.
enable_auth() {
  local ctl=("$ETCDCTL_BIN" --endpoints "$(endpoints "$1")" "${CLIENT_TLS[@]}")
  ETCDCTL_API=3 "${ctl[@]}" user add root:root-password >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" user grant-role root root >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" role add bench >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" role grant-permission bench readwrite 0 --from-key >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" user add bench:bench-password >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" user grant-role bench bench >/dev/null
  ETCDCTL_API=3 "${ctl[@]}" auth enable >/dev/null
}

# --- clusters --------------------------------------------------------------
# Member i of a system listens for clients on BASE+2i and for peers on
# BASE+2i+1; etcd and cairn get disjoint bases so both can run at once.
base_port() { case "$1" in etcd) echo 24000 ;; cairn) echo 25000 ;; etcd35) echo 26000 ;; esac; }
bin_of() { case "$1" in etcd) echo "$ETCD_BIN" ;; cairn) echo "$CAIRN_BIN" ;; etcd35) echo "$ETCD35_BIN" ;; esac; }

endpoints() {
  local base; base=$(base_port "$1")
  local eps=()
  for ((i = 0; i < MEMBERS; i++)); do eps+=("$SCHEME://127.0.0.1:$((base + 2 * i))"); done
  (IFS=,; echo "${eps[*]}")
}

# start_cluster SYSTEM TAG: starts MEMBERS members with fresh (or, when the
# data dir exists, existing) data; sets CLUSTER_PIDS.
start_cluster() {
  local sys=$1 tag=$2 base bin cluster=""
  base=$(base_port "$sys"); bin=$(bin_of "$sys")
  for ((i = 0; i < MEMBERS; i++)); do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"
  done
  CLUSTER_PIDS=()
  for ((i = 0; i < MEMBERS; i++)); do
    local dir="$WORK/data/$sys-$tag/m$i" client="$SCHEME://127.0.0.1:$((base + 2 * i))" peer="http://127.0.0.1:$((base + 2 * i + 1))"
    mkdir -p "$dir"
    "$bin" --name "m$i" --data-dir "$dir/data" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$sys" --log-level error "${SERVER_TLS[@]}" \
      >>"$WORK/$sys-$tag-m$i.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    PIDS+=($!)
  done
}

stop_cluster() {
  for pid in "${CLUSTER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

wait_ready() { "$BENCH_BIN" --endpoints "$(endpoints "$1")" "${CLIENT_TLS[@]}" --json wait --timeout "${2:-60s}"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# CPU time (user+system, in clock ticks) the members of SYSTEM have used:
# a per-request cost that, unlike throughput, holds up on a busy machine.
cpu_ticks() {
  local total=0 pid
  for pid in ${SYS_PIDS[$1]}; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
TICKS_PER_SEC=$(getconf CLK_TCK)

bench() { # SYSTEM [--clients N] [--conns N] WORKLOAD-ARGS... -> JSON line on stdout
  local sys=$1 clients=$CLIENTS conns=$CONNS rest=()
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --clients) clients=$2; shift ;;
      --conns) conns=$2; shift ;;
      *) rest+=("$1") ;;
    esac
    shift
  done
  RUST_BACKTRACE=0 "$BENCH_BIN" --endpoints "$(endpoints "$sys")" "${CLIENT_TLS[@]}" "${BENCH_USER[@]}" \
    --conns "$conns" --clients "$clients" \
    --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --json "${rest[@]}"
}

workload_args() {
  case "$1" in
    put) echo "--total $TOTAL --key-space 100000 put" ;;
    range-l) echo "--total $TOTAL --key-space $KEY_SPACE range --consistency l --no-prefill" ;;
    range-s) echo "--total $TOTAL --key-space $KEY_SPACE range --consistency s --no-prefill" ;;
    txn) echo "--total $TOTAL --key-space 100000 txn" ;;
    mixed) echo "--total $TOTAL --key-space $KEY_SPACE mixed --read-ratio 0.9 --no-prefill" ;;
    watch) echo "--total $((TOTAL / 10)) --clients 10 --key-space 1000 watch --watchers 100 --streams 10" ;;
    lease-keepalive) echo "--total $TOTAL lease-keepalive" ;;
    gateway-put) echo "--gateway --total $TOTAL --key-space 100000 put" ;;
    gateway-range-l) echo "--gateway --total $TOTAL --key-space $KEY_SPACE range --consistency l --no-prefill" ;;
    gateway-range-s) echo "--gateway --total $TOTAL --key-space $KEY_SPACE range --consistency s --no-prefill" ;;
    *) echo "unknown workload $1" >&2; return 1 ;;
  esac
}

echo "## Machine" >&2
echo "nproc=$(nproc) mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) disk=$(df -h --output=source,fstype "$WORK" | tail -1)" >&2
echo "etcd: $("$ETCD_BIN" --version | head -1); cairn: $CAIRN_BIN; bench: $BENCH_BIN" >&2
[ "$GATEWAY" = 1 ] && echo "etcd35: $("$ETCD35_BIN" --version | head -1)" >&2
echo "members=$MEMBERS rounds=$ROUNDS total=$TOTAL conns=$CONNS clients=$CLIENTS key-size=$KEY_SIZE val-size=$VAL_SIZE tls=$TLS auth=$AUTH gateway=$GATEWAY" >&2

# --- workloads -------------------------------------------------------------
RESULTS="$OUT/workloads.jsonl"
: >"$RESULTS"
declare -A UP SYS_PIDS
RUN_PIDS=()
for sys in $SYSTEMS; do
  start_cluster "$sys" run
  RUN_PIDS+=("${CLUSTER_PIDS[@]}")
  SYS_PIDS[$sys]="${CLUSTER_PIDS[*]}"
  if wait_ready "$sys" >/dev/null 2>&1 && { [ "$AUTH" = 0 ] || enable_auth "$sys"; }; then
    UP[$sys]=1
    # The read workloads share one loaded key space.
    bench "$sys" --key-space "$KEY_SPACE" --clients 8 load >/dev/null || UP[$sys]=0
  else
    echo "$sys did not become ready; see $WORK/$sys-run-m*.log" >&2
    UP[$sys]=0
  fi
done

IFS=, read -r -a WL <<<"$WORKLOADS"
idx=0
for ((round = 1; round <= ROUNDS; round++)); do
  for w in "${WL[@]}"; do
    idx=$((idx + 1))
    # Which system goes first rotates with every workload.
    read -r -a sys_list <<<"$SYSTEMS"
    n=${#sys_list[@]}
    order=""
    for ((k = 0; k < n; k++)); do order+=" ${sys_list[$(((idx + k) % n))]}"; done
    for sys in $order; do
      if [ "${UP[$sys]}" != 1 ]; then
        [ "$round" = 1 ] && echo "{\"system\":\"$sys\",\"round\":1,\"name\":\"$w\",\"failed\":\"$sys cluster did not become ready\"}" >>"$RESULTS"
        continue
      fi
      echo "round $round: $w on $sys" >&2
      before=$(cpu_ticks "$sys")
      # shellcheck disable=SC2046
      if line=$(bench "$sys" $(workload_args "$w") 2>"$WORK/err"); then
        cpu_ms=$(( ($(cpu_ticks "$sys") - before) * 1000 / TICKS_PER_SEC ))
        echo "{\"system\":\"$sys\",\"round\":$round,\"name\":\"$w\",\"server_cpu_ms\":$cpu_ms,\"report\":$line}" >>"$RESULTS"
      else
        why=$(grep -m1 -i error "$WORK/err" || tail -1 "$WORK/err")
        echo "  failed: $why" >&2
        echo "{\"system\":\"$sys\",\"round\":$round,\"name\":\"$w\",\"failed\":$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$why")}" >>"$RESULTS"
      fi
    done
  done
done
CLUSTER_PIDS=("${RUN_PIDS[@]}")
stop_cluster

# --- memory and restart ----------------------------------------------------
MEMORY="$OUT/memory.jsonl"
: >"$MEMORY"
# The memory clusters run without auth.
BENCH_USER=()
if [ "$SKIP_MEMORY" = 0 ]; then
  for sys in $SYSTEMS; do
    start_cluster "$sys" mem
    if ! wait_ready "$sys" >/dev/null 2>&1; then
      echo "$sys did not become ready for the memory run" >&2
      stop_cluster; continue
    fi
    echo "loading $KEYS keys into $sys" >&2
    if ! load=$(bench "$sys" --key-space "$KEYS" --clients 16 --conns 4 load 2>"$WORK/err"); then
      echo "  load failed: $(tail -1 "$WORK/err")" >&2
      stop_cluster; continue
    fi
    sleep 2
    rss_loaded=0
    for pid in "${CLUSTER_PIDS[@]}"; do rss_loaded=$((rss_loaded + $(rss_kib "$pid"))); done
    disk_kib=$(du -sk "$WORK/data/$sys-mem" | cut -f1)
    stop_cluster
    t0=$(date +%s%N)
    start_cluster "$sys" mem
    if wait_ready "$sys" 300s >/dev/null 2>&1; then
      t1=$(date +%s%N)
      restart_ms=$(( (t1 - t0) / 1000000 ))
    else
      restart_ms=null
    fi
    sleep 1
    rss_restarted=0
    for pid in "${CLUSTER_PIDS[@]}"; do rss_restarted=$((rss_restarted + $(rss_kib "$pid"))); done
    stop_cluster
    echo "{\"system\":\"$sys\",\"keys\":$KEYS,\"members\":$MEMBERS,\"rss_kib_loaded\":$rss_loaded,\"rss_kib_restarted\":$rss_restarted,\"disk_kib\":$disk_kib,\"restart_ms\":$restart_ms,\"load\":$load}" >>"$MEMORY"
  done
fi

python3 "$ROOT/scripts/bench-table.py" "$RESULTS" "$MEMORY" "$MEMBERS"
echo "raw results: $OUT" >&2
