//! Differential tests: identical etcdctl invocations and gRPC calls against a
//! real etcd 3.4 and against cairn, compared after normalisation (ids, terms,
//! URLs and sizes replaced by placeholders; revisions, versions, keys and
//! values compared exactly), including exit codes and error strings.
//!
//! These tests fail (never skip) when etcd is not installed.  Run them
//! etcd-vs-etcd with `CAIRN_TEST_TARGET=etcd` to validate the scenarios.

use harness::{convert, txn_input, Differential};
use serde_json::{json, Value};

fn header_revision(v: &Value) -> i64 {
    v["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {v}"))
}

/// Keys with several versions, so that every sort target gives a different order.
fn seed(d: &mut Differential) {
    for (k, v) in [
        ("foo", "m"),
        ("foo/a", "3"),
        ("foo/b", "1"),
        ("foo/c", "2"),
        ("fop", "x"),
        ("zeta", "last"),
        ("foo/b", "1b"),
        ("foo/b", "0"),
        ("foo/a", "9"),
        ("a", "first"),
    ] {
        d.ctl(&format!("seed put {k}={v}"), &["put", k, v, "-w", "json"]);
    }
}

#[test]
fn get_variants() {
    let mut d = Differential::start();
    seed(&mut d);

    d.ctl("get single json", &["get", "foo", "-w", "json"]);
    d.ctl("get single simple", &["get", "foo"]);
    d.ctl("get missing json", &["get", "nope", "-w", "json"]);
    d.ctl("get missing simple", &["get", "nope"]);
    d.ctl("get prefix", &["get", "foo", "--prefix", "-w", "json"]);
    d.ctl("get prefix simple", &["get", "foo", "--prefix"]);
    d.ctl("get prefix slash", &["get", "foo/", "--prefix", "-w", "json"]);
    d.ctl("get from-key", &["get", "foo/b", "--from-key", "-w", "json"]);
    d.ctl("get everything", &["get", "", "--prefix", "-w", "json"]);
    d.ctl("get everything from-key", &["get", "", "--from-key", "-w", "json"]);
    d.ctl("get range", &["get", "foo/a", "foo/c", "-w", "json"]);
    d.ctl("get range empty", &["get", "foo/c", "foo/a", "-w", "json"]);
    d.ctl("get limit", &["get", "foo", "--prefix", "--limit", "2", "-w", "json"]);
    d.ctl("get limit exact", &["get", "foo/", "--prefix", "--limit", "3", "-w", "json"]);
    d.ctl("get limit over", &["get", "foo/", "--prefix", "--limit", "30", "-w", "json"]);
    d.ctl("get rev 2", &["get", "foo", "--prefix", "--rev", "2", "-w", "json"]);
    d.ctl("get rev 5", &["get", "foo", "--prefix", "--rev", "5", "-w", "json"]);
    d.ctl("get rev 8 foo/b", &["get", "foo/b", "--rev", "8", "-w", "json"]);
    d.ctl("get rev before create", &["get", "zeta", "--rev", "3", "-w", "json"]);
    d.ctl("get keys-only", &["get", "foo", "--prefix", "--keys-only", "-w", "json"]);
    d.ctl("get keys-only simple", &["get", "foo", "--prefix", "--keys-only"]);
    d.ctl("get print-value-only", &["get", "foo", "--prefix", "--print-value-only"]);
    d.ctl(
        "get print-value-only json is rejected by etcdctl",
        &["get", "foo", "--print-value-only", "-w", "json"],
    );
    d.ctl("get serializable", &["get", "foo", "--prefix", "--consistency=s", "-w", "json"]);
    d.ctl("get linearizable", &["get", "foo", "--prefix", "--consistency=l", "-w", "json"]);

    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        for order in ["", "ASCEND", "DESCEND"] {
            let mut args = vec!["get", "", "--prefix", "--sort-by", target, "-w", "json"];
            if !order.is_empty() {
                args.extend(["--order", order]);
            }
            d.ctl(&format!("get sort {target} {order}"), &args);
            // Sorting happens before the limit is applied.
            args.extend(["--limit", "3"]);
            d.ctl(&format!("get sort {target} {order} limit 3"), &args);
        }
    }
    d.ctl(
        "get order only DESCEND",
        &["get", "", "--prefix", "--order", "DESCEND", "-w", "json"],
    );
    d.ctl(
        "get sort with rev",
        &[
            "get",
            "foo",
            "--prefix",
            "--rev",
            "6",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND",
            "-w",
            "json",
        ],
    );
}

