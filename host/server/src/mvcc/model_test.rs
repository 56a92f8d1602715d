//! Model-based property test: the RocksDB-backed store against a plain
//! in-memory history, under random puts, deletes, multi-op transactions,
//! compactions, reads at random revisions and reopening from disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::{KeyRange, MvccStore};
use crate::error::Error;
use crate::proto::mvccpb::KeyValue;
use crate::storage::Database;

/// Every version of every key, as etcd defines them, kept in memory.
#[derive(Default)]
struct Model {
    /// key -> versions in revision order; `None` is a deletion.
    history: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    current: i64,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            current: 1,
            compacted: -1,
            ..Default::default()
        }
    }

    fn latest(&self, key: &[u8], staged: &BTreeMap<Vec<u8>, Option<KeyValue>>) -> Option<KeyValue> {
        if let Some(v) = staged.get(key) {
            return v.clone();
        }
        self.at(key, self.current)
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        self.history
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .and_then(|(_, v)| v.clone())
    }

    /// Applies one write request made of `ops`; returns whether the revision moved.
    fn write(&mut self, ops: &[WriteOp]) -> bool {
        let rev = self.current + 1;
        let mut staged: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
        for op in ops {
            match op {
                WriteOp::Put(key, value) => {
                    let prev = self.latest(key, &staged);
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: value.clone(),
                        lease: 0,
                    };
                    staged.insert(key.clone(), Some(kv));
                }
                WriteOp::Delete(start, end) => {
                    let range = KeyRange::new(start, end);
                    let keys: Vec<Vec<u8>> = self
                        .history
                        .keys()
                        .chain(staged.keys())
                        .filter(|k| range.contains(k))
                        .cloned()
                        .collect();
                    for k in keys {
                        if self.latest(&k, &staged).is_some() {
                            staged.insert(k, None);
                        }
                    }
                }
            }
        }
        if staged.is_empty() {
            return false;
        }
        for (k, v) in staged {
            self.history.entry(k).or_default().push((rev, v));
        }
        self.current = rev;
        true
    }

    fn range(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>, &'static str> {
        if rev > self.current {
            return Err("future");
        }
        let at = if rev <= 0 { self.current } else { rev };
        if at < self.compacted {
            return Err("compacted");
        }
        Ok(self
            .history
            .keys()
            .filter(|k| range.contains(k))
            .filter_map(|k| self.at(k, at))
            .collect())
    }

    fn compact(&mut self, rev: i64) -> Result<(), &'static str> {
        if rev <= self.compacted {
            return Err("compacted");
        }
        if rev > self.current {
            return Err("future");
        }
        self.compacted = rev;
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum WriteOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<WriteOp>),
    Read { start: Vec<u8>, end: Vec<u8>, back: i64 },
    Compact { back: i64 },
    Reopen,
}

/// Small alphabets so that keys collide, ranges overlap and zero bytes
/// (which the index key encoding escapes) appear.
fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xFF)], 1..4)
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0u8]), key()]
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        3 => (key(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(k, v)| WriteOp::Put(k, v)),
        1 => (key(), range_end()).prop_map(|(k, e)| WriteOp::Delete(k, e)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(write_op(), 1..4).prop_map(Op::Write),
        4 => (key(), range_end(), -2i64..12).prop_map(|(start, end, back)| Op::Read { start, end, back }),
        1 => (0i64..10).prop_map(|back| Op::Compact { back }),
        1 => Just(Op::Reopen),
    ]
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Compacted => "compacted",
        Error::FutureRev => "future",
        _ => "other",
    }
}

/// Deletes inside one request must see the request's own puts, and puts
/// after a delete recreate the key; the store applies ops in order.
fn apply_to_store(store: &MvccStore, ops: &[WriteOp]) -> bool {
    let mut txn = store.write_txn();
    for op in ops {
        match op {
            WriteOp::Put(k, v) => {
                txn.put(k, v.clone(), 0).expect("put");
            }
            WriteOp::Delete(k, e) => {
                txn.delete_range(&KeyRange::new(k, e)).expect("delete");
            }
        }
    }
    let changed = txn.has_changes();
    txn.commit(|_| {}).expect("commit");
    changed
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || MvccStore::open(Database::open(dir.path()).expect("engine")).expect("store");
    let mut store = Arc::new(open());
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Write(ops) => {
                let moved = model.write(&ops);
                prop_assert_eq!(apply_to_store(&store, &ops), moved);
                prop_assert_eq!(store.current_revision(), model.current);
            }
            Op::Read { start, end, back } => {
                // Revisions from the future, the latest (0) and the past.
                let rev = if back < 0 {
                    model.current - back
                } else {
                    (model.current - back).max(0)
                };
                let range = KeyRange::new(&start, &end);
                let got = store.range(&range, rev, 0, false).map(|r| r.kvs).map_err(|e| error_kind(&e));
                prop_assert_eq!(got, model.range(&range, rev), "range {:?} at {}", range, rev);
                if let Ok(expected) = model.range(&range, rev) {
                    let counted = store.range(&range, rev, 1, true).expect("count");
                    prop_assert_eq!(counted.count, expected.len() as i64);
                    prop_assert!(counted.kvs.is_empty());
                    let limited = store.range(&range, rev, 1, false).expect("limit");
                    prop_assert_eq!(limited.kvs, expected.into_iter().take(1).collect::<Vec<_>>());
                }
            }
            Op::Compact { back } => {
                let rev = model.current - back;
                let got = store.compact(rev, |_| {}).map_err(|e| error_kind(&e));
                prop_assert_eq!(got, model.compact(rev));
            }
            Op::Reopen => {
                drop(store);
                store = Arc::new(open());
                prop_assert_eq!(store.current_revision(), model.current);
                prop_assert_eq!(store.compact_revision(), model.compacted);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
