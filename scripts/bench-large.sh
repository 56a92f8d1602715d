#!/usr/bin/env bash
# More data than memory: Cairn beside etcd 3.4 and etcd 3.5.1, each member
# in a memory cgroup capped at --cap-mib (cgroup v1 memory.limit_in_bytes or
# v2 memory.max; run as root). Not a CI test: it writes gigabytes.
#
# Part 1, per system: one member under the cap loads --size-gib of keys and
# values (32-byte keys, --value-bytes values, one put per request), then
#   put and range (linearizable, random keys) throughput,
#   restart time until a linearizable read answers,
#   the time a second member (same cap) takes to join by snapshot until it
#   answers a linearizable read itself,
# and whether the member survived the cap (cgroup oom_kill count, exit).
# Part 2, per system, without a cap: memory (RSS) and disk per key after
# loading each of --per-key counts of keys (32-byte keys, 256-byte values).
#
# Usage: scripts/bench-large.sh [--quick] [--size-gib N] [--cap-mib M]
#          [--value-bytes B] [--systems cairn,etcd34,etcd35]
#          [--per-key 1000000,10000000] [--per-key-systems cairn,etcd34]
#          [--skip-large] [--skip-per-key] [--out DIR]
# --quick: 2 GiB under 256 MiB (the same ratio), per key at 1M and 2M keys.
# Environment: CAIRN_BIN and BENCH_BIN (default: the dev-opt build, as
# scripts/bench-compare.sh makes it), ETCD34_BIN, ETCD35_BIN, ETCDCTL_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_GIB=8
CAP_MIB=1024
VALUE_BYTES=4096
SYSTEMS=cairn,etcd34,etcd35
PER_KEY=1000000,10000000
PER_KEY_SYSTEMS=cairn,etcd34
SKIP_LARGE=0
SKIP_PER_KEY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SIZE_GIB=2; CAP_MIB=256; PER_KEY=1000000,2000000 ;;
    --size-gib) SIZE_GIB="$2"; shift ;;
    --cap-mib) CAP_MIB="$2"; shift ;;
    --value-bytes) VALUE_BYTES="$2"; shift ;;
    --systems) SYSTEMS="$2"; shift ;;
    --per-key) PER_KEY="$2"; shift ;;
    --per-key-systems) PER_KEY_SYSTEMS="$2"; shift ;;
    --skip-large) SKIP_LARGE=1 ;;
    --skip-per-key) SKIP_PER_KEY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "memory cgroups need root" >&2; exit 1; }