#[test]
fn put_and_delete() {
    let mut d = Differential::start();
    seed(&mut d);

    d.ctl("put new prev-kv", &["put", "new", "n1", "--prev-kv", "-w", "json"]);
    d.ctl("put existing prev-kv", &["put", "new", "n2", "--prev-kv", "-w", "json"]);
    d.ctl("put existing prev-kv simple", &["put", "new", "n3", "--prev-kv"]);
    d.ctl("put simple", &["put", "plain", "p"]);
    d.ctl("put value with spaces", &["put", "sp", "hello world"]);
    d.ctl("put value from stdin", &["put", "fromstdin"]);
    d.ctl_stdin("put value from stdin bytes", &["put", "fromstdin"], b"line1\nline2\n");
    d.ctl("get stdin value", &["get", "fromstdin", "-w", "json"]);
    d.ctl("put empty value", &["put", "emptyval", ""]);
    d.ctl("get empty value", &["get", "emptyval", "-w", "json"]);

    // --ignore-value / --ignore-lease
    d.ctl("ignore-value existing", &["put", "new", "--ignore-value", "-w", "json"]);
    d.ctl("after ignore-value", &["get", "new", "-w", "json"]);
    d.ctl(
        "ignore-value existing prev-kv",
        &["put", "new", "--ignore-value", "--prev-kv", "-w", "json"],
    );
    d.ctl("ignore-value missing key", &["put", "missing", "--ignore-value"]);
    d.ctl(
        "ignore-value with value arg (etcdctl rejects)",
        &["put", "new", "v", "--ignore-value"],
    );
    d.ctl("ignore-lease existing", &["put", "new", "n4", "--ignore-lease", "-w", "json"]);
    d.ctl("ignore-lease missing key", &["put", "missing", "v", "--ignore-lease"]);
    d.ctl("ignore-lease with lease", &["put", "new", "v", "--ignore-lease", "--lease=1234"]);
    d.ctl(
        "ignore value and lease",
        &["put", "new", "--ignore-value", "--ignore-lease", "-w", "json"],
    );
    d.ctl("get after ignores", &["get", "new", "-w", "json"]);

    // Deletes.
    let (r, _) = d.ctl("rev before no-op delete", &["get", "foo", "-w", "json"]);
    let rev_before = header_revision(&r.json());
    d.ctl("del missing", &["del", "nope", "-w", "json"]);
    d.ctl("del missing simple", &["del", "nope"]);
    d.ctl("del missing prefix", &["del", "nope", "--prefix", "-w", "json"]);
    let (r, _) = d.ctl("rev after no-op delete", &["get", "foo", "-w", "json"]);
    assert_eq!(
        header_revision(&r.json()),
        rev_before,
        "reference etcd: deleting nothing must not bump the revision"
    );
    d.ctl("del single", &["del", "plain", "-w", "json"]);
    d.ctl("del single prev-kv", &["del", "sp", "--prev-kv", "-w", "json"]);
    d.ctl("del single simple prev-kv", &["del", "new", "--prev-kv"]);
    d.ctl("del prefix prev-kv", &["del", "foo/", "--prefix", "--prev-kv", "-w", "json"]);
    d.ctl("get after prefix del", &["get", "", "--prefix", "-w", "json"]);
    d.ctl("del range", &["del", "a", "fop", "-w", "json"]);
    d.ctl("put after deletes", &["put", "foo/a", "again", "-w", "json"]);
    d.ctl("recreated key has version 1", &["get", "foo/a", "-w", "json"]);
    d.ctl("history of deleted key", &["get", "foo/a", "--rev", "10", "-w", "json"]);
    d.ctl("del from-key", &["del", "fromstdin", "--from-key", "--prev-kv", "-w", "json"]);
    d.ctl("del all simple", &["del", "", "--prefix"]);
    d.ctl("get all after del all", &["get", "", "--prefix", "-w", "json"]);
    d.ctl("del all again (nothing)", &["del", "", "--from-key", "-w", "json"]);
}

