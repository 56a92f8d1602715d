//! Tables of etcd's txn semantics on a real store: every compare target and
//! result, nested txns, range sort and limits, the duplicate-key rules and
//! the revisions writes make.

use std::sync::Arc;

use super::*;
use crate::error::Error;
use crate::mvcc::MvccStore;
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::storage::Database;

/// Leases 1 to 9 exist.
struct SomeLeases;

impl LeaseLookup for SomeLeases {
    fn lease_exists(&self, id: i64) -> bool {
        (1..10).contains(&id)
    }
}

struct Store {
    _dir: tempfile::TempDir,
    mvcc: Arc<MvccStore>,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Database::open(dir.path()).expect("engine");
    let mvcc = Arc::new(MvccStore::open(engine).expect("store"));
    Store { _dir: dir, mvcc }
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(put_req(key, value))),
    }
}

fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn txn_op(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestTxn(t)),
    }
}

impl Store {
    /// Plans and executes one write in its own revision.
    fn write(&self, request: Write<'_>) -> Result<WriteResponse, Error> {
        let mut txn = self.mvcc.write_txn();
        let plan = WritePlan::new(&txn, request, &SomeLeases)?;
        let response = execute(&mut txn, &plan)?;
        txn.commit(|_| {})?;
        Ok(response)
    }

    fn put(&self, key: &str, value: &str, lease: i64) {
        let mut r = put_req(key, value);
        r.lease = lease;
        self.write(Write::Put(&r)).expect("put");
    }

    fn txn(&self, t: &TxnRequest) -> Result<TxnResponse, Error> {
        match self.write(Write::Txn(t))? {
            WriteResponse::Txn(r) => Ok(r),
            other => panic!("not a txn response: {other:?}"),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        let r = range(
            &self.mvcc.read_view(),
            &RangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )
        .expect("range");
        r.kvs.into_iter().next()
    }
}

fn compare(key: &str, range_end: &str, target: CompareTarget, result: CompareResult, operand: TargetUnion) -> Compare {
    Compare {
        key: key.into(),
        range_end: range_end.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(operand),
    }
}

/// Runs a txn with one compare and reports which branch it took.
fn holds(s: &Store, c: Compare) -> bool {
    let t = TxnRequest {
        compare: vec![c],
        success: vec![range_op("a")],
        failure: vec![],
    };
    s.txn(&t).expect("txn").succeeded
}

#[test]
fn every_compare_target_and_result() {
    let s = store();
    s.put("other", "x", 0); // rev 2
    s.put("a", "m", 0); // rev 3
    s.put("a", "m", 5); // rev 4: version 2, lease 5
    let kv = s.get("a").expect("a");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (3, 4, 2, 5));

    // (result, operand relative to the stored one, expected)
    let table = [
        (CompareResult::Equal, -1, false),
        (CompareResult::Equal, 0, true),
        (CompareResult::Equal, 1, false),
        (CompareResult::NotEqual, -1, true),
        (CompareResult::NotEqual, 0, false),
        (CompareResult::NotEqual, 1, true),
        (CompareResult::Greater, -1, true),
        (CompareResult::Greater, 0, false),
        (CompareResult::Greater, 1, false),
        (CompareResult::Less, -1, false),
        (CompareResult::Less, 0, false),
        (CompareResult::Less, 1, true),
    ];
    for (result, delta, expected) in table {
        let value = match delta {
            -1 => b"l".to_vec(),
            0 => b"m".to_vec(),
            _ => b"n".to_vec(),
        };
        let operands = [
            (CompareTarget::Value, TargetUnion::Value(value)),
            (CompareTarget::Create, TargetUnion::CreateRevision(3 + delta)),
            (CompareTarget::Mod, TargetUnion::ModRevision(4 + delta)),
            (CompareTarget::Version, TargetUnion::Version(2 + delta)),
            (CompareTarget::Lease, TargetUnion::Lease(5 + delta)),
        ];
        for (target, operand) in operands {
            let c = compare("a", "", target, result, operand);
            assert_eq!(holds(&s, c), expected, "{target:?} {result:?} stored{delta:+}");
        }
    }
}

