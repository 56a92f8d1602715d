//! The state machine on a real RocksDB: each request kind, the applied index
//! persisted with the change it belongs to, refusals that only move the
//! index, and failures of this member's disk that stop it.

use std::sync::Arc;

use prost::Message;

use super::{Applied, Applier, ApplyResult, Waiters, META_APPLIED_INDEX};
use crate::error::Error;
use crate::mvcc::{KeyRange, MvccStore, Reader};
use crate::proto::cairnpb::{raft_request::Request, RaftRequest};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request as Op,
    response_op::Response,
    AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp,
    TxnRequest,
};
use crate::raft::StateMachine;
use crate::storage::{Database, CF_KV_INDEX};

struct Member {
    dir: tempfile::TempDir,
    engine: Arc<Database>,
    store: Arc<MvccStore>,
    waiters: Arc<Waiters>,
    applier: Applier,
}

fn open_in(dir: tempfile::TempDir) -> Member {
    let engine = Database::open(dir.path()).expect("engine");
    let store = Arc::new(MvccStore::open(engine.clone()).expect("store"));
    let waiters = Arc::new(Waiters::default());
    let applier = Applier::new(engine.clone(), store.clone(), waiters.clone()).expect("applier");
    Member {
        dir,
        engine,
        store,
        waiters,
        applier,
    }
}

fn member() -> Member {
    open_in(tempfile::tempdir().expect("temp dir"))
}

impl Member {
    /// Applies `request` at `index` and returns what the waiting client gets.
    fn apply(&mut self, index: u64, request: Request) -> ApplyResult {
        let id = 7000 + index;
        let mut rx = self.waiters.register(id);
        let data = RaftRequest {
            id,
            request: Some(request),
            caller: None,
        }
        .encode_to_vec();
        self.applier.apply(index, &data).expect("apply");
        rx.try_recv().expect("a result for the waiting client")
    }

    fn persisted_index(&self) -> Option<u64> {
        self.engine.get_meta_u64(META_APPLIED_INDEX).expect("meta")
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        let r = self
            .store
            .read_view()
            .range(&KeyRange::Single(key.into()), 0, 1, false)
            .expect("range");
        r.kvs.into_iter().next().map(|kv| kv.value)
    }

    /// Closes the database (every handle to it) and opens it again.
    fn reopen(self) -> Member {
        let Member {
            dir,
            engine,
            store,
            waiters,
            applier,
        } = self;
        drop((applier, waiters, store, engine));
        open_in(dir)
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.into(),
            value: b"t".to_vec(),
            ..Default::default()
        })),
    }
}