#[test]
fn txn() {
    let mut d = Differential::start();
    seed(&mut d);

    let cases: Vec<(&str, String)> = vec![
        (
            "value equal success, multiple ops",
            txn_input(
                &[r#"value("foo") = "m""#, r#"ver("foo/b") > "2""#],
                &[
                    "put t1 one",
                    "get foo --prefix --limit 2",
                    "del foo/c --prev-kv",
                    "put t2 two --prev-kv",
                ],
                &["put never x"],
            ),
        ),
        (
            "mod compare failure",
            txn_input(
                &[r#"mod("foo/a") = "3""#],
                &["put never x"],
                &["get foo/a", "put t1 uno --prev-kv", "get t1"],
            ),
        ),
        (
            "create compare on missing key",
            txn_input(&[r#"create("newkey") = "0""#], &["put newkey created"], &["get newkey"]),
        ),
        (
            "create compare now fails",
            txn_input(&[r#"create("newkey") = "0""#], &["put newkey created"], &["get newkey"]),
        ),
        (
            "version less and not-equal",
            txn_input(&[r#"ver("foo/b") < "5""#, r#"ver("zeta") != "2""#], &["get foo/b", "get zeta"], &[]),
        ),
        (
            "value greater / less",
            txn_input(
                &[r#"val("zeta") > "kast""#, r#"val("fop") < "y""#],
                &["put cmp ok"],
                &["put cmp nok"],
            ),
        ),
        (
            "value compare on missing key always fails",
            txn_input(&[r#"value("missing") != "x""#], &["put vm ok"], &["put vm nok"]),
        ),
        (
            "version compare on missing key",
            txn_input(&[r#"ver("missing") = "0""#], &["put ver0 ok"], &["put ver0 nok"]),
        ),
        (
            "empty compares succeed",
            txn_input(&[], &["get t1", "put t3 three"], &["put never x"]),
        ),
        (
            "empty failure branch",
            txn_input(&[r#"value("foo") = "other""#], &["put never x"], &[]),
        ),
        ("read-only txn", txn_input(&[], &["get foo", "get zeta", "get missing"], &[])),
        (
            "get sees earlier put in same txn",
            txn_input(&[], &["get t4", "put t4 four", "get t4", "del t4", "get t4"], &[]),
        ),
        (
            "delete prefix in txn",
            txn_input(&[r#"ver("foo") = "1""#], &["del foo/ --prefix --prev-kv", "get foo --prefix"], &[]),
        ),
        (
            "ops with revision reads",
            txn_input(&[], &["get foo --rev 3", "get foo/a --rev 9 --keys-only"], &[]),
        ),
        ("duplicate key error", txn_input(&[], &["put dup a", "put dup b"], &[])),
        ("duplicate key put and delete", txn_input(&[], &["put dup a", "del dup"], &[])),
        (
            "duplicate key only in untaken branch is still an error",
            txn_input(&[r#"value("foo") = "nope""#], &["put x 1", "put x 2"], &["put y 1"]),
        ),
        (
            "duplicate puts in different branches are fine",
            txn_input(&[r#"value("foo") = "nope""#], &["put z 1"], &["put z 2"]),
        ),
        ("empty key in txn", txn_input(&[], &["put \"\" v"], &[])),
        ("unknown lease in txn", txn_input(&[], &["put lk v --lease=abcdef"], &[])),
        (
            "compacted revision read in txn (not compacted yet)",
            txn_input(&[], &["get foo --rev 1"], &[]),
        ),
        ("future revision read in txn", txn_input(&[], &["get foo --rev 100000"], &[])),
    ];
    for (name, input) in &cases {
        d.ctl_stdin(&format!("txn {name} json"), &["txn", "-w", "json"], input.as_bytes());
        d.ctl("state after txn", &["get", "", "--prefix", "-w", "json"]);
    }
    // Simple output format of a successful and a failed txn.
    d.ctl_stdin(
        "txn simple success",
        &["txn"],
        txn_input(&[r#"value("t1") = "uno""#], &["put t1 dos --prev-kv", "get t1", "del t2"], &[]).as_bytes(),
    );
    d.ctl_stdin(
        "txn simple failure",
        &["txn"],
        txn_input(&[r#"value("t1") = "uno""#], &[], &["get t1 --print-value-only", "del t1 --prev-kv"]).as_bytes(),
    );
    d.ctl_stdin("txn interactive", &["txn", "-i"], txn_input(&[], &["put ti i"], &[]).as_bytes());
    // Malformed input is rejected by etcdctl itself (exit code 3).
    d.ctl_stdin("txn truncated input", &["txn"], b"value(\"t1\") = \"uno\"\n");
    d.ctl_stdin("txn bad compare", &["txn"], b"bogus(\"t1\") = \"uno\"\n\n\n\n");

    // 128 ops is the default limit; 129 is rejected.
    let ops: Vec<String> = (0..129).map(|i| format!("put many/{i:03} v")).collect();
    let refs: Vec<&str> = ops.iter().map(|s| s.as_str()).collect();
    d.ctl_stdin("txn 128 ops", &["txn", "-w", "json"], txn_input(&[], &refs[..128], &[]).as_bytes());
    d.ctl_stdin("txn 129 ops", &["txn", "-w", "json"], txn_input(&[], &refs, &[]).as_bytes());
    d.ctl_stdin(
        "txn 129 ops in the untaken branch",
        &["txn", "-w", "json"],
        txn_input(&[r#"value("foo") = "nope""#], &refs, &["get foo"]).as_bytes(),
    );
    d.ctl("count after big txn", &["get", "many/", "--prefix", "--keys-only", "-w", "json"]);
}

#[test]
fn max_txn_ops_flag() {
    let mut d = Differential::start_with_args(&["--max-txn-ops=3"]);
    d.ctl_stdin(
        "3 ops allowed",
        &["txn", "-w", "json"],
        txn_input(&[], &["put a 1", "put b 2", "get a"], &[]).as_bytes(),
    );
    d.ctl_stdin(
        "4 ops rejected",
        &["txn", "-w", "json"],
        txn_input(&[], &["put a 1", "put b 2", "put c 3", "get a"], &[]).as_bytes(),
    );
    d.ctl_stdin(
        "4 ops across branches allowed",
        &["txn", "-w", "json"],
        txn_input(&[], &["put a 1", "put b 2"], &["put c 3", "put d 4"]).as_bytes(),
    );
    d.ctl_stdin(
        "4 compares rejected",
        &["txn", "-w", "json"],
        txn_input(
            &[r#"ver("a") > "0""#, r#"ver("b") > "0""#, r#"ver("c") = "0""#, r#"ver("d") = "0""#],
            &["get a"],
            &[],
        )
        .as_bytes(),
    );
    d.ctl("state", &["get", "", "--prefix", "-w", "json"]);
}

#[test]
fn compaction() {
    let mut d = Differential::start();
    seed(&mut d); // revisions 2..=11
    d.ctl("compact 5", &["compaction", "5"]);
    d.ctl("compact 5 json output is still text", &["compaction", "5", "-w", "json"]);
    d.ctl("get at compacted rev 4", &["get", "foo", "--prefix", "--rev", "4", "-w", "json"]);
    d.ctl("get at compacted rev 1", &["get", "foo", "--rev", "1"]);
    d.ctl("get at compaction rev 5", &["get", "foo", "--prefix", "--rev", "5", "-w", "json"]);
    d.ctl("get at rev 6", &["get", "foo", "--prefix", "--rev", "6", "-w", "json"]);
    d.ctl("get at current rev 11", &["get", "", "--prefix", "--rev", "11", "-w", "json"]);
    d.ctl("get at future rev 12", &["get", "foo", "--rev", "12", "-w", "json"]);
    d.ctl("get at far future rev", &["get", "foo", "--rev", "1000000"]);
    d.ctl("compact same rev again", &["compaction", "5"]);
    d.ctl("compact lower rev", &["compaction", "3"]);
    d.ctl("compact future rev", &["compaction", "12"]);
    d.ctl("compact current rev physical", &["compaction", "11", "--physical"]);
    d.ctl("get after physical", &["get", "", "--prefix", "-w", "json"]);
    d.ctl("get at 11 after compaction", &["get", "", "--prefix", "--rev", "11", "-w", "json"]);
    d.ctl("get at 10 after compaction", &["get", "", "--prefix", "--rev", "10", "-w", "json"]);
    d.ctl("put after compaction", &["put", "foo", "after", "-w", "json"]);
    d.ctl("versions survive compaction", &["get", "foo", "--prefix", "-w", "json"]);
    d.ctl("del then compact", &["del", "foo/b", "-w", "json"]);
    d.ctl("compact past delete", &["compaction", "13", "--physical"]);
    d.ctl("deleted key gone at old rev", &["get", "foo/b", "--rev", "13", "-w", "json"]);
    d.ctl("compaction bad arg (etcdctl)", &["compaction", "abc"]);
    d.ctl("compaction no arg (etcdctl)", &["compaction"]);
    d.ctl("compact 0", &["compaction", "0"]);
}

#[test]
fn error_cases() {
    let mut d = Differential::start();
    seed(&mut d);
    d.ctl("put empty key", &["put", "", "v"]);
    d.ctl("get empty key", &["get", ""]);
    d.ctl("del empty key", &["del", ""]);
    d.ctl("put unknown lease", &["put", "k", "v", "--lease=1234"]);
    d.ctl("put bad lease hex (etcdctl)", &["put", "k", "v", "--lease=xyz"]);
    d.ctl("get prefix and from-key (etcdctl)", &["get", "a", "--prefix", "--from-key"]);
    d.ctl("get bad consistency (etcdctl)", &["get", "a", "--consistency=x"]);
    d.ctl("get bad sort (etcdctl)", &["get", "a", "--sort-by=SIZE"]);
    d.ctl("get no args (etcdctl)", &["get"]);
    d.ctl("get negative limit", &["get", "", "--prefix", "--limit", "-1", "-w", "json"]);

    // Request size limit (default --max-request-bytes = 1.5 MiB).  etcdctl
    // reads the value from stdin when only the key is given.
    let big = vec![b'x'; 1_600_000];
    d.ctl_stdin("put 1.6 MB value", &["put", "big"], &big);
    let ok = vec![b'y'; 1_400_000];
    d.ctl_stdin("put 1.4 MB value", &["put", "big", "-w", "json"], &ok);
    d.ctl("get big keys-only", &["get", "big", "--keys-only", "-w", "json"]);
    d.ctl("state", &["get", "", "--prefix", "--keys-only", "-w", "json"]);
}

#[test]
fn max_request_bytes_flag() {
    let mut d = Differential::start_with_args(&["--max-request-bytes=4096"]);
    d.ctl_stdin("put 3000 bytes", &["put", "k", "-w", "json"], &[b'a'; 3000]);
    d.ctl_stdin("put 5000 bytes", &["put", "k"], &[b'b'; 5000]);
    let ops: Vec<String> = (0..8).map(|i| format!("put k{i} {}", "v".repeat(600))).collect();
    let refs: Vec<&str> = ops.iter().map(|s| s.as_str()).collect();
    d.ctl_stdin("txn over limit", &["txn", "-w", "json"], txn_input(&[], &refs, &[]).as_bytes());
    d.ctl("state", &["get", "", "--prefix", "--keys-only", "-w", "json"]);
}

#[test]
#[ignore = "needs the Lease service (issue 4)"]
fn leases() {
    let mut d = Differential::start();
    let (r, t) = d.ctl("grant", &["lease", "grant", "600", "-w", "json"]);
    let (rid, tid) = (r.json()["ID"].as_i64().unwrap(), t.json()["ID"].as_i64().unwrap());
    let (rhex, thex) = (format!("{rid:x}"), format!("{tid:x}"));
    d.ctl_each(
        "put with lease",
        &["put", "lk", "v", "--lease", &rhex, "-w", "json"],
        &["put", "lk", "v", "--lease", &thex, "-w", "json"],
        None,
    );
    d.ctl_each(
        "second key with lease",
        &["put", "lk2", "v2", "--lease", &rhex],
        &["put", "lk2", "v2", "--lease", &thex],
        None,
    );
    d.ctl("get shows lease", &["get", "lk", "--prefix", "-w", "json"]);
    d.ctl(
        "ignore-lease keeps lease",
        &["put", "lk", "v3", "--ignore-lease", "--prev-kv", "-w", "json"],
    );
    d.ctl("get after ignore-lease", &["get", "lk", "-w", "json"]);
    d.ctl("put without lease detaches", &["put", "lk2", "v4", "-w", "json"]);
    d.ctl("get after detach", &["get", "lk", "--prefix", "-w", "json"]);
    d.ctl("lease list", &["lease", "list", "-w", "json"]);
    d.ctl_each("revoke", &["lease", "revoke", &rhex], &["lease", "revoke", &thex], None);
    d.ctl("keys of revoked lease are gone", &["get", "lk", "--prefix", "-w", "json"]);
    d.ctl_each("revoke again", &["lease", "revoke", &rhex], &["lease", "revoke", &thex], None);
    d.ctl_each(
        "put with revoked lease",
        &["put", "lk", "v", "--lease", &rhex],
        &["put", "lk", "v", "--lease", &thex],
        None,
    );
}

/// Checks the invariants of one `endpoint status -w json` document
/// (before normalisation): a single entry for the endpoint, leader is the
/// member itself, consistent terms and indexes.
fn check_status(doc: &Value, endpoint: &str) -> (i64, u64) {
    let arr = doc.as_array().expect("status is an array");
    assert_eq!(arr.len(), 1, "{doc}");
    assert_eq!(arr[0]["Endpoint"], json!(endpoint), "{doc}");
    let st = &arr[0]["Status"];
    let h = &st["header"];
    assert_eq!(st["leader"], h["member_id"], "single member is the leader: {doc}");
    assert_eq!(st["raftTerm"], h["raft_term"], "{doc}");
    let idx = st["raftIndex"].as_u64().expect("raftIndex");
    let applied = st["raftAppliedIndex"].as_u64().expect("raftAppliedIndex");
    let rev = h["revision"].as_i64().expect("revision");
    assert!(applied <= idx, "applied index beyond raft index: {doc}");
    assert!(
        applied as i64 + 1 >= rev,
        "every revision needs at least one applied raft entry: {doc}"
    );
    assert!(st["dbSize"].as_i64().expect("dbSize") > 0, "{doc}");
    if let Some(inuse) = st["dbSizeInUse"].as_i64() {
        assert!(inuse <= st["dbSize"].as_i64().unwrap(), "{doc}");
    }
    let version = st["version"].as_str().expect("version string");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "version {version:?} is not x.y.z"
    );
    (rev, idx)
}

#[test]
fn cluster_and_endpoint() {
    let mut d = Differential::start();
    let (ref_ep, tgt_ep) = (d.reference.endpoint(), d.target.endpoint());

    let (r, t) = d.ctl("endpoint status", &["endpoint", "status", "-w", "json"]);
    let (r_rev0, r_idx0) = check_status(&r.json(), &ref_ep);
    let (t_rev0, t_idx0) = check_status(&t.json(), &tgt_ep);
    d.ctl("put", &["put", "k", "v"]);
    let (r, t) = d.ctl("endpoint status after put", &["endpoint", "status", "-w", "json"]);
    let (r_rev1, r_idx1) = check_status(&r.json(), &ref_ep);
    let (t_rev1, t_idx1) = check_status(&t.json(), &tgt_ep);
    assert_eq!((r_rev1, t_rev1), (r_rev0 + 1, t_rev0 + 1));
    assert!(r_idx1 > r_idx0, "etcd raft index must grow with a write");
    assert!(t_idx1 > t_idx0, "target raft index must grow with a write");

    d.ctl("endpoint health json", &["endpoint", "health", "-w", "json"]);
    let (r, t) = d.ctl("member list json", &["member", "list", "-w", "json"]);
    // Member ids also appear in hex in the text formats.
    for (out, n) in [(&r, &mut d.nref), (&t, &mut d.ntgt)] {
        let id = out.json()["members"][0]["ID"].as_u64().expect("member ID");
        n.add_replacement(&format!("{id:x}"), "<member-hex>");
    }
    d.ctl("member list simple", &["member", "list"]);
    d.ctl("member list table", &["member", "list", "-w", "table"]);
    d.ctl("endpoint status after reads", &["endpoint", "status", "-w", "json"]);
}

/// The same gRPC calls through the etcd-client crate, compared field by field.
#[test]
fn grpc_scenario() {
    let mut d = Differential::start();
    let ref_ep = d.reference.endpoint();
    let tgt_ep = d.target.endpoint();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (r, t) = rt.block_on(async { tokio::join!(grpc_steps(&ref_ep), grpc_steps(&tgt_ep)) });
    assert_eq!(r.len(), t.len());
    for ((name, rv), (_, tv)) in r.iter().zip(t.iter()) {
        d.compare_json(name, rv, tv);
    }
}

async fn grpc_steps(ep: &str) -> Vec<(String, Value)> {
    use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
    let mut c = harness::connect(ep).await;
    let mut out: Vec<(String, Value)> = Vec::new();
    macro_rules! rec {
        ($name:expr, $res:expr, $conv:path) => {{
            let r = $res;
            out.push(($name.to_string(), convert::result(&r, $conv)));
        }};
    }

    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("b", "22"), ("d/x", "4"), ("d/y", "5")] {
        rec!(format!("put {k}"), c.put(k, v, None).await, convert::put);
    }
    rec!(
        "put prev",
        c.put("a", "11", Some(PutOptions::new().with_prev_key())).await,
        convert::put
    );
    rec!(
        "put prev new",
        c.put("e", "5", Some(PutOptions::new().with_prev_key())).await,
        convert::put
    );
    rec!("get a", c.get("a", None).await, convert::get);
    rec!("get all", c.get("", Some(GetOptions::new().with_all_keys())).await, convert::get);
    rec!(
        "get prefix d/",
        c.get("d/", Some(GetOptions::new().with_prefix())).await,
        convert::get
    );
    rec!("get range", c.get("a", Some(GetOptions::new().with_range("c"))).await, convert::get);
    rec!(
        "get from c",
        c.get("c", Some(GetOptions::new().with_from_key())).await,
        convert::get
    );
    rec!(
        "get limit",
        c.get("", Some(GetOptions::new().with_all_keys().with_limit(2))).await,
        convert::get
    );
    rec!(
        "get count only",
        c.get("", Some(GetOptions::new().with_all_keys().with_count_only())).await,
        convert::get
    );
    rec!(
        "get count only limit",
        c.get("", Some(GetOptions::new().with_all_keys().with_count_only().with_limit(1)))
            .await,
        convert::get
    );
    rec!(
        "get keys only",
        c.get("", Some(GetOptions::new().with_all_keys().with_keys_only())).await,
        convert::get
    );
    rec!(
        "get rev 3",
        c.get("", Some(GetOptions::new().with_all_keys().with_revision(3))).await,
        convert::get
    );
    rec!(
        "get serializable",
        c.get("b", Some(GetOptions::new().with_serializable())).await,
        convert::get
    );
    for (min_mod, max_mod, min_c, max_c) in [(4, 0, 0, 0), (0, 4, 0, 0), (0, 0, 3, 0), (0, 0, 0, 3), (3, 7, 2, 6)] {
        let opts = GetOptions::new()
            .with_all_keys()
            .with_min_mod_revision(min_mod)
            .with_max_mod_revision(max_mod)
            .with_min_create_revision(min_c)
            .with_max_create_revision(max_c);
        rec!(
            format!("get filters {min_mod} {max_mod} {min_c} {max_c}"),
            c.get("", Some(opts.clone())).await,
            convert::get
        );
        rec!(
            format!("get filters {min_mod} {max_mod} {min_c} {max_c} limit 1"),
            c.get("", Some(opts.with_limit(1))).await,
            convert::get
        );
    }
    for target in [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ] {
        for order in [SortOrder::Ascend, SortOrder::Descend] {
            rec!(
                format!("get sort {target:?} {order:?} limit 3"),
                c.get("", Some(GetOptions::new().with_all_keys().with_sort(target, order).with_limit(3)))
                    .await,
                convert::get
            );
        }
    }
    // Errors.
    rec!("get empty key", c.get("", None).await, convert::get);
    rec!("put empty key", c.put("", "v", None).await, convert::put);
    rec!("delete empty key", c.delete("", None).await, convert::delete);
    rec!(
        "get future rev",
        c.get("a", Some(GetOptions::new().with_revision(1000))).await,
        convert::get
    );
    rec!(
        "put unknown lease",
        c.put("l", "v", Some(PutOptions::new().with_lease(77))).await,
        convert::put
    );
    rec!(
        "put ignore value missing",
        c.put("zz", "", Some(PutOptions::new().with_ignore_value())).await,
        convert::put
    );
    rec!(
        "put ignore value with value",
        c.put("a", "x", Some(PutOptions::new().with_ignore_value())).await,
        convert::put
    );
    rec!("put too large", c.put("big", vec![b'z'; 1_600_000], None).await, convert::put);

    // Deletes.
    rec!("delete missing", c.delete("nope", None).await, convert::delete);
    rec!(
        "delete prev",
        c.delete("e", Some(DeleteOptions::new().with_prev_key())).await,
        convert::delete
    );
    rec!(
        "delete prefix",
        c.delete("d/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await,
        convert::delete
    );

    // Transactions, including nested ones (supported since etcd 3.3).
    let txn = Txn::new()
        .when(vec![
            Compare::value("a", CompareOp::Equal, "11"),
            Compare::version("b", CompareOp::Greater, 1),
            Compare::create_revision("c", CompareOp::Less, 100),
            Compare::mod_revision("c", CompareOp::NotEqual, 0),
            Compare::lease("a", CompareOp::Equal, 0),
        ])
        .and_then(vec![
            TxnOp::put("t", "1", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("", Some(GetOptions::new().with_all_keys().with_limit(2))),
            TxnOp::delete("c", Some(DeleteOptions::new().with_prev_key())),
        ])
        .or_else(vec![TxnOp::put("t", "0", None)]);
    rec!("txn success", c.txn(txn).await, convert::txn);
    let txn = Txn::new()
        .when(vec![Compare::version("", CompareOp::Greater, 0).with_prefix()])
        .and_then(vec![TxnOp::get("x", None)])
        .or_else(vec![TxnOp::put("t", "2", None)]);
    rec!("txn compare with empty key", c.txn(txn).await, convert::txn);
    let txn = Txn::new()
        .when(vec![Compare::version("a", CompareOp::Greater, 0).with_range("c")])
        .and_then(vec![TxnOp::get("a", Some(GetOptions::new().with_range("c")))])
        .or_else(vec![]);
    rec!("txn compare with range_end", c.txn(txn).await, convert::txn);
    let txn = Txn::new()
        .when(vec![Compare::value("a", CompareOp::Equal, "11").with_range("z")])
        .and_then(vec![TxnOp::put("r", "all-eleven", None)])
        .or_else(vec![TxnOp::put("r", "not-all-eleven", None)]);
    rec!("txn value compare over range", c.txn(txn).await, convert::txn);
    let inner_ok = Txn::new()
        .when(vec![Compare::value("t", CompareOp::Equal, "1")])
        .and_then(vec![TxnOp::put("n1", "inner-success", None), TxnOp::get("t", None)])
        .or_else(vec![TxnOp::put("n1", "inner-failure", None)]);
    let inner_fail = Txn::new()
        .when(vec![Compare::value("t", CompareOp::Equal, "nope")])
        .and_then(vec![TxnOp::put("n2", "inner-success", None)])
        .or_else(vec![TxnOp::put("n2", "inner-failure", None), TxnOp::delete("b", None)]);
    let txn = Txn::new()
        .when(vec![])
        .and_then(vec![TxnOp::txn(inner_ok), TxnOp::put("n0", "outer", None), TxnOp::txn(inner_fail)]);
    rec!("nested txn", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![
        TxnOp::put("dup", "1", None),
        TxnOp::txn(Txn::new().and_then(vec![TxnOp::put("dup", "2", None)])),
    ]);
    rec!("nested txn duplicate key", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![TxnOp::put("dup", "1", None), TxnOp::put("dup", "2", None)]);
    rec!("txn duplicate key", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![TxnOp::get("dup", None), TxnOp::get("dup", None)]);
    rec!("txn duplicate reads are fine", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![
        TxnOp::delete("", Some(DeleteOptions::new().with_all_keys())),
        TxnOp::put("q", "1", None),
    ]);
    rec!("txn delete range overlapping put", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![TxnOp::get("a", Some(GetOptions::new().with_revision(1000)))]);
    rec!("txn future rev read", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![TxnOp::put("", "v", None)]);
    rec!("txn empty key", c.txn(txn).await, convert::txn);
    let txn = Txn::new().and_then(vec![TxnOp::put("k", "v", Some(PutOptions::new().with_lease(99)))]);
    rec!("txn unknown lease", c.txn(txn).await, convert::txn);
    rec!(
        "get all after txns",
        c.get("", Some(GetOptions::new().with_all_keys())).await,
        convert::get
    );

    // Compaction.
    rec!("compact 4", c.compact(4, None).await, convert::compaction);
    rec!(
        "get compacted",
        c.get("a", Some(GetOptions::new().with_revision(3))).await,
        convert::get
    );
    rec!(
        "get at compact rev",
        c.get("", Some(GetOptions::new().with_all_keys().with_revision(4))).await,
        convert::get
    );
    rec!("compact again", c.compact(4, None).await, convert::compaction);
    rec!("compact future", c.compact(100_000, None).await, convert::compaction);
    let txn = Txn::new().and_then(vec![TxnOp::get("a", Some(GetOptions::new().with_revision(2)))]);
    rec!("txn compacted read", c.txn(txn).await, convert::txn);
    let status = c.status().await.map(|s| s.raft_index());
    assert!(status.is_ok(), "status failed on {ep}: {status:?}");
    out
}