#[test]
fn compares_on_missing_keys_and_ranges() {
    let s = store();
    s.put("r/1", "1", 0);
    s.put("r/2", "2", 0);
    let value = |v: &str| TargetUnion::Value(v.into());
    let table = [
        // A missing key never compares by value, not even as "not equal".
        (
            compare("none", "", CompareTarget::Value, CompareResult::NotEqual, value("x")),
            false,
        ),
        (compare("none", "", CompareTarget::Value, CompareResult::Equal, value("")), false),
        // Every other target compares a missing key as zero.
        (
            compare("none", "", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            compare(
                "none",
                "",
                CompareTarget::Create,
                CompareResult::Less,
                TargetUnion::CreateRevision(1),
            ),
            true,
        ),
        (
            compare("none", "", CompareTarget::Mod, CompareResult::Greater, TargetUnion::ModRevision(0)),
            false,
        ),
        (
            compare("none", "", CompareTarget::Lease, CompareResult::Equal, TargetUnion::Lease(0)),
            true,
        ),
        // A range compare holds only when it holds for every key in it.
        (compare("r/", "r0", CompareTarget::Value, CompareResult::Greater, value("0")), true),
        (compare("r/", "r0", CompareTarget::Value, CompareResult::Greater, value("1")), false),
        (
            compare("r/", "r0", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(1)),
            true,
        ),
        // "\0" as range end means every key from the start.
        (compare("r/2", "\0", CompareTarget::Value, CompareResult::Equal, value("2")), true),
        // An empty range is compared like a missing key.
        (compare("s/", "s0", CompareTarget::Value, CompareResult::Equal, value("")), false),
        (
            compare("s/", "s0", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
    ];
    for (i, (c, expected)) in table.into_iter().enumerate() {
        assert_eq!(holds(&s, c), expected, "row {i}");
    }
    // All compares of a txn must hold.
    let t = TxnRequest {
        compare: vec![
            compare("r/1", "", CompareTarget::Value, CompareResult::Equal, value("1")),
            compare("r/2", "", CompareTarget::Value, CompareResult::Equal, value("1")),
        ],
        success: vec![],
        failure: vec![],
    };
    assert!(!s.txn(&t).expect("txn").succeeded);
}

fn version_is(key: &str, version: i64) -> Compare {
    compare(key, "", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(version))
}

#[test]
fn nested_txns_take_their_own_branches_judged_before_the_txn() {
    let s = store();
    s.put("k", "old", 0); // rev 2
    let inner = TxnRequest {
        // Judged on the state before the outer txn, whose put makes version 2.
        compare: vec![version_is("k", 1)],
        success: vec![put_op("inner-then", "1"), range_op("k")],
        failure: vec![put_op("inner-else", "1")],
    };
    let outer = TxnRequest {
        compare: vec![version_is("k", 1)],
        success: vec![put_op("k", "new"), txn_op(inner)],
        failure: vec![put_op("outer-else", "1")],
    };
    let resp = s.txn(&outer).expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.header.as_ref().map(|h| h.revision), Some(3), "one revision for the whole txn");
    assert_eq!(resp.responses.len(), 2);
    let Some(Response::ResponseTxn(nested)) = &resp.responses[1].response else {
        panic!("{:?}", resp.responses[1]);
    };
    assert!(nested.succeeded);
    assert_eq!(nested.header, Some(Default::default()), "etcd leaves a nested header empty");
    // The nested range runs after the outer put, inside the same txn.
    let Some(Response::ResponseRange(read)) = &nested.responses[1].response else {
        panic!("{:?}", nested.responses[1]);
    };
    assert_eq!(read.kvs[0].value, b"new");
    assert!(s.get("inner-then").is_some());
    assert!(s.get("inner-else").is_none());
    assert!(s.get("outer-else").is_none());

    // The same txn again: now both compares fail, only the outer else runs.
    let resp = s.txn(&outer).expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.responses.len(), 1);
    assert!(s.get("outer-else").is_some());
}

#[test]
fn revisions_count_write_requests_not_operations() {
    let s = store();
    let rev = || s.mvcc.current_revision();
    assert_eq!(rev(), 1, "an empty store is at revision 1");
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("b", "1"), delete_op("c", "")],
        failure: vec![],
    };
    let resp = s.txn(&t).expect("txn");
    assert_eq!(rev(), 2);
    for r in &resp.responses {
        let header = match &r.response {
            Some(Response::ResponsePut(p)) => p.header,
            Some(Response::ResponseDeleteRange(d)) => d.header,
            other => panic!("{other:?}"),
        };
        assert_eq!(header.map(|h| h.revision), Some(2));
    }
    let a = s.get("a").expect("a");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));

    // A txn that only reads makes no revision and reports the current one.
    let read = TxnRequest {
        compare: vec![],
        success: vec![range_op("a")],
        failure: vec![],
    };
    let resp = s.txn(&read).expect("txn");
    assert_eq!((rev(), resp.header.map(|h| h.revision)), (2, Some(2)));

    // Deleting nothing makes no revision either.
    let resp = s.write(Write::DeleteRange(&DeleteRangeRequest {
        key: "none".into(),
        ..Default::default()
    }));
    let Ok(WriteResponse::DeleteRange(d)) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!((d.deleted, rev()), (0, 2));

    // A delete and a recreate: the key starts a new life.
    s.write(Write::DeleteRange(&DeleteRangeRequest {
        key: "a".into(),
        ..Default::default()
    }))
    .expect("delete");
    s.put("a", "2", 0);
    let a = s.get("a").expect("a");
    assert_eq!((a.create_revision, a.mod_revision, a.version, rev()), (4, 4, 1, 4));
}

