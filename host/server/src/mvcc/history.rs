//! Replaying history: the changes made in a span of revisions, read back as
//! watch events. Watchers that start in the past, or that fell behind the
//! live feed, catch up through here.

use rocksdb::ReadOptions;

use super::read::{KeyRange, MvccStore};
use crate::error::{Error, Result};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use crate::storage::encoding::{self, IndexValue, Revision};
use crate::storage::{CF_KV_INDEX, CF_KV_REV};

/// Changes read from history, in revision order.
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<Event>,
    /// The last revision the read covered: the caller's next read starts
    /// after it. Never splits a revision.
    pub through: i64,
}

impl MvccStore {
    /// The changes to keys in `range` made in revisions `from..=to`, at most
    /// `max_revs` revisions of them (the rest are for the next call). With
    /// `prev_kv`, each event that is not a creation carries the key's
    /// version just before it, when history still has it.
    ///
    /// Fails with [`Error::Compacted`] when part of the span was compacted.
    pub fn changes(&self, range: &KeyRange, from: i64, to: i64, max_revs: usize, prev_kv: bool) -> Result<Changes> {
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        let snapshot = self.engine.db().snapshot();
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        opts.set_iterate_upper_bound(Revision::new(to + 1, 0).to_bytes().to_vec());
        let db = self.engine.db();
        let index_cf = self.engine.cf(CF_KV_INDEX);
        let mut it = db.raw_iterator_cf_opt(self.engine.cf(CF_KV_REV), opts);
        it.seek(Revision::new(from, 0).to_bytes());
        let mut changes = Changes {
            events: Vec::new(),
            through: to,
        };
        let mut revs_seen = 0usize;
        let mut last_main = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev = Revision::from_bytes(k)?;
            if rev.main != last_main {
                if revs_seen == max_revs {
                    changes.through = last_main;
                    break;
                }
                revs_seen += 1;
                last_main = rev.main;
            }
            let (tombstone, key) = encoding::decode_rev_value(v)?;
            if range.contains(key) {
                let kv = if tombstone {
                    KeyValue {
                        key: key.to_vec(),
                        mod_revision: rev.main,
                        ..Default::default()
                    }
                } else {
                    let mut ro = ReadOptions::default();
                    ro.set_snapshot(&snapshot);
                    let raw = db
                        .get_cf_opt(index_cf, encoding::index_key(key, rev), &ro)?
                        .ok_or_else(|| Error::Corrupt(format!("revision {}.{} has no index entry", rev.main, rev.sub)))?;
                    match IndexValue::decode(&raw)? {
                        IndexValue::Live(kv) => kv,
                        IndexValue::Tombstone => return Err(Error::Corrupt("revision log and index disagree".into())),
                    }
                };
                let is_create = !tombstone && kv.create_revision == kv.mod_revision;
                let prev = if prev_kv && !is_create {
                    self.version_before(key, rev.main)?
                } else {
                    None
                };
                changes.events.push(Event {
                    r#type: if tombstone { EventType::Delete } else { EventType::Put } as i32,
                    kv: Some(kv),
                    prev_kv: prev,
                });
            }
            it.next();
        }
        it.status()?;
        // Compaction may have removed part of what was just read.
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(changes)
    }

    /// The live version of `key` as of revision `rev - 1`, if history has it.
    fn version_before(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        match self.range(&KeyRange::Single(key.to_vec()), rev - 1, 1, false) {
            Ok(r) => Ok(r.kvs.into_iter().next()),
            // As in etcd, a compacted previous version is simply left out.
            Err(Error::Compacted) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
