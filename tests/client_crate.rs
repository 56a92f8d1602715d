//! Functional tests of the system under test (cairn; etcd with
//! `CAIRN_TEST_TARGET=etcd`) through the etcd-client crate.

use std::os::unix::process::ExitStatusExt;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use harness::{connect, grpc_status, Server};
use tonic::Code;

/// key, value, create revision, mod revision, version.
type KvTuple = (Vec<u8>, Vec<u8>, i64, i64, i64);

fn keys(r: &GetResponse) -> Vec<String> {
    r.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

fn values(r: &GetResponse) -> Vec<String> {
    r.kvs().iter().map(|kv| kv.value_str().unwrap().to_string()).collect()
}

fn rev(r: &GetResponse) -> i64 {
    r.header().expect("header").revision()
}

#[track_caller]
fn assert_status<T: std::fmt::Debug>(res: Result<T, etcd_client::Error>, code: Code, msg: &str) {
    let err = res.expect_err("expected an error");
    let st = grpc_status(&err);
    assert_eq!((st.code(), st.message()), (code, msg), "full status: {st:?}");
}

async fn all(c: &mut Client) -> GetResponse {
    c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap()
}

/// k0..k9 = v0..v9 at revisions 2..=11, then k3 and k5 rewritten (12, 13).
async fn seed(c: &mut Client) {
    for i in 0..10 {
        let r = c.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
        assert_eq!(r.header().unwrap().revision(), i + 2);
    }
    c.put("k3", "z3", None).await.unwrap();
    c.put("k5", "a5", None).await.unwrap();
}

#[tokio::test]
async fn range_semantics() {
    let srv = Server::start_target();
    let mut c = connect(&srv.endpoint()).await;
    seed(&mut c).await;

    let r = all(&mut c).await;
    assert_eq!(rev(&r), 13);
    assert_eq!(r.count(), 10);
    assert!(!r.more());
    assert_eq!(keys(&r), (0..10).map(|i| format!("k{i}")).collect::<Vec<_>>());
    let k3 = &r.kvs()[3];
    assert_eq!((k3.create_revision(), k3.mod_revision(), k3.version(), k3.lease()), (5, 12, 2, 0));

    // limit / more / count
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_limit(3))).await.unwrap();
    assert_eq!(
        (keys(&r), r.more(), r.count()),
        (vec!["k0".into(), "k1".into(), "k2".into()], true, 10)
    );
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_limit(10))).await.unwrap();
    assert_eq!((r.kvs().len(), r.more(), r.count()), (10, false, 10));
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_limit(11))).await.unwrap();
    assert_eq!((r.kvs().len(), r.more(), r.count()), (10, false, 10));
    let r = c.get("k2", Some(GetOptions::new().with_range("k5"))).await.unwrap();
    assert_eq!(keys(&r), vec!["k2", "k3", "k4"]);
    let r = c.get("k7", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(&r), vec!["k7", "k8", "k9"]);
    let r = c.get("nothing", None).await.unwrap();
    assert_eq!((r.kvs().len(), r.count(), r.more(), rev(&r)), (0, 0, false, 13));

    // count_only / keys_only
    let r = c.get("", Some(GetOptions::new().with_all_keys().with_count_only())).await.unwrap();
    assert_eq!((r.kvs().len(), r.count()), (0, 10));
    let r = c.get("", Some(GetOptions::new().with_all_keys().with_keys_only())).await.unwrap();
    assert_eq!(r.kvs().len(), 10);
    assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(r.kvs()[3].version(), 2, "keys_only keeps metadata");

    // history reads
    let r = c.get("k3", Some(GetOptions::new().with_revision(11))).await.unwrap();
    assert_eq!((values(&r), r.kvs()[0].version(), rev(&r)), (vec!["v3".to_string()], 1, 13));
    let r = c.get("k3", Some(GetOptions::new().with_revision(12))).await.unwrap();
    assert_eq!(values(&r), vec!["z3"]);
    let r = c.get("", Some(GetOptions::new().with_all_keys().with_revision(4))).await.unwrap();
    assert_eq!(keys(&r), vec!["k0", "k1", "k2"]);
    assert_eq!(r.count(), 3);
    let r = c.get("k9", Some(GetOptions::new().with_revision(10))).await.unwrap();
    assert!(r.kvs().is_empty(), "k9 did not exist at revision 10");

    // sorting
    let sorted = |t, o| GetOptions::new().with_all_keys().with_sort(t, o);
    let r = c.get("", Some(sorted(SortTarget::Key, SortOrder::Descend))).await.unwrap();
    assert_eq!(keys(&r).first().map(String::as_str), Some("k9"));
    let r = c
        .get("", Some(sorted(SortTarget::Value, SortOrder::Ascend).with_limit(2)))
        .await
        .unwrap();
    assert_eq!((values(&r), r.more(), r.count()), (vec!["a5".to_string(), "v0".into()], true, 10));
    let r = c
        .get("", Some(sorted(SortTarget::Value, SortOrder::Descend).with_limit(1)))
        .await
        .unwrap();
    assert_eq!(values(&r), vec!["z3"]);
    let r = c
        .get("", Some(sorted(SortTarget::Mod, SortOrder::Descend).with_limit(3)))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec!["k5", "k3", "k9"]);
    let r = c
        .get("", Some(sorted(SortTarget::Create, SortOrder::Descend).with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec!["k9", "k8"]);
    let r = c
        .get("", Some(sorted(SortTarget::Version, SortOrder::Descend).with_limit(2)))
        .await
        .unwrap();
    let mut top: Vec<String> = keys(&r);
    top.sort();
    assert_eq!(top, vec!["k3", "k5"]);

    // min/max mod/create revision filters (count ignores them)
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_min_mod_revision(11)))
        .await
        .unwrap();
    assert_eq!((keys(&r), r.count()), (vec!["k3".into(), "k5".into(), "k9".into()], 10));
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_max_mod_revision(3)))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec!["k0", "k1"]);
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_min_create_revision(10)))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec!["k8", "k9"]);
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_max_create_revision(3)))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec!["k0", "k1"]);
    let r = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_min_create_revision(4)
                    .with_max_mod_revision(8)
                    .with_limit(2),
            ),
        )
        .await
        .unwrap();
    assert_eq!((keys(&r), r.more()), (vec!["k2".into(), "k4".into()], true));

    // serializable reads see the same data on a single member
    let r = c.get("k5", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(values(&r), vec!["a5"]);
}