#[test]
fn puts_keep_values_and_leases_when_asked_and_check_them_first() {
    let s = store();
    s.put("k", "v1", 3);
    let keep_value = PutRequest {
        key: "k".into(),
        ignore_value: true,
        lease: 4,
        prev_kv: true,
        ..Default::default()
    };
    let Ok(WriteResponse::Put(resp)) = s.write(Write::Put(&keep_value)) else {
        panic!()
    };
    assert_eq!(resp.prev_kv.map(|p| (p.value, p.lease)), Some((b"v1".to_vec(), 3)));
    let k = s.get("k").expect("k");
    assert_eq!((k.value.as_slice(), k.lease), (&b"v1"[..], 4));

    let keep_lease = PutRequest {
        key: "k".into(),
        value: "v2".into(),
        ignore_lease: true,
        ..Default::default()
    };
    let Ok(WriteResponse::Put(resp)) = s.write(Write::Put(&keep_lease)) else {
        panic!()
    };
    assert_eq!(resp.prev_kv, None, "prev_kv only when asked for");
    let k = s.get("k").expect("k");
    assert_eq!((k.value.as_slice(), k.lease), (&b"v2"[..], 4));

    let before = s.mvcc.current_revision();
    let missing = PutRequest {
        key: "none".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert!(matches!(s.write(Write::Put(&missing)), Err(Error::KeyNotFound)));
    let no_lease = PutRequest {
        lease: 42,
        ..put_req("k", "v")
    };
    assert!(matches!(s.write(Write::Put(&no_lease)), Err(Error::LeaseNotFound)));
    // A plain put checks its lease before its key, as etcd does.
    let both = PutRequest {
        lease: 42,
        ..missing.clone()
    };
    assert!(matches!(s.write(Write::Put(&both)), Err(Error::LeaseNotFound)));
    // Inside a txn a failing op fails the whole txn, earlier ops included.
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("fine", "1"),
            txn_op(TxnRequest {
                compare: vec![],
                success: vec![RequestOp {
                    request: Some(Op::RequestPut(missing)),
                }],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    assert!(matches!(s.txn(&t), Err(Error::KeyNotFound)));
    let future = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("fine", "1"),
            RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: "k".into(),
                    revision: before + 1,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert!(matches!(s.txn(&future), Err(Error::FutureRev)));
    assert_eq!(s.mvcc.current_revision(), before, "refused writes change nothing");
    assert!(s.get("fine").is_none());
}

fn sorted(s: &Store, order: SortOrder, target: SortTarget, limit: i64) -> (Vec<String>, bool, i64) {
    let r = range(
        &s.mvcc.read_view(),
        &RangeRequest {
            key: "s/".into(),
            range_end: "s0".into(),
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            ..Default::default()
        },
    )
    .expect("range");
    let keys = r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    (keys, r.more, r.count)
}

#[test]
fn range_sort_orders_targets_and_limits() {
    let s = store();
    // Created c, a, b; versions a 1, b 2, c 3; last modified c; values b < c < a.
    s.put("s/c", "2", 0);
    s.put("s/a", "3", 0);
    s.put("s/b", "1", 0);
    s.put("s/b", "1", 0);
    s.put("s/c", "2", 0);
    s.put("s/c", "2", 0);
    use SortOrder::{Ascend, Descend, None as Unsorted};
    use SortTarget::{Create, Key, Mod, Value, Version};
    let table = [
        (Unsorted, Key, 0, vec!["s/a", "s/b", "s/c"], false),
        (Ascend, Key, 0, vec!["s/a", "s/b", "s/c"], false),
        (Descend, Key, 0, vec!["s/c", "s/b", "s/a"], false),
        // Another target without an order sorts ascending.
        (Unsorted, Value, 0, vec!["s/b", "s/c", "s/a"], false),
        (Descend, Value, 0, vec!["s/a", "s/c", "s/b"], false),
        (Ascend, Create, 0, vec!["s/c", "s/a", "s/b"], false),
        (Descend, Mod, 0, vec!["s/c", "s/b", "s/a"], false),
        (Ascend, Version, 0, vec!["s/a", "s/b", "s/c"], false),
        // Limits apply after sorting.
        (Unsorted, Key, 2, vec!["s/a", "s/b"], true),
        (Descend, Key, 2, vec!["s/c", "s/b"], true),
        (Descend, Version, 1, vec!["s/c"], true),
        (Unsorted, Key, 3, vec!["s/a", "s/b", "s/c"], false),
        (Unsorted, Key, 4, vec!["s/a", "s/b", "s/c"], false),
    ];
    for (order, target, limit, keys, more) in table {
        let got = sorted(&s, order, target, limit);
        assert_eq!(
            got,
            (keys.into_iter().map(String::from).collect(), more, 3),
            "{order:?} {target:?} limit {limit}"
        );
    }

    let r = range(
        &s.mvcc.read_view(),
        &RangeRequest {
            key: "s/".into(),
            range_end: "s0".into(),
            count_only: true,
            ..Default::default()
        },
    )
    .expect("range");
    assert_eq!((r.kvs.len(), r.count), (0, 3));
    let r = range(
        &s.mvcc.read_view(),
        &RangeRequest {
            key: "s/".into(),
            range_end: "s0".into(),
            keys_only: true,
            min_mod_revision: 7,
            ..Default::default()
        },
    )
    .expect("range");
    let got: Vec<_> = r.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
    assert_eq!(got, vec![(b"s/c".to_vec(), vec![])], "filters select, keys_only drops values");
}

#[test]
fn duplicate_keys_and_overlapping_writes() {
    let txn = |success: Vec<RequestOp>| TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    };
    let nested = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        txn_op(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    };
    let table = [
        ("distinct puts", txn(vec![put_op("a", "1"), put_op("b", "1")]), true),
        ("one key put twice", txn(vec![put_op("a", "1"), put_op("a", "2")]), false),
        ("put and delete of one key", txn(vec![put_op("a", "1"), delete_op("a", "")]), false),
        (
            "put inside a deleted range",
            txn(vec![delete_op("a", "c"), put_op("b", "1")]),
            false,
        ),
        (
            "put at a deleted range's end",
            txn(vec![delete_op("a", "c"), put_op("c", "1")]),
            true,
        ),
        ("deletes may overlap", txn(vec![delete_op("a", "c"), delete_op("b", "d")]), true),
        ("a key read and put", txn(vec![range_op("a"), put_op("a", "1")]), true),
        (
            "then and else of one nested txn",
            txn(vec![nested(vec![put_op("a", "1")], vec![put_op("a", "2")])]),
            true,
        ),
        (
            "outer and nested put",
            txn(vec![put_op("a", "1"), nested(vec![put_op("a", "2")], vec![])]),
            false,
        ),
        (
            "two nested txns put one key",
            txn(vec![nested(vec![put_op("a", "1")], vec![]), nested(vec![], vec![put_op("a", "2")])]),
            false,
        ),
        (
            "outer delete covers a nested put",
            txn(vec![delete_op("a", "c"), nested(vec![], vec![put_op("b", "1")])]),
            false,
        ),
        (
            "nested delete covers an outer put",
            txn(vec![put_op("b", "1"), nested(vec![delete_op("a", "c")], vec![])]),
            false,
        ),
    ];
    for (name, t, allowed) in table {
        let result = validate_txn(&t, 128);
        match (allowed, &result) {
            (true, Ok(())) | (false, Err(Error::DuplicateKey)) => {}
            _ => panic!("{name}: {result:?}"),
        }
    }
    // Each branch is checked on its own: success and failure may share keys.
    let both = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
    };
    assert!(validate_txn(&both, 128).is_ok());
}

#[test]
fn txn_size_and_request_validation() {
    let many = |n: usize| TxnRequest {
        compare: vec![],
        success: (0..n).map(|i| put_op(&format!("k{i}"), "v")).collect(),
        failure: vec![],
    };
    assert!(validate_txn(&many(4), 4).is_ok());
    assert!(matches!(validate_txn(&many(5), 4), Err(Error::TooManyOps)));
    let empty_compare = TxnRequest {
        compare: vec![version_is("", 0)],
        ..many(1)
    };
    assert!(matches!(validate_txn(&empty_compare, 4), Err(Error::EmptyKey)));
    assert!(matches!(validate_put(&put_req("", "v")), Err(Error::EmptyKey)));
    let value_and_ignore = PutRequest {
        ignore_value: true,
        ..put_req("k", "v")
    };
    assert!(matches!(validate_put(&value_and_ignore), Err(Error::ValueProvided)));
    let lease_and_ignore = PutRequest {
        ignore_lease: true,
        lease: 1,
        ..put_req("k", "")
    };
    assert!(matches!(validate_put(&lease_and_ignore), Err(Error::LeaseProvided)));
    assert!(is_read_only(&TxnRequest {
        compare: vec![],
        success: vec![range_op("a"), txn_op(TxnRequest::default())],
        failure: vec![range_op("b")],
    }));
    assert!(!is_read_only(&TxnRequest {
        compare: vec![],
        success: vec![range_op("a")],
        failure: vec![txn_op(TxnRequest {
            success: vec![delete_op("a", "")],
            ..Default::default()
        })],
    }));
}

#[test]
fn a_plan_lists_the_changes_of_the_chosen_branches_only() {
    let s = store();
    s.put("k", "stored", 2);
    let t = TxnRequest {
        compare: vec![version_is("k", 1)],
        success: vec![
            delete_op("d", "e"),
            txn_op(TxnRequest {
                compare: vec![version_is("k", 5)],
                success: vec![put_op("not-taken", "x")],
                failure: vec![RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: "k".into(),
                        ignore_value: true,
                        ignore_lease: true,
                        ..Default::default()
                    })),
                }],
            }),
        ],
        failure: vec![put_op("else", "x")],
    };
    let view = s.mvcc.read_view();
    let plan = WritePlan::new(&view, Write::Txn(&t), &SomeLeases).expect("plan");
    assert_eq!(plan.branches, vec![true, false]);
    assert!(plan.succeeded());
    assert_eq!(plan.revision, 2);
    assert_eq!(plan.changes.len(), 2);
    assert!(matches!(&plan.changes[0], Change::DeleteRange(d) if d.key == b"d"));
    let Change::Put(p) = &plan.changes[1] else {
        panic!("{:?}", plan.changes[1])
    };
    assert_eq!(
        (p.request.key.as_slice(), p.value.as_slice(), p.lease),
        (&b"k"[..], &b"stored"[..], 2)
    );
}
