//! The write path: one [`WriteTxn`] per applied request.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use prost::Message;
use rocksdb::{ReadOptions, WriteBatch};

use super::read::{scan, KeyRange, MvccStore, RangeResult, Reader};
use crate::error::Result;
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use crate::storage::encoding::{self, IndexValue, Revision};
use crate::storage::schema::META_CURRENT_REV;
use crate::storage::{CF_KV_INDEX, CF_KV_REV, CF_META};

/// A write transaction: every change in it shares one main revision. Reads
/// through it see its own earlier changes, as etcd's write txns do.
///
/// Only the apply loop creates these, one at a time, so the store's latest
/// state cannot change underneath a transaction.
pub struct WriteTxn<'a> {
    store: &'a MvccStore,
    batch: WriteBatch,
    begin_rev: i64,
    /// The latest state of each key this transaction changed.
    overlay: BTreeMap<Vec<u8>, IndexValue>,
    events: Vec<Event>,
}

impl MvccStore {
    pub fn write_txn(&self) -> WriteTxn<'_> {
        WriteTxn {
            store: self,
            batch: WriteBatch::default(),
            begin_rev: self.current_revision(),
            overlay: BTreeMap::new(),
            events: Vec::new(),
        }
    }
}

impl<'a> WriteTxn<'a> {
    /// The revision reads inside this transaction observe.
    fn current(&self) -> i64 {
        if self.events.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    /// Whether the transaction changed anything (and so takes a revision).
    pub fn has_changes(&self) -> bool {
        !self.events.is_empty()
    }

    /// The store's compaction mark, which bounds history reads.
    pub fn compact_revision(&self) -> i64 {
        self.store.compact_revision()
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin_rev + 1, self.events.len() as i64)
    }

    /// The latest version of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(match v {
                IndexValue::Live(kv) => Some(kv.clone()),
                IndexValue::Tombstone => None,
            });
        }
        let mut found = None;
        self.scan_committed(&KeyRange::Single(key.to_vec()), self.begin_rev, |raw| {
            found = Some(KeyValue::decode(raw)?);
            Ok(false)
        })?;
        Ok(found)
    }

    fn scan_committed(&self, range: &KeyRange, rev: i64, visit: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        let engine = &self.store.engine;
        scan(engine.db(), engine.cf(CF_KV_INDEX), ReadOptions::default(), range, rev, visit)
    }

    /// Reads `range` at `rev` (0 = latest, including this transaction's
    /// changes), with etcd's `limit` and `count_only` meaning.
    fn range_merged(&self, range: &KeyRange, rev: i64, limit: usize, count_only: bool) -> Result<RangeResult> {
        let current = self.current();
        let at = self.store.check_read_rev(rev, current)?;
        let touched = self.overlay.keys().any(|k| range.contains(k));
        if at <= self.begin_rev || !touched {
            // Nothing of ours is visible: plain committed read.
            let mut kvs = Vec::new();
            let mut count = 0;
            self.scan_committed(range, at.min(self.begin_rev), |raw| {
                count += 1;
                if !count_only && (limit == 0 || kvs.len() < limit) {
                    kvs.push(KeyValue::decode(raw)?);
                }
                Ok(true)
            })?;
            return Ok(RangeResult { kvs, count, rev: current });
        }
        let mut merged: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
        self.scan_committed(range, self.begin_rev, |raw| {
            let kv = KeyValue::decode(raw)?;
            merged.insert(kv.key.clone(), Some(kv));
            Ok(true)
        })?;
        for (k, v) in self.overlay.iter().filter(|(k, _)| range.contains(k)) {
            let live = match v {
                IndexValue::Live(kv) => Some(kv.clone()),
                IndexValue::Tombstone => None,
            };
            merged.insert(k.clone(), live);
        }
        let live: Vec<KeyValue> = merged.into_values().flatten().collect();
        let count = live.len() as i64;
        let kvs = if count_only {
            Vec::new()
        } else if limit == 0 {
            live
        } else {
            live.into_iter().take(limit).collect()
        };
        Ok(RangeResult { kvs, count, rev: current })
    }

    /// Writes a new version of `key`. Returns the revision it will commit at.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64> {
        let rev = self.next_revision();
        let prev = self.get(key)?;
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (rev.main, 1),
        };
        let m = crate::metrics::metrics();
        m.put_total.inc();
        if prev.is_none() {
            m.keys_total.inc();
        }
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        let engine = &self.store.engine;
        let live = IndexValue::Live(kv.clone());
        self.batch
            .put_cf(engine.cf(CF_KV_INDEX), encoding::index_key(key, rev), live.encode());
        self.batch
            .put_cf(engine.cf(CF_KV_REV), rev.to_bytes(), encoding::encode_rev_value(key, false));
        self.overlay.insert(key.to_vec(), live);
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            // A txn never writes one key twice, so this is the version as of
            // just before this revision, what a watcher asking for prev_kv sees.
            prev_kv: prev,
        });
        Ok(rev.main)
    }

    /// Deletes every live key in `range`. Returns how many were deleted and
    /// the revision the request observes afterwards.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<(i64, i64)> {
        let prevs = self.range_merged(range, 0, 0, false)?.kvs;
        let count = prevs.len() as i64;
        let m = crate::metrics::metrics();
        m.delete_total.inc();
        m.keys_total.sub(count);
        let engine = self.store.engine.clone();
        for prev in prevs {
            let key = prev.key.clone();
            let rev = self.next_revision();
            self.batch.put_cf(
                engine.cf(CF_KV_INDEX),
                encoding::index_key(&key, rev),
                IndexValue::Tombstone.encode(),
            );
            self.batch
                .put_cf(engine.cf(CF_KV_REV), rev.to_bytes(), encoding::encode_rev_value(&key, true));
            self.overlay.insert(key.clone(), IndexValue::Tombstone);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: rev.main,
                    ..Default::default()
                }),
                prev_kv: Some(prev),
            });
        }
        Ok((count, self.current()))
    }

    /// Makes the transaction durable together with whatever `extra` adds to
    /// the batch (the applied index), then publishes the new revision.
    /// Returns the changes as watch events.
    pub fn commit(mut self, extra: impl FnOnce(&mut WriteBatch)) -> Result<Vec<Event>> {
        let engine = self.store.engine.clone();
        let changed = self.has_changes();
        if changed {
            let rev = (self.begin_rev + 1) as u64;
            self.batch.put_cf(engine.cf(CF_META), META_CURRENT_REV, rev.to_be_bytes());
        }
        extra(&mut self.batch);
        // Not synced: the Raft log entry behind this change is already
        // durable, and replay from the applied index recovers it.
        engine.write(self.batch, false)?;
        if changed {
            self.store.current_rev.store(self.begin_rev + 1, Ordering::SeqCst);
        }
        Ok(self.events)
    }
}

impl Reader for WriteTxn<'_> {
    fn rev(&self) -> i64 {
        self.current()
    }

    fn range(&self, range: &KeyRange, rev: i64, limit: usize, count_only: bool) -> Result<RangeResult> {
        self.range_merged(range, rev, limit, count_only)
    }
}
