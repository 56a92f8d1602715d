//! `cairn-bench` against a real server: the counts in its JSON report must
//! match what the server actually did. No timing is asserted.

use std::path::PathBuf;
use std::process::Command;

use etcd_client::GetOptions;
use harness::{connect, Kind, Server};
use serde_json::Value;

fn bench_bin() -> PathBuf {
    let bin = harness::cairn_bin().with_file_name("cairn-bench");
    assert!(bin.is_file(), "{} not found; build it with cargo build --bins", bin.display());
    bin
}

/// Runs cairn-bench with `args` against `endpoint` and parses its report.
fn bench(endpoint: &str, args: &[&str]) -> Value {
    let out = Command::new(bench_bin())
        .args(["--endpoints", endpoint, "--json", "--request-timeout", "10s"])
        .args(args)
        .output()
        .expect("spawn cairn-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cairn-bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

fn count(report: &Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("{field} missing from {report}"))
}

#[track_caller]
fn assert_all_ok(report: &Value, total: u64) {
    assert_eq!(count(report, "requests"), total, "{report}");
    assert_eq!(count(report, "errors"), 0, "{report}");
    assert_eq!(report["latency_ms"]["count"].as_u64(), Some(total), "{report}");
    assert!(report["throughput"].as_f64().is_some_and(|t| t > 0.0), "{report}");
}

#[tokio::test]
async fn put_range_txn_counts_match_the_server() {
    let srv = Server::start_target();
    let ep = srv.endpoint();
    let mut client = connect(&ep).await;

    // 60 sequential puts over a 60-key space from 3 clients: every key once.
    let put = bench(
        &ep,
        &[
            "--total",
            "60",
            "--clients",
            "3",
            "--conns",
            "2",
            "--key-space",
            "60",
            "--key-size",
            "6",
            "--sequential-keys",
            "put",
        ],
    );
    assert_eq!(put["workload"], "put");
    assert_all_ok(&put, 60);
    let all = client
        .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
        .await
        .unwrap();
    let rev_after_puts = all.header().unwrap().revision();
    assert_eq!(all.count(), 60, "distinct keys written");
    assert_eq!(rev_after_puts, 61, "one revision per put");

    for consistency in ["l", "s"] {
        let range = bench(
            &ep,
            &[
                "--total",
                "40",
                "--clients",
                "4",
                "--key-space",
                "60",
                "--key-size",
                "6",
                "range",
                "--no-prefill",
                "--consistency",
                consistency,
            ],
        );
        assert_eq!(range["workload"], format!("range-{consistency}"));
        assert_all_ok(&range, 40);
    }
    let after_reads = client
        .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
        .await
        .unwrap();
    assert_eq!(after_reads.header().unwrap().revision(), rev_after_puts, "reads must not write");

    // Compare-and-swap on fresh keys: every success is one new revision.
    let txn = bench(
        &ep,
        &[
            "--total",
            "30",
            "--clients",
            "3",
            "--key-space",
            "10",
            "--key-size",
            "4",
            "--sequential-keys",
            "txn",
        ],
    );
    assert_all_ok(&txn, 30);
    let succeeded = count(&txn, "txn_succeeded");
    assert_eq!(succeeded + count(&txn, "txn_failed"), 30, "{txn}");
    assert!(succeeded >= 10, "each of the 10 keys is created once at least: {txn}");
    let after_txn = client
        .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
        .await
        .unwrap();
    assert_eq!(after_txn.header().unwrap().revision(), rev_after_puts + succeeded as i64);

    let mixed = bench(
        &ep,
        &[
            "--total",
            "50",
            "--clients",
            "5",
            "--key-space",
            "60",
            "--key-size",
            "6",
            "mixed",
            "--read-ratio",
            "0.5",
        ],
    );
    assert_all_ok(&mixed, 50);
    assert_eq!(count(&mixed, "reads") + count(&mixed, "writes"), 50, "{mixed}");
}

/// Watch and lease workloads, against the real etcd until Cairn serves the
/// Watch and Lease services (then `Server::start_target()` belongs here).
#[tokio::test]
async fn watch_and_lease_counts_against_etcd() {
    let srv = Server::start(Kind::Etcd);
    let ep = srv.endpoint();

    let watch = bench(
        &ep,
        &[
            "--total",
            "40",
            "--clients",
            "2",
            "--key-space",
            "10",
            "--key-size",
            "5",
            "--val-size",
            "16",
            "watch",
            "--watchers",
            "6",
            "--streams",
            "4",
        ],
    );
    assert_eq!(count(&watch, "puts"), 40, "{watch}");
    assert_eq!(count(&watch, "events_expected"), 240, "{watch}");
    assert_all_ok(&watch, 240);

    let lease = bench(&ep, &["--total", "30", "--clients", "3", "lease-keepalive", "--ttl", "30"]);
    assert_all_ok(&lease, 30);
    assert_eq!(count(&lease, "leases_revoked"), 3, "{lease}");
    let mut client = connect(&ep).await;
    assert!(client.leases().await.unwrap().leases().is_empty(), "the tool revokes its leases");
}

/// `--gateway`: puts and ranges as JSON over HTTP/1.1, against cairn and
/// against etcd 3.4's gateway; the counts must be what each server did.
#[tokio::test]
async fn gateway_mode_counts_match_the_server() {
    for kind in [Kind::Etcd, Kind::Cairn] {
        let srv = Server::start(kind);
        let ep = srv.endpoint();
        let mut client = connect(&ep).await;
        let put = bench(
            &ep,
            &[
                "--gateway",
                "--total",
                "60",
                "--clients",
                "4",
                "--conns",
                "2",
                "--key-space",
                "60",
                "--key-size",
                "6",
                "--sequential-keys",
                "put",
            ],
        );
        assert_eq!(put["workload"], "gateway-put", "{kind:?}");
        assert_all_ok(&put, 60);
        let all = client
            .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
            .await
            .unwrap();
        assert_eq!(all.count(), 60, "{kind:?}: distinct keys written through the gateway");
        let rev = all.header().unwrap().revision();
        // Each read must find its key: a miss counts as an error.
        let range = bench(
            &ep,
            &[
                "--gateway",
                "--total",
                "40",
                "--clients",
                "4",
                "--conns",
                "4",
                "--key-space",
                "60",
                "--key-size",
                "6",
                "range",
                "--no-prefill",
            ],
        );
        assert_eq!(range["workload"], "gateway-range-l", "{kind:?}");
        assert_all_ok(&range, 40);
        let after = client
            .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
            .await
            .unwrap();
        assert_eq!(after.header().unwrap().revision(), rev, "{kind:?}: reads must not write");
    }
}