fn exists(key: &str) -> Compare {
    Compare {
        key: key.into(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Greater as i32,
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    }
}

#[test]
fn each_kv_request_kind_and_its_revision() {
    let mut m = member();
    let Ok(Applied::Put(p)) = m.apply(1, put("a", "1")) else { panic!() };
    assert_eq!(p.header.map(|h| h.revision), Some(2));
    m.apply(2, put("b", "1")).expect("put");

    let txn = TxnRequest {
        compare: vec![exists("a")],
        success: vec![put_op("c")],
        failure: vec![put_op("never")],
    };
    let Ok(Applied::Txn(t)) = m.apply(3, Request::Txn(txn)) else {
        panic!()
    };
    assert!(t.succeeded);
    assert_eq!(t.header.map(|h| h.revision), Some(4));
    assert!(matches!(&t.responses[0].response, Some(Response::ResponsePut(_))));
    assert_eq!(m.value("c").as_deref(), Some(&b"t"[..]));
    assert_eq!(m.value("never"), None);

    let delete = Request::DeleteRange(DeleteRangeRequest {
        key: "a".into(),
        range_end: "c".into(),
        prev_kv: true,
    });
    let Ok(Applied::DeleteRange(d)) = m.apply(4, delete) else {
        panic!()
    };
    assert_eq!((d.deleted, d.prev_kvs.len(), d.header.map(|h| h.revision)), (2, 2, Some(5)));
    assert_eq!(m.value("a"), None);

    let Ok(Applied::Compaction(c)) = m.apply(
        5,
        Request::Compaction(CompactionRequest {
            revision: 4,
            ..Default::default()
        }),
    ) else {
        panic!()
    };
    assert_eq!(c.header.map(|h| h.revision), Some(5));
    assert_eq!(m.store.compact_revision(), 4);
    assert_eq!(m.applier.applied_index(), 5);
    assert_eq!(m.persisted_index(), Some(5));
}

#[test]
fn leases_grant_attach_and_revoke_in_one_revision() {
    let mut m = member();
    let grant = Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 60 });
    let Ok(Applied::LeaseGrant(g)) = m.apply(1, grant.clone()) else {
        panic!()
    };
    assert_eq!((g.id, g.ttl), (9, 60));
    assert!(matches!(m.apply(2, grant), Err(Error::LeaseExists)));
    let attached = |key: &str| {
        Request::Put(PutRequest {
            key: key.into(),
            lease: 9,
            ..Default::default()
        })
    };
    m.apply(3, attached("x")).expect("put");
    m.apply(4, attached("y")).expect("put");
    let unknown = Request::Put(PutRequest {
        key: "z".into(),
        lease: 10,
        ..Default::default()
    });
    assert!(matches!(m.apply(5, unknown), Err(Error::LeaseNotFound)));
    assert_eq!(m.store.current_revision(), 3);
    let Ok(Applied::LeaseRevoke(r)) = m.apply(6, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 })) else {
        panic!()
    };
    assert_eq!(r.header.map(|h| h.revision), Some(4), "both keys go in one revision");
    assert_eq!((m.value("x"), m.value("y")), (None, None));
    assert!(matches!(m.apply(7, attached("x")), Err(Error::LeaseNotFound)));
}

#[test]
fn the_applied_index_is_persisted_with_its_change_and_refusals_move_it() {
    let mut m = member();
    m.apply(1, put("k", "v")).expect("put");
    // Deterministic refusals: the client's answer, the index moves on.
    let keep_missing = Request::Put(PutRequest {
        key: "missing".into(),
        ignore_value: true,
        ..Default::default()
    });
    assert!(matches!(m.apply(2, keep_missing), Err(Error::KeyNotFound)));
    let future_compaction = Request::Compaction(CompactionRequest {
        revision: 50,
        ..Default::default()
    });
    assert!(matches!(m.apply(3, future_compaction), Err(Error::FutureRev)));
    // An entry without a request and an empty entry are applied too.
    let empty = RaftRequest {
        id: 1,
        request: None,
        caller: None,
    }
    .encode_to_vec();
    m.applier.apply(4, &empty).expect("apply");
    m.applier.apply(5, &[]).expect("apply");
    m.applier
        .apply(6, &[0xFF, 0xFF])
        .expect("an undecodable entry is skipped alike everywhere");
    assert_eq!(m.store.current_revision(), 2);

    let m = m.reopen();
    assert_eq!(m.applier.applied_index(), 6);
    assert_eq!(m.persisted_index(), Some(6));
    assert_eq!(m.value("k").as_deref(), Some(&b"v"[..]));
    assert_eq!(m.store.current_revision(), 2);
}