ETCD34_BIN=${ETCD34_BIN:-/usr/bin/etcd}
ETCD35_BIN=${ETCD35_BIN:-$HOME/.cache/cairn-tools/etcd-3.5.1/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
if [ -z "${CAIRN_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  # The profile docs/benchmarks.md reports (see scripts/bench-compare.sh).
  (cd "$ROOT" && cargo build --workspace --all-targets \
    $(for p in cairn cairn-proto cairn-bench; do
        printf -- "--config profile.dev.package.%s.%s " "$p" opt-level=3 "$p" debug-assertions=false "$p" overflow-checks=false
      done)) >&2
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  CAIRN_BIN=${CAIRN_BIN:-$TARGET_DIR/debug/cairn}
  BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/debug/cairn-bench}
fi
for b in "$CAIRN_BIN" "$BENCH_BIN" "$ETCDCTL_BIN"; do
  [ -x "$b" ] || { echo "missing binary: $b" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-bench-large.XXXXXX")
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
RESULTS="$OUT/large.jsonl"
PER_KEY_RESULTS="$OUT/per-key.jsonl"
PIDS=()
CGROUPS=()

# --- memory cgroups ----------------------------------------------------------
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  CG_VERSION=2; CG_ROOT=/sys/fs/cgroup
  grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory >/sys/fs/cgroup/cgroup.subtree_control
else
  CG_VERSION=1; CG_ROOT=/sys/fs/cgroup/memory
fi

# cg_create NAME MIB: a fresh memory cgroup with that limit (0: none).
cg_create() {
  local dir="$CG_ROOT/cairn-bench-$1"
  [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
  mkdir -p "$dir"
  CGROUPS+=("$dir")
  if [ "$2" != 0 ]; then
    local bytes=$(($2 * 1024 * 1024))
    if [ "$CG_VERSION" = 2 ]; then
      echo "$bytes" >"$dir/memory.max"
      [ -f "$dir/memory.swap.max" ] && echo 0 >"$dir/memory.swap.max"
    else
      echo "$bytes" >"$dir/memory.limit_in_bytes"
    fi
  fi
}
cg_dir() { echo "$CG_ROOT/cairn-bench-$1"; }
cg_oom_kills() {
  local dir; dir=$(cg_dir "$1")
  if [ "$CG_VERSION" = 2 ]; then awk '/^oom_kill / {print $2}' "$dir/memory.events"
  else awk '/^oom_kill / {print $2}' "$dir/memory.oom_control"; fi
}
# Peak charge of the cgroup (page cache included), MiB.
cg_peak_mib() {
  local dir f
  dir=$(cg_dir "$1")
  if [ "$CG_VERSION" = 2 ]; then f="$dir/memory.peak"; else f="$dir/memory.max_usage_in_bytes"; fi
  if [ -f "$f" ]; then echo $(($(cat "$f") / 1048576)); else echo null; fi
}

cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  for dir in "${CGROUPS[@]:-}"; do [ -n "$dir" ] && rmdir "$dir" 2>/dev/null || true; done
  rm -rf "$WORK/data"
}
trap cleanup EXIT

# --- members -----------------------------------------------------------------
bin_of() {
  case "$1" in
    cairn) echo "$CAIRN_BIN" ;;
    etcd34) echo "$ETCD34_BIN" ;;
    etcd35) echo "$ETCD35_BIN" ;;
  esac
}
base_port() { case "$1" in cairn) echo 26000 ;; etcd34) echo 26100 ;; etcd35) echo 26200 ;; esac; }
client_url() { echo "http://127.0.0.1:$(($(base_port "$1") + 2 * $2))"; }
peer_url() { echo "http://127.0.0.1:$(($(base_port "$1") + 2 * $2 + 1))"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# start_member SYSTEM I CGROUP CLUSTER STATE: member mI of SYSTEM inside the
# cgroup; sets MEMBER_PID. Every system gets a quota above the data set
# (etcd's default and Cairn's, 2 GiB, refuse writes past it).
start_member() {
  local sys=$1 i=$2 cg=$3 cluster=$4 state=$5 extra=()
  local dir="$WORK/data/$sys/m$i"
  mkdir -p "$dir"
  extra=(--quota-backend-bytes $(((SIZE_GIB * 2 + 2) * 1024 * 1024 * 1024)))
  # The child joins the cgroup before it execs the server.
  bash -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$(cg_dir "$cg")" \
    "$(bin_of "$sys")" --name "m$i" --data-dir "$dir/data" \
    --listen-client-urls "$(client_url "$sys" "$i")" --advertise-client-urls "$(client_url "$sys" "$i")" \
    --listen-peer-urls "$(peer_url "$sys" "$i")" --initial-advertise-peer-urls "$(peer_url "$sys" "$i")" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token "bench-large-$sys" \
    --snapshot-count 10000 --log-level error "${extra[@]}" \
    >>"$WORK/$sys-m$i.log" 2>&1 &
  MEMBER_PID=$!
  PIDS+=("$MEMBER_PID")
}

# wait_ready ENDPOINT: until it answers a linearizable read (10 minutes at most).
wait_ready() { "$BENCH_BIN" --endpoints "$1" wait --timeout 600s >/dev/null 2>&1; }

stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

alive() { kill -0 "$1" 2>/dev/null; }
peak_rss_mib() { awk '/^VmHWM:/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo null; }
rss_mib() { awk '/^VmRSS:/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo null; }
disk_mib() { du -sm "$1" | cut -f1; }
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# bench SYSTEM ENDPOINT ARGS...: one cairn-bench run, its JSON report or null.
bench() {
  local sys=$1 ep=$2; shift 2
  if out=$("$BENCH_BIN" --endpoints "$ep" --json "$@" 2>"$WORK/bench.err"); then echo "$out"
  else echo "  $sys: cairn-bench $* failed: $(tail -1 "$WORK/bench.err")" >&2; echo null; fi
}

echo "## Machine" >&2
echo "nproc=$(nproc) mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) cgroup v$CG_VERSION load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "commit=$(git -C "$ROOT" rev-parse --short HEAD) cairn=$CAIRN_BIN size=${SIZE_GIB}GiB cap=${CAP_MIB}MiB value=${VALUE_BYTES}B" >&2

# --- part 1: more data than the cap ------------------------------------------
KEYS=$((SIZE_GIB * 1024 * 1024 * 1024 / VALUE_BYTES))
OPS=${OPS:-20000}
if [ "$SKIP_LARGE" = 0 ]; then
  : >"$RESULTS"
  IFS=, read -r -a SYS <<<"$SYSTEMS"
  for sys in "${SYS[@]}"; do
    echo "== $sys: ${SIZE_GIB} GiB ($KEYS keys) under ${CAP_MIB} MiB" >&2
    cg_create "$sys-m0" "$CAP_MIB"
    one="m0=$(peer_url "$sys" 0)"
    start_member "$sys" 0 "$sys-m0" "$one" new
    pid=$MEMBER_PID
    ep=$(client_url "$sys" 0)
    result="{\"system\":\"$sys\",\"size_gib\":$SIZE_GIB,\"cap_mib\":$CAP_MIB,\"value_bytes\":$VALUE_BYTES,\"keys\":$KEYS"
    if ! wait_ready "$ep"; then
      echo "  $sys did not start" >&2
      echo "$result,\"failed\":\"did not start\"}" >>"$RESULTS"
      stop_pid "$pid"; continue
    fi
    t0=$(now_ms)
    load=$(bench "$sys" "$ep" --key-size 32 --val-size "$VALUE_BYTES" --key-space "$KEYS" --clients 32 --conns 4 load --batch 1)
    load_ms=$(($(now_ms) - t0))
    result+=",\"load\":$load,\"load_ms\":$load_ms,\"alive_after_load\":$(alive "$pid" && echo true || echo false)"
    result+=",\"oom_kills_after_load\":$(cg_oom_kills "$sys-m0")"
    echo "  loaded in ${load_ms} ms; alive: $(alive "$pid" && echo yes || echo no)" >&2
    if alive "$pid"; then
      result+=",\"disk_mib\":$(disk_mib "$WORK/data/$sys/m0/data")"
      put=$(bench "$sys" "$ep" --key-size 32 --val-size "$VALUE_BYTES" --key-space "$KEYS" --total "$OPS" --clients 32 --conns 4 put)
      range=$(bench "$sys" "$ep" --key-size 32 --key-space "$KEYS" --total "$OPS" --clients 32 --conns 4 range --no-prefill)
      result+=",\"put\":$put,\"range\":$range,\"peak_rss_mib\":$(peak_rss_mib "$pid")"
      echo "  put and range measured" >&2
      stop_pid "$pid"
      t0=$(now_ms)
      start_member "$sys" 0 "$sys-m0" "$one" new
      pid=$MEMBER_PID
      if wait_ready "$ep"; then result+=",\"restart_ms\":$(($(now_ms) - t0))"; else result+=",\"restart_ms\":null"; fi
      echo "  restarted" >&2
      # A second member, under the same cap, joins by snapshot.
      cg_create "$sys-m1" "$CAP_MIB"
      ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$ep" member add m1 --peer-urls "$(peer_url "$sys" 1)" >/dev/null
      t0=$(now_ms)
      start_member "$sys" 1 "$sys-m1" "$one,m1=$(peer_url "$sys" 1)" existing
      joiner=$MEMBER_PID
      if wait_ready "$(client_url "$sys" 1)"; then result+=",\"join_ms\":$(($(now_ms) - t0))"; else result+=",\"join_ms\":null"; fi
      result+=",\"joiner_alive\":$(alive "$joiner" && echo true || echo false),\"joiner_peak_rss_mib\":$(peak_rss_mib "$joiner")"
      result+=",\"joiner_oom_kills\":$(cg_oom_kills "$sys-m1"),\"joiner_cgroup_peak_mib\":$(cg_peak_mib "$sys-m1")"
      echo "  joined" >&2
      stop_pid "$joiner"
    fi
    result+=",\"alive_at_end\":$(alive "$pid" && echo true || echo false),\"oom_kills\":$(cg_oom_kills "$sys-m0"),\"cgroup_peak_mib\":$(cg_peak_mib "$sys-m0")"
    stop_pid "$pid"
    echo "$result}" >>"$RESULTS"
    rm -rf "$WORK/data/$sys"
  done
fi

# --- part 2: memory and disk per key ------------------------------------------
if [ "$SKIP_PER_KEY" = 0 ]; then
  : >"$PER_KEY_RESULTS"
  IFS=, read -r -a SYS <<<"$PER_KEY_SYSTEMS"
  IFS=, read -r -a COUNTS <<<"$PER_KEY"
  for n in "${COUNTS[@]}"; do
    for sys in "${SYS[@]}"; do
      echo "== $sys: $n keys, no cap" >&2
      cg_create "$sys-m0" 0
      one="m0=$(peer_url "$sys" 0)"
      start_member "$sys" 0 "$sys-m0" "$one" new
      pid=$MEMBER_PID
      ep=$(client_url "$sys" 0)
      wait_ready "$ep" || { echo "  $sys did not start" >&2; stop_pid "$pid"; continue; }
      idle=$(rss_mib "$pid")
      load=$(bench "$sys" "$ep" --key-size 32 --val-size 256 --key-space "$n" --clients 16 --conns 4 load --batch 128)
      rss=$(rss_mib "$pid")
      disk=$(disk_mib "$WORK/data/$sys/m0/data")
      stop_pid "$pid"
      t0=$(now_ms)
      start_member "$sys" 0 "$sys-m0" "$one" new
      pid=$MEMBER_PID
      if wait_ready "$ep"; then restart=$(($(now_ms) - t0)); else restart=null; fi
      rss_restarted=$(rss_mib "$pid")
      stop_pid "$pid"
      echo "{\"system\":\"$sys\",\"keys\":$n,\"rss_mib_idle\":$idle,\"rss_mib_loaded\":$rss,\"rss_mib_restarted\":$rss_restarted,\"disk_mib\":$disk,\"restart_ms\":$restart,\"load\":$load}" >>"$PER_KEY_RESULTS"
      rm -rf "$WORK/data/$sys"
    done
  done
fi

python3 - "$RESULTS" "$PER_KEY_RESULTS" <<'EOF'
import json, os, sys

def rows(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]

def tput(r, name):
    rep = r.get(name)
    return f"{rep['throughput']:.0f}/s (p99 {rep['latency_ms']['p99']:.1f} ms, {rep['errors']} errors)" if rep else "-"

large = rows(sys.argv[1])
if large:
    r0 = large[0]
    print(f"\n### {r0['size_gib']} GiB under a {r0['cap_mib']} MiB cap ({r0['keys']} keys of {r0['value_bytes']} B)\n")
    print("| system | load | survived | put | range (l) | restart to a linearizable read | new member joins | peak RSS | disk |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in large:
        if "failed" in r:
            print(f"| {r['system']} | {r['failed']} | | | | | | | |")
            continue
        mib = r["size_gib"] * 1024
        load = f"{mib / (r['load_ms'] / 1000):.1f} MiB/s" if r.get("load") else "failed"
        survived = "yes" if r.get("alive_at_end") and not r.get("oom_kills") else f"no (oom kills {r.get('oom_kills')})"
        join = f"{r['join_ms'] / 1000:.1f} s" if r.get("join_ms") else "did not join"
        if r.get("joiner_oom_kills"):
            join += f" (joiner oom kills {r['joiner_oom_kills']})"
        restart = f"{r['restart_ms'] / 1000:.1f} s" if r.get("restart_ms") else "-"
        print(f"| {r['system']} | {load} | {survived} | {tput(r, 'put')} | {tput(r, 'range')} | {restart} | {join} | {r.get('peak_rss_mib', '-')} MiB | {r.get('disk_mib', '-')} MiB |")

per_key = rows(sys.argv[2])
if per_key:
    print("\n### Memory and disk per key (32-byte keys, 256-byte values, no cap)\n")
    print("| system | keys | RSS loaded | RSS after restart | bytes of RSS per key | disk | bytes of disk per key | restart |")
    print("|---|---|---|---|---|---|---|---|")
    for r in per_key:
        n = r["keys"]
        per = lambda mib: f"{(mib - r['rss_mib_idle']) * 1048576 / n:.0f}" if isinstance(mib, int) else "-"
        restart = f"{r['restart_ms'] / 1000:.1f} s" if r.get("restart_ms") else "-"
        print(f"| {r['system']} | {n} | {r['rss_mib_loaded']} MiB | {r['rss_mib_restarted']} MiB | {per(r['rss_mib_loaded'])} | {r['disk_mib']} MiB | {r['disk_mib'] * 1048576 / n:.0f} | {restart} |")
EOF
echo "results: $OUT" >&2
