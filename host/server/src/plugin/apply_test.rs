//! The registry and the admission hook inside the real apply loop, on a
//! real RocksDB: installs take effect at their index, denials change
//! nothing, and the registry survives reopening the data directory.

use std::sync::Arc;

use prost::Message;

use crate::apply::{Applier, Waiters};
use crate::error::Error;
use crate::mvcc::MvccStore;
use crate::proto::cairnpb::{raft_request::Request, PluginBinding, PluginHook, PluginRemoveRequest, RaftRequest};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{Compare, PutRequest, RequestOp, TxnRequest};
use crate::raft::StateMachine;
use crate::storage::Database;
use harness::component_text::{self, deny};

fn entry(id: u64, request: Request) -> Vec<u8> {
    RaftRequest {
        id,
        request: Some(request),
        caller: None,
    }
    .encode_to_vec()
}

fn put(key: &str) -> Request {
    Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

/// Applies `request` at `index` and returns what the waiting client gets.
fn apply(applier: &mut Applier, waiters: &Waiters, index: u64, request: Request) -> crate::apply::ApplyResult {
    let id = 1000 + index;
    let mut rx = waiters.register(id);
    applier.apply(index, &entry(id, request)).expect("apply");
    rx.try_recv().expect("a result for the waiting client")
}

/// An admission binding that denies every write under `g/` with "nope".
fn gate() -> PluginBinding {
    PluginBinding {
        name: "gate".into(),
        wasm: component_text::admission("nope", &deny(4)),
        hook: PluginHook::Admission as i32,
        key: b"g/".to_vec(),
        range_end: b"g0".to_vec(),
        ..Default::default()
    }
}

#[test]
fn installs_take_effect_at_their_index_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let binding = gate();
    {
        let engine = Database::open(dir.path()).expect("engine");
        let store = Arc::new(MvccStore::open(engine.clone()).expect("store"));
        let waiters = Arc::new(Waiters::default());
        let mut applier = Applier::new(engine, store.clone(), waiters.clone()).expect("applier");

        apply(&mut applier, &waiters, 1, put("g/before")).expect("allowed before the install");
        apply(&mut applier, &waiters, 2, Request::PluginInstall(binding.clone())).expect("installed");
        let denied = apply(&mut applier, &waiters, 3, put("g/after"));
        assert!(
            matches!(&denied, Err(Error::PluginDenied { plugin, reason }) if plugin == "gate" && reason == "nope"),
            "{denied:?}"
        );
        assert_eq!(store.current_revision(), 2, "a denial makes no revision");
        assert_eq!(applier.applied_index(), 3, "a denied entry is still applied");
        apply(&mut applier, &waiters, 4, put("other")).expect("outside the bound range");
        assert_eq!(store.current_revision(), 3);
    }
    let engine = Database::open(dir.path()).expect("engine");
    let store = Arc::new(MvccStore::open(engine.clone()).expect("store"));
    let waiters = Arc::new(Waiters::default());
    let mut applier = Applier::new(engine, store.clone(), waiters.clone()).expect("applier");
    let listed = applier.plugins().list();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].installed_index), ("gate", 2));
    assert!(matches!(
        apply(&mut applier, &waiters, 5, put("g/x")),
        Err(Error::PluginDenied { .. })
    ));

    let removal = Request::PluginRemove(PluginRemoveRequest { name: "gate".into() });
    apply(&mut applier, &waiters, 6, removal.clone()).expect("removed");
    assert!(matches!(apply(&mut applier, &waiters, 7, removal), Err(Error::PluginNotFound(_))));
    apply(&mut applier, &waiters, 8, put("g/x")).expect("allowed after the removal");
}

fn txn(compare_key_exists: &str, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            key: compare_key_exists.as_bytes().to_vec(),
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        }],
        success,
        failure,
    }
}

fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn put_op(key: &str) -> RequestOp {
    op(Op::RequestPut(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

#[test]
fn admission_sees_the_branches_a_txn_takes_nested_txns_included() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Database::open(dir.path()).expect("engine");
    let store = Arc::new(MvccStore::open(engine.clone()).expect("store"));
    let waiters = Arc::new(Waiters::default());
    let mut applier = Applier::new(engine, store.clone(), waiters.clone()).expect("applier");
    let binding = gate();
    apply(&mut applier, &waiters, 1, put("exists")).expect("put");
    apply(&mut applier, &waiters, 2, Request::PluginInstall(binding)).expect("installed");

    // The outer compare holds, so the success branch runs; in it, a nested
    // txn whose compare fails runs its failure branch, which writes under g/.
    let nested_taken = txn("missing", vec![put_op("other")], vec![put_op("g/x")]);
    let outer = txn("exists", vec![put_op("a"), op(Op::RequestTxn(nested_taken))], vec![]);
    let denied = apply(&mut applier, &waiters, 3, Request::Txn(outer));
    assert!(matches!(denied, Err(Error::PluginDenied { .. })), "{denied:?}");
    assert_eq!(store.current_revision(), 2, "nothing of the txn applied");

    // The same writes on branches the compares do not take are not judged.
    let nested_not_taken = txn("exists", vec![put_op("other")], vec![put_op("g/x")]);
    let outer = txn(
        "exists",
        vec![put_op("a"), op(Op::RequestTxn(nested_not_taken))],
        vec![put_op("g/y")],
    );
    apply(&mut applier, &waiters, 4, Request::Txn(outer)).expect("allowed");
    assert_eq!(store.current_revision(), 3);
}