#[test]
fn a_failed_read_stops_the_member_instead_of_choosing_a_branch() {
    let mut m = member();
    m.apply(1, put("k", "v")).expect("put");
    // Garble every stored version, as a bad disk would.
    let cf = m.engine.cf(CF_KV_INDEX);
    let keys: Vec<Box<[u8]>> = m
        .engine
        .db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|item| item.expect("iterate").0)
        .collect();
    assert!(!keys.is_empty());
    for key in keys {
        m.engine.db().put_cf(cf, key, [0xFF; 4]).expect("garble");
    }
    // Reading it as "no such key" would take the failure branch.
    let txn = TxnRequest {
        compare: vec![exists("k")],
        success: vec![],
        failure: vec![put_op("diverged")],
    };
    let id = 99;
    let mut rx = m.waiters.register(id);
    let data = RaftRequest {
        id,
        request: Some(Request::Txn(txn)),
        caller: None,
    }
    .encode_to_vec();
    let err = m.applier.apply(2, &data).expect_err("the member must stop");
    assert!(!err.is_deterministic(), "{err:?}");
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert_eq!(m.applier.applied_index(), 1, "the entry is not applied");
    assert_eq!(m.persisted_index(), Some(1));
    assert!(rx.try_recv().is_err(), "no answer is given from a broken member");
}

#[test]
fn errors_classify_by_who_can_reach_them() {
    let deterministic = [
        Error::KeyNotFound,
        Error::DuplicateKey,
        Error::Compacted,
        Error::LeaseNotFound,
        Error::PluginDenied {
            plugin: "p".into(),
            reason: "r".into(),
        },
        Error::InvalidRequest("x".into()),
    ];
    for e in deterministic {
        assert!(e.is_deterministic(), "{e:?}");
    }
    let local = [
        Error::Corrupt("x".into()),
        Error::Io(std::io::Error::other("disk")),
        Error::PluginEngine("x".into()),
        Error::NotLeader,
        Error::Timeout,
    ];
    for e in local {
        assert!(!e.is_deterministic(), "{e:?}");
    }
}

fn alarm(action: AlarmAction, member_id: u64, alarm: AlarmType) -> Request {
    Request::Alarm(AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    })
}

#[test]
fn raised_alarms_refuse_writes_alike_and_survive_a_reopen() {
    let mut m = member();
    m.apply(1, put("a", "1")).expect("put");
    let Ok(Applied::Alarm(raised)) = m.apply(2, alarm(AlarmAction::Activate, 9, AlarmType::Nospace)) else {
        panic!()
    };
    assert_eq!(raised.alarms.len(), 1);
    // Under NOSPACE: what adds data is refused, what frees it is not.
    assert!(matches!(m.apply(3, put("b", "1")), Err(Error::NoSpace)));
    let txn_put = TxnRequest {
        success: vec![put_op("c")],
        ..Default::default()
    };
    assert!(matches!(m.apply(4, Request::Txn(txn_put.clone())), Err(Error::NoSpace)));
    let grant = Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 });
    assert!(matches!(m.apply(5, grant.clone()), Err(Error::NoSpace)));
    let delete = |key: &str| {
        Request::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })
    };
    m.apply(6, delete("a")).expect("delete under NOSPACE");
    m.apply(
        7,
        Request::Compaction(CompactionRequest {
            revision: 2,
            physical: false,
        }),
    )
    .expect("compaction under NOSPACE");

    // The alarm is state: a reopened member refuses alike.
    let mut m = m.reopen();
    assert!(matches!(m.apply(8, put("b", "1")), Err(Error::NoSpace)));
    m.apply(9, alarm(AlarmAction::Activate, 9, AlarmType::Corrupt)).expect("corrupt");
    assert!(matches!(m.apply(10, delete("x")), Err(Error::CorruptCluster)));
    assert!(matches!(m.apply(11, put("b", "1")), Err(Error::CorruptCluster)));
    m.apply(12, alarm(AlarmAction::Deactivate, 9, AlarmType::Corrupt)).expect("clear");
    m.apply(13, alarm(AlarmAction::Deactivate, 9, AlarmType::Nospace)).expect("clear");
    m.apply(14, Request::Txn(txn_put)).expect("txn once cleared");
    m.apply(15, grant).expect("grant once cleared");
    assert_eq!(m.value("c").as_deref(), Some(&b"t"[..]));
    let Ok(Applied::Alarm(listed)) = m.apply(16, alarm(AlarmAction::Get, 0, AlarmType::None)) else {
        panic!()
    };
    assert!(listed.alarms.is_empty());
}