#[tokio::test]
async fn put_and_delete_prev_kv() {
    let srv = Server::start_target();
    let mut c = connect(&srv.endpoint()).await;

    let r = c.put("a", "1", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert!(r.prev_key().is_none());
    assert_eq!(r.header().unwrap().revision(), 2);
    let r = c.put("a", "2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    let p = r.prev_key().expect("prev kv");
    assert_eq!((p.key(), p.value(), p.version(), p.mod_revision()), (&b"a"[..], &b"1"[..], 1, 2));
    let r = c.put("a", "3", None).await.unwrap();
    assert!(r.prev_key().is_none(), "prev_kv only when asked");
    assert_eq!(r.header().unwrap().revision(), 4);

    let r = c
        .put("a", "", Some(PutOptions::new().with_ignore_value().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"3");
    let g = c.get("a", None).await.unwrap();
    assert_eq!((values(&g), g.kvs()[0].version()), (vec!["3".to_string()], 4));

    for k in ["b1", "b2", "b3", "c"] {
        c.put(k, format!("val-{k}"), None).await.unwrap();
    }
    let before = rev(&all(&mut c).await);
    let r = c.delete("nope", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!((r.deleted(), r.prev_kvs().len(), r.header().unwrap().revision()), (0, 0, before));
    assert_eq!(rev(&all(&mut c).await), before, "no-op delete must not bump the revision");

    let r = c
        .delete("b", Some(DeleteOptions::new().with_prefix().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 3);
    assert_eq!(r.header().unwrap().revision(), before + 1, "one revision per delete request");
    let pk: Vec<_> = r
        .prev_kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        pk,
        vec![
            ("b1".to_string(), "val-b1".to_string()),
            ("b2".into(), "val-b2".into()),
            ("b3".into(), "val-b3".into())
        ]
    );
    let r = c.delete("c", None).await.unwrap();
    assert_eq!((r.deleted(), r.prev_kvs().len()), (1, 0));

    // A deleted key's history is still readable and re-creation restarts its version.
    let old = c.get("b2", Some(GetOptions::new().with_revision(before))).await.unwrap();
    assert_eq!(values(&old), vec!["val-b2"]);
    c.put("b2", "again", None).await.unwrap();
    let g = c.get("b2", None).await.unwrap();
    let kv = &g.kvs()[0];
    assert_eq!((kv.version(), kv.create_revision(), kv.mod_revision()), (1, rev(&g), rev(&g)));

    // ignore_value / ignore_lease on a missing key
    assert_status(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value())).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put("missing", "v", Some(PutOptions::new().with_ignore_lease())).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put("a", "v", Some(PutOptions::new().with_ignore_value())).await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        c.put("a", "v", Some(PutOptions::new().with_ignore_lease().with_lease(5))).await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
}

#[tokio::test]
#[ignore = "needs the Lease service (issue 4)"]
async fn txn_compares() {
    let srv = Server::start_target();
    let mut c = connect(&srv.endpoint()).await;
    let lease = c.lease_grant(600, None).await.unwrap().id();
    assert_ne!(lease, 0);
    c.put("la", "x", Some(PutOptions::new().with_lease(lease))).await.unwrap(); // rev 2
    c.put("r1", "same", None).await.unwrap(); // rev 3
    c.put("r2", "same", None).await.unwrap(); // rev 4
    c.put("r2", "same", None).await.unwrap(); // rev 5
    c.put("r3", "other", None).await.unwrap(); // rev 6

    let g = c.get("la", None).await.unwrap();
    assert_eq!(g.kvs()[0].lease(), lease);

    let ok = |cmp: Compare| Txn::new().when(vec![cmp]).and_then(vec![TxnOp::get("la", None)]).or_else(vec![]);
    let cases: Vec<(&str, Compare, bool)> = vec![
        ("lease equal", Compare::lease("la", CompareOp::Equal, lease), true),
        ("lease zero", Compare::lease("la", CompareOp::Equal, 0), false),
        ("lease of key without lease", Compare::lease("r1", CompareOp::Equal, 0), true),
        ("lease of missing key", Compare::lease("nope", CompareOp::Equal, 0), true),
        ("value missing key", Compare::value("nope", CompareOp::NotEqual, "x"), false),
        ("version missing key", Compare::version("nope", CompareOp::Equal, 0), true),
        ("create missing key", Compare::create_revision("nope", CompareOp::Equal, 0), true),
        ("mod equal", Compare::mod_revision("r2", CompareOp::Equal, 5), true),
        ("mod less", Compare::mod_revision("r2", CompareOp::Less, 5), false),
        ("create greater", Compare::create_revision("r2", CompareOp::Greater, 3), true),
        (
            "value range all same",
            Compare::value("r1", CompareOp::Equal, "same").with_range("r3"),
            true,
        ),
        (
            "value range one differs",
            Compare::value("r1", CompareOp::Equal, "same").with_range("r4"),
            false,
        ),
        (
            "version range all > 0",
            Compare::version("r", CompareOp::Greater, 0).with_prefix(),
            true,
        ),
        (
            "version range not all > 1",
            Compare::version("r", CompareOp::Greater, 1).with_prefix(),
            false,
        ),
        (
            "mod range all < 7",
            Compare::mod_revision("r1", CompareOp::Less, 7).with_range("r9"),
            true,
        ),
        (
            "empty range compares like a missing key",
            Compare::version("x1", CompareOp::Equal, 0).with_range("x9"),
            true,
        ),
        ("value greater", Compare::value("r3", CompareOp::Greater, "oth"), true),
    ];
    for (name, cmp, expect) in cases {
        let r = c.txn(ok(cmp)).await.unwrap();
        assert_eq!(r.succeeded(), expect, "compare {name:?}");
        assert_eq!(r.op_responses().len(), usize::from(expect), "{name}: branch ops");
        assert_eq!(r.header().unwrap().revision(), 6, "{name}: read-only txn keeps the revision");
    }

    // Writes in a txn share one revision; reads inside see earlier writes.
    let txn = Txn::new().when(vec![]).and_then(vec![
        TxnOp::put("t1", "a", None),
        TxnOp::put("t2", "b", Some(PutOptions::new().with_prev_key())),
        TxnOp::get("t", Some(GetOptions::new().with_prefix())),
        TxnOp::delete("r3", Some(DeleteOptions::new().with_prev_key())),
    ]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 7);
    let ops = r.op_responses();
    match &ops[2] {
        TxnOpResponse::Get(g) => {
            assert_eq!(keys(g), vec!["t1", "t2"]);
            assert!(g.kvs().iter().all(|kv| kv.mod_revision() == 7 && kv.create_revision() == 7));
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    match &ops[3] {
        TxnOpResponse::Delete(d) => assert_eq!((d.deleted(), d.prev_kvs()[0].value()), (1, &b"other"[..])),
        other => panic!("expected a delete response, got {other:?}"),
    }
    // Nested txn.
    let inner = Txn::new()
        .when(vec![Compare::value("t1", CompareOp::Equal, "a")])
        .and_then(vec![TxnOp::put("n", "inner", None)])
        .or_else(vec![]);
    let r = c
        .txn(Txn::new().and_then(vec![TxnOp::txn(inner), TxnOp::put("o", "outer", None)]))
        .await
        .unwrap();
    assert_eq!(r.header().unwrap().revision(), 8);
    match &r.op_responses()[0] {
        TxnOpResponse::Txn(t) => assert!(t.succeeded()),
        other => panic!("expected a txn response, got {other:?}"),
    }
    let g = c.get("n", None).await.unwrap();
    assert_eq!((values(&g), g.kvs()[0].mod_revision()), (vec!["inner".to_string()], 8));

    // Errors.
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    let many: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("m{i}"), "v", None)).collect();
    assert_status(
        c.txn(Txn::new().and_then(many)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::put("k", "v", Some(PutOptions::new().with_lease(12345)))]))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_eq!(rev(&all(&mut c).await), 8, "failed txns change nothing");
}

#[tokio::test]
async fn error_codes() {
    let srv = Server::start_target();
    let mut c = connect(&srv.endpoint()).await;
    for i in 0..5 {
        c.put("k", format!("{i}"), None).await.unwrap(); // revisions 2..=6
    }
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(7))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    let r = c.compact(4, None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(3))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = c.get("k", Some(GetOptions::new().with_revision(4))).await.unwrap();
    assert_eq!(values(&r), vec!["2"], "the compaction revision itself stays readable");
    assert_status(
        c.compact(4, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(3, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(7, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    c.compact(6, Some(etcd_client::CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(5))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = c.get("k", None).await.unwrap();
    assert_eq!((values(&r), r.kvs()[0].version(), rev(&r)), (vec!["4".to_string()], 5, 6));

    assert_status(c.get("", None).await, Code::InvalidArgument, "etcdserver: key is not provided");
    assert_status(c.put("", "v", None).await, Code::InvalidArgument, "etcdserver: key is not provided");
    assert_status(c.delete("", None).await, Code::InvalidArgument, "etcdserver: key is not provided");
    assert_status(
        c.put("big", vec![b'x'; 1_600_000], None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    c.put("almost-big", vec![b'x'; 1_400_000], None).await.unwrap();
    assert_status(
        c.put("l", "v", Some(PutOptions::new().with_lease(0x1234))).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
}

#[tokio::test]
async fn restart_persistence() {
    let mut srv = Server::start_target();
    let snapshot = {
        let mut c = connect(&srv.endpoint()).await;
        for i in 0..20 {
            c.put(format!("p/{i:02}"), format!("v{i}"), None).await.unwrap();
        }
        for i in 0..5 {
            c.put(format!("p/{i:02}"), format!("w{i}"), None).await.unwrap();
        }
        c.delete("p/19", None).await.unwrap();
        c.compact(10, None).await.unwrap();
        let r = all(&mut c).await;
        assert_eq!(rev(&r), 27);
        r
    };
    let st = srv.terminate();
    assert!(
        st.success() || st.signal() == Some(libc::SIGTERM),
        "server did not exit cleanly on SIGTERM: {st:?}\n{}",
        srv.log_tail(40)
    );
    srv.restart();

    let mut c = connect(&srv.endpoint()).await;
    let r = all(&mut c).await;
    assert_eq!(rev(&r), 27, "revision survives restart");
    let dump = |r: &GetResponse| -> Vec<KvTuple> {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect()
    };
    assert_eq!(dump(&r), dump(&snapshot), "data survives restart");
    assert_status(
        c.get("p/00", Some(GetOptions::new().with_revision(9))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let h = c.get("p/19", Some(GetOptions::new().with_revision(21))).await.unwrap();
    assert_eq!(values(&h), vec!["v19"], "history after the compaction point survives restart");
    let p = c.put("p/new", "x", None).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 28, "revisions continue after restart");

    // A second restart, this time after SIGKILL.
    srv.kill9();
    srv.restart();
    let mut c = connect(&srv.endpoint()).await;
    let r = c.get("p/new", None).await.unwrap();
    assert_eq!((values(&r), rev(&r)), (vec!["x".to_string()], 28));
}
