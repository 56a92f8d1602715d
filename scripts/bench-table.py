#!/usr/bin/env python3
"""Turns bench-compare.sh's raw JSON lines into markdown tables.

Each workload's figure is the median over rounds; ratios are cairn/etcd, so
above 1 is better for throughput and below 1 is better for latency, memory
and restart time.
"""
import json
import statistics
import sys
from collections import defaultdict


def load(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def ratio(c, e):
    if c is None or e is None or e == 0:
        return "n/a"
    return f"{c / e:.2f}"


def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main():
    runs, memory, members = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
    order, tput, p99, cpu, failures = [], defaultdict(list), defaultdict(list), defaultdict(list), {}
    for r in runs:
        key = (r["name"], r["system"])
        if r["name"] not in order:
            order.append(r["name"])
        rep = r.get("report")
        if rep is None or rep.get("errors", 0) > 0 and rep.get("requests", 0) == 0:
            failures[key] = r.get("failed") or (rep or {}).get("first_error") or "failed"
            continue
        tput[key].append(rep["throughput"])
        p99[key].append(rep["latency_ms"]["p99"])
        if "server_cpu_ms" in r and rep["requests"] > 0:
            # Server CPU time per 1000 successful requests (events for watch).
            cpu[key].append(r["server_cpu_ms"] * 1000 / rep["requests"])

    def med(d, key):
        return statistics.median(d[key]) if d.get(key) else None

    print(f"### Workloads, {members}-member clusters (median of rounds)\n")
    print("| workload | etcd req/s | cairn req/s | cairn/etcd | etcd p99 ms | cairn p99 ms | cairn/etcd p99 "
          "| etcd CPU ms/1k req | cairn CPU ms/1k req | cairn/etcd CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in order:
        et, ct = med(tput, (name, "etcd")), med(tput, (name, "cairn"))
        ep, cp = med(p99, (name, "etcd")), med(p99, (name, "cairn"))
        c_note = "" if (name, "cairn") not in failures else " (failed)"
        e_note = "" if (name, "etcd") not in failures else " (failed)"
        ec, cc = med(cpu, (name, "etcd")), med(cpu, (name, "cairn"))
        print(f"| {name} | {fmt(et)}{e_note} | {fmt(ct)}{c_note} | {ratio(ct, et)} | {fmt(ep, 2)} | {fmt(cp, 2)} | {ratio(cp, ep)} "
              f"| {fmt(ec)} | {fmt(cc)} | {ratio(cc, ec)} |")
    if any(system == "etcd35" for (_, system) in list(tput) + list(failures)):
        print("\n### The same workloads against etcd 3.5.1 (same run)\n")
        print("| workload | etcd 3.5 req/s | cairn req/s | cairn/etcd 3.5 | etcd 3.5 p99 ms | cairn p99 ms | cairn/etcd 3.5 p99 "
              "| etcd 3.5 CPU ms/1k req | cairn/etcd 3.5 CPU |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in order:
            et, ct = med(tput, (name, "etcd35")), med(tput, (name, "cairn"))
            ep, cp = med(p99, (name, "etcd35")), med(p99, (name, "cairn"))
            ec, cc = med(cpu, (name, "etcd35")), med(cpu, (name, "cairn"))
            print(f"| {name} | {fmt(et)} | {fmt(ct)} | {ratio(ct, et)} | {fmt(ep, 2)} | {fmt(cp, 2)} | {ratio(cp, ep)} "
                  f"| {fmt(ec)} | {ratio(cc, ec)} |")
    for (name, system), why in failures.items():
        print(f"\n- {name} on {system} failed: {why}")

    if memory:
        by = {m["system"]: m for m in memory}
        keys = memory[0]["keys"]
        print(f"\n### Memory and restart, {keys:,} keys (32 B keys, 256 B values), {members}-member clusters\n")
        print("| metric | etcd | cairn | cairn/etcd |")
        print("|---|---:|---:|---:|")

        def row(label, field, scale=1.0, digits=1):
            e = by.get("etcd", {}).get(field)
            c = by.get("cairn", {}).get(field)
            e = None if e is None else e * scale
            c = None if c is None else c * scale
            print(f"| {label} | {fmt(e, digits)} | {fmt(c, digits)} | {ratio(c, e)} |")

        row("RSS after load (MiB, all members)", "rss_kib_loaded", 1 / 1024)
        row("RSS per key (bytes)", "rss_kib_loaded", 1024 / keys / int(members))
        row("RSS after restart (MiB)", "rss_kib_restarted", 1 / 1024)
        row("data on disk (MiB)", "disk_kib", 1 / 1024)
        row("restart until a linearizable read answers (ms)", "restart_ms", 1, 0)
        load_t = {s: m["load"]["throughput"] * 128 for s, m in by.items() if m.get("load")}
        print(f"| load rate (keys/s, 128 puts per txn) | {fmt(load_t.get('etcd'), 0)} | {fmt(load_t.get('cairn'), 0)} | {ratio(load_t.get('cairn'), load_t.get('etcd'))} |")


if __name__ == "__main__":
    main()
