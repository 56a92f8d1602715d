#!/usr/bin/env bash
# Put throughput of one Cairn member without and with a bound admission
# plugin (docs/benchmarks.md, "Plugins"). Runs alternate pairs so that drift
# in the machine's load shows as spread rather than as a bias.
#
#   scripts/bench-plugin-put.sh [PLUGIN.wasm] [PAIRS]
#
# PLUGIN defaults to allow-all from `make plugins`; binaries come from
# $CARGO_TARGET_DIR/debug (build them first).
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}
BIN=$TARGET/debug
PLUGIN=${1:-$TARGET/plugins/allow-all.wasm}
PAIRS=${2:-2}
[ -f "$PLUGIN" ] || { echo "no plugin at $PLUGIN: run make plugins" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLIENT=http://127.0.0.1:$(free_port)
PEER=http://127.0.0.1:$(free_port)
DIR=$(mktemp -d)
"$BIN/cairn" --name bench --data-dir "$DIR/data" \
    --listen-client-urls "$CLIENT" --advertise-client-urls "$CLIENT" \
    --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" \
    --initial-cluster "bench=$PEER" >"$DIR/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
"$BIN/cairn-bench" --endpoints "$CLIENT" wait --timeout 30s >/dev/null

# 8-byte keys from a 10,000-key space are zero-padded numbers: all start with 0.
run() {
    "$BIN/cairn-bench" --endpoints "$CLIENT" --clients 16 --conns 4 --total 4000 --key-size 8 --json put |
        python3 -c 'import sys,json; d=json.load(sys.stdin); print("%-8s %8.0f req/s  p99 %6.2f ms  errors %d" % (sys.argv[1], d["throughput"], d["latency_ms"]["p99"], d["errors"]))' "$1"
}
for i in $(seq 1 "$PAIRS"); do
    run without
    "$BIN/cairnctl" --endpoints "$CLIENT" --timeout 60 plugin install bench-plugin "$PLUGIN" --hook admission --prefix 0 >/dev/null
    run with
    "$BIN/cairnctl" --endpoints "$CLIENT" plugin remove bench-plugin >/dev/null
done
