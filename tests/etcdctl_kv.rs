//! Quick-start smoke test of the system under test with the real etcdctl,
//! asserting on etcdctl's plain-text ("simple") output format.

use harness::{etcdctl, etcdctl_stdin, txn_input, Output, Server, MEMBER_NAME};

#[track_caller]
fn out(o: &Output) -> &str {
    o.assert_ok();
    &o.stdout
}

fn is_hex_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.chars().all(|c| c.is_ascii_hexdigit()) && s != "0"
}

#[test]
fn quick_start() {
    let srv = Server::start_target();
    let ep = srv.endpoint();
    let ctl = |args: &[&str]| etcdctl(&ep, args);

    // put / get
    assert_eq!(out(&ctl(&["put", "greeting", "hello world"])), "OK\n");
    assert_eq!(out(&ctl(&["get", "greeting"])), "greeting\nhello world\n");
    assert_eq!(out(&ctl(&["get", "greeting", "--print-value-only"])), "hello world\n");
    assert_eq!(out(&ctl(&["get", "missing"])), "");
    assert_eq!(out(&ctl(&["put", "greeting", "hi", "--prev-kv"])), "OK\ngreeting\nhello world\n");
    for (k, v) in [("foo/1", "one"), ("foo/2", "two"), ("foo/3", "three")] {
        assert_eq!(out(&ctl(&["put", k, v])), "OK\n");
    }
    assert_eq!(out(&ctl(&["get", "foo", "--prefix"])), "foo/1\none\nfoo/2\ntwo\nfoo/3\nthree\n");
    assert_eq!(out(&ctl(&["get", "foo", "--prefix", "--keys-only"])), "foo/1\n\nfoo/2\n\nfoo/3\n\n");
    assert_eq!(out(&ctl(&["get", "foo", "--prefix", "--limit", "1"])), "foo/1\none\n");
    assert_eq!(
        out(&ctl(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND",
            "--print-value-only"
        ])),
        "two\nthree\none\n"
    );
    assert_eq!(out(&ctl(&["get", "greeting", "--rev", "2"])), "greeting\nhello world\n");
    let j = ctl(&["get", "greeting", "-w", "json"]).json();
    assert_eq!(j["header"]["revision"], 6);
    assert_eq!(j["kvs"][0]["version"], 2);
    assert_eq!(j["kvs"][0]["key"], "Z3JlZXRpbmc="); // base64("greeting")
    assert_eq!(j["count"], 1);

    // del
    assert_eq!(out(&ctl(&["del", "foo/1"])), "1\n");
    assert_eq!(out(&ctl(&["del", "nothing"])), "0\n");
    assert_eq!(out(&ctl(&["del", "foo", "--prefix", "--prev-kv"])), "2\nfoo/2\ntwo\nfoo/3\nthree\n");

    // txn (non-interactive, read from stdin)
    let o = etcdctl_stdin(
        &ep,
        &["txn"],
        txn_input(
            &[r#"value("greeting") = "hi""#],
            &["put greeting bonjour", "get greeting"],
            &["put greeting failed"],
        )
        .as_bytes(),
    );
    assert_eq!(out(&o), "SUCCESS\n\nOK\n\ngreeting\nbonjour\n");
    let o = etcdctl_stdin(
        &ep,
        &["txn"],
        txn_input(
            &[r#"ver("greeting") = "1""#],
            &["del greeting"],
            &["get greeting --print-value-only"],
        )
        .as_bytes(),
    );
    // (--print-value-only inside a txn request is accepted but has no effect)
    assert_eq!(out(&o), "FAILURE\n\ngreeting\nbonjour\n");
    let o = etcdctl_stdin(&ep, &["txn"], txn_input(&[], &["put a 1", "put a 2"], &[]).as_bytes());
    o.fails_with(1, "etcdserver: duplicate key given in txn request");

    // compaction
    let rev = ctl(&["get", "greeting", "-w", "json"]).json()["header"]["revision"]
        .as_i64()
        .unwrap();
    assert_eq!(rev, 9);
    assert_eq!(out(&ctl(&["compaction", "5"])), "compacted revision 5\n");
    ctl(&["get", "greeting", "--rev", "4"]).fails_with(1, "etcdserver: mvcc: required revision has been compacted");
    ctl(&["get", "greeting", "--rev", "100"]).fails_with(1, "etcdserver: mvcc: required revision is a future revision");
    assert_eq!(out(&ctl(&["compaction", "--physical", "8"])), "compacted revision 8\n");
    ctl(&["put", "", "v"]).fails_with(1, "etcdserver: key is not provided");
    ctl(&["put", "k", "v", "--lease=1234"]).fails_with(1, "etcdserver: requested lease not found");

    // endpoint status: endpoint, ID, version, db size, is leader, is learner,
    // raft term, raft index, raft applied index, errors
    let o = ctl(&["endpoint", "status"]);
    let line = out(&o).trim_end_matches('\n');
    let fields: Vec<&str> = line.split(", ").collect();
    assert_eq!(fields.len(), 10, "{line:?}");
    assert_eq!(fields[0], ep);
    assert!(is_hex_id(fields[1]), "member id {:?}", fields[1]);
    assert!(fields[2].split('.').count() == 3, "version {:?}", fields[2]);
    assert!(fields[3].ends_with("B"), "db size {:?}", fields[3]);
    assert_eq!((fields[4], fields[5]), ("true", "false"), "leader / learner");
    let term: u64 = fields[6].parse().unwrap();
    let index: u64 = fields[7].parse().unwrap();
    let applied: u64 = fields[8].parse().unwrap();
    assert!(term >= 1 && applied <= index && applied >= 1);
    assert_eq!(fields[9], "");
    let member_id = fields[1].to_string();

    // endpoint health prints to stderr
    let o = ctl(&["endpoint", "health"]);
    o.assert_ok();
    assert_eq!(o.stdout, "");
    let prefix = format!("{ep} is healthy: successfully committed proposal: took = ");
    assert!(o.stderr.starts_with(&prefix), "{o:?}");
    let j = ctl(&["endpoint", "health", "-w", "json"]).json();
    assert_eq!(j[0]["endpoint"], ep);
    assert_eq!(j[0]["health"], true);

    // member list: ID, status, name, peer addrs, client addrs, is learner
    let o = ctl(&["member", "list"]);
    assert_eq!(
        out(&o),
        format!("{member_id}, started, {MEMBER_NAME}, {}, {ep}, false\n", srv.peer_url())
    );
    let j = ctl(&["member", "list", "-w", "json"]).json();
    assert_eq!(format!("{:x}", j["members"][0]["ID"].as_u64().unwrap()), member_id);
    assert_eq!(j["members"][0]["name"], MEMBER_NAME);
    assert_eq!(j["members"][0]["peerURLs"][0], srv.peer_url());
    assert_eq!(j["members"][0]["clientURLs"][0], ep);
}
