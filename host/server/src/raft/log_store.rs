//! `raft::Storage` over RocksDB.
//!
//! Writes are staged into a caller's `WriteBatch` so the Ready loop can make
//! a whole Ready durable with one fsync; the in-memory bookkeeping is updated
//! only once that write succeeded (`commit_staged`).

use std::cell::RefCell;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

use crate::error::{Error, Result};
use crate::storage::schema::{META_CONF_STATE, META_HARD_STATE, META_TRUNCATED};
use crate::storage::{Database, CF_META, CF_RAFT_LOG};

use super::snapshot_builder::SnapshotBuilder;

pub struct LogStore {
    engine: Arc<Database>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first stored one.
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    staged_last_index: Option<u64>,
    staged_hard_state: Option<HardState>,
    /// The state machine's applied index; the log is compacted only up to it.
    applied_index: u64,
    /// `raft::Storage::snapshot` takes `&self` but starts and hands out
    /// background builds.
    snapshots: RefCell<SnapshotBuilder>,
}

/// Where a bootstrapped log starts. A new cluster begins as if it had
/// compacted a first entry away, so a member that joins later, with an empty
/// log, can only catch up from a snapshot, which carries the configuration
/// (the initial voters are in no log entry).
const BOOTSTRAP_INDEX: u64 = 1;
const BOOTSTRAP_TERM: u64 = 1;

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn truncation_record(index: u64, term: u64) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend_from_slice(&term.to_be_bytes());
    v
}

fn encode(m: &impl protobuf::Message) -> Result<Vec<u8>> {
    m.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))
}

impl LogStore {
    /// Loads the log's bookkeeping. A fresh store is created with `voters` as
    /// its initial configuration; with no voters (a member joining an
    /// existing cluster) it waits for a snapshot from the leader.
    pub fn open(engine: Arc<Database>, voters: &[u64]) -> Result<Self> {
        if engine.get_meta(META_CONF_STATE)?.is_none() {
            Self::bootstrap(&engine, voters)?;
        }
        let hard_state = match engine.get_meta(META_HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string()))?,
            None => HardState::default(),
        };
        let conf_state = match engine.get_meta(META_CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string()))?,
            None => return Err(Error::Corrupt("raft configuration missing".into())),
        };
        // Where the log starts after bootstrap, compaction or a snapshot.
        let (truncated_index, truncated_term) = match engine.get_meta(META_TRUNCATED)? {
            Some(b) if b.len() == 16 => (
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
            ),
            Some(_) => return Err(Error::Corrupt("raft truncation record".into())),
            None => (0, 0),
        };
        let last = engine
            .db()
            .iterator_cf(engine.cf(CF_RAFT_LOG), IteratorMode::End)
            .next()
            .transpose()?;
        let last_index = match last {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::Corrupt("raft log key".into()))?),
            None => 0,
        };
        Ok(LogStore {
            snapshots: RefCell::new(SnapshotBuilder::new(engine.clone())),
            engine,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: last_index.max(truncated_index),
            staged_last_index: None,
            staged_hard_state: None,
            applied_index: 0,
        })
    }

    fn bootstrap(engine: &Database, voters: &[u64]) -> Result<()> {
        let cs = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        let meta = engine.cf(CF_META);
        batch.put_cf(meta, META_CONF_STATE, encode(&cs)?);
        if !voters.is_empty() {
            let hs = HardState {
                term: BOOTSTRAP_TERM,
                commit: BOOTSTRAP_INDEX,
                ..Default::default()
            };
            batch.put_cf(meta, META_HARD_STATE, encode(&hs)?);
            batch.put_cf(meta, META_TRUNCATED, truncation_record(BOOTSTRAP_INDEX, BOOTSTRAP_TERM));
        }
        engine.write(batch, true)
    }

    /// The index of the last entry compacted away (0 if none).
    pub fn first_index_before(&self) -> u64 {
        self.truncated_index
    }

    /// Makes the recorded commit index at least `index`.
    pub fn raise_commit(&mut self, index: u64) -> Result<()> {
        if self.hard_state.commit >= index {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = index;
        let mut batch = WriteBatch::default();
        self.stage_hard_state(&mut batch, &hs)?;
        self.engine.write(batch, true)?;
        self.commit_staged();
        Ok(())
    }

    pub fn set_applied(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Drops the log up to and including `index`, which must be applied.
    /// A snapshot being built, or built and not yet sent, keeps its entry:
    /// its term is needed to hand it out.
    pub fn compact_to(&mut self, index: u64) -> Result<()> {
        let index = match self.snapshots.get_mut().needs_log_from() {
            Some(kept) => index.min(kept),
            None => index,
        };
        if index <= self.truncated_index || index > self.applied_index.min(self.last_index) {
            return Ok(());
        }
        let term = self
            .read_entry(index)
            .map_err(|e| Error::Corrupt(format!("raft log entry {index}: {e}")))?
            .term;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.engine.cf(CF_META), META_TRUNCATED, truncation_record(index, term));
        batch.delete_range_cf(self.engine.cf(CF_RAFT_LOG), log_key(self.truncated_index + 1), log_key(index + 1));
        self.engine.write(batch, false)?;
        tracing::debug!(index, term, "raft log compacted");
        self.truncated_index = index;
        self.truncated_term = term;
        Ok(())
    }

    /// Replaces the state machine's data and the whole log with `snapshot`,
    /// whose dump the peer transport staged; durable when it returns.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        super::snapshot::install(&self.engine, snapshot, &hs)?;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.applied_index = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state = hs;
        // A snapshot of the state just replaced is of no use to anyone.
        self.snapshots.get_mut().discard();
        Ok(())
    }

    /// Blocks until a snapshot build that is running has finished.
    #[cfg(test)]
    fn wait_for_snapshot(&self) {
        self.snapshots.borrow_mut().wait();
    }

    /// Frees a built snapshot that has not been asked for in a while.
    pub fn expire_snapshot(&mut self) {
        self.snapshots.get_mut().expire();
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Stages `entries` (consecutive, possibly overwriting a conflicting
    /// suffix of the log).
    pub fn stage_append(&mut self, batch: &mut WriteBatch, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        let cf = self.engine.cf(CF_RAFT_LOG);
        for e in entries {
            batch.put_cf(cf, log_key(e.index), e.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))?);
        }
        let new_last = first.index + entries.len() as u64 - 1;
        let current_last = self.staged_last_index.unwrap_or(self.last_index);
        if new_last < current_last {
            batch.delete_range_cf(cf, log_key(new_last + 1), log_key(current_last + 1));
        }
        self.staged_last_index = Some(new_last);
        Ok(())
    }

    pub fn stage_hard_state(&mut self, batch: &mut WriteBatch, hs: &HardState) -> Result<()> {
        batch.put_cf(
            self.engine.cf(CF_META),
            META_HARD_STATE,
            hs.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))?,
        );
        self.staged_hard_state = Some(hs.clone());
        Ok(())
    }

    #[cfg(test)]
    pub fn stage_conf_state(&mut self, batch: &mut WriteBatch, cs: &ConfState) -> Result<()> {
        batch.put_cf(self.engine.cf(CF_META), META_CONF_STATE, encode(cs)?);
        self.conf_state = cs.clone();
        Ok(())
    }

    /// The configuration Raft now runs with; it reaches disk separately, on
    /// the apply thread, with the entry that made it ([`Self::persist_conf_state`]).
    pub fn set_conf_state(&mut self, cs: &ConfState) {
        self.conf_state = cs.clone();
    }

    /// Records the configuration as of the entry being applied.
    pub fn persist_conf_state(engine: &Database, cs: &ConfState) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(engine.cf(CF_META), META_CONF_STATE, encode(cs)?);
        engine.write(batch, false)
    }

    /// Called once the batch holding the staged changes is durable.
    pub fn commit_staged(&mut self) {
        if let Some(last) = self.staged_last_index.take() {
            self.last_index = last;
        }
        if let Some(hs) = self.staged_hard_state.take() {
            self.hard_state = hs;
        }
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let raw = self
            .engine
            .db()
            .get_cf(self.engine.cf(CF_RAFT_LOG), log_key(index))
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Entry::parse_from_bytes(&raw).map_err(raft::Error::CodecError)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _ctx: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(log_key(high).to_vec());
        let iter = self.engine.db().iterator_cf_opt(
            self.engine.cf(CF_RAFT_LOG),
            opts,
            IteratorMode::From(&log_key(low), rocksdb::Direction::Forward),
        );
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for item in iter {
            let (_, v) = item.map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            let e = Entry::parse_from_bytes(&v).map_err(raft::Error::CodecError)?;
            size += e.compute_size() as u64;
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// A snapshot built in the background. While none is ready, one build
    /// is started and raft-rs is told to try again later
    /// (`SnapshotTemporarilyUnavailable`): the leader then asks again on the
    /// follower's next heartbeat response.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut builder = self.snapshots.borrow_mut();
        let ready = builder.ready().map(|b| (b.index, b.reference, b.conf_state.clone()));
        if let Some((index, reference, conf_state)) = ready {
            // A snapshot whose term has been compacted away cannot be
            // placed in the log any more; one older than asked for is no
            // use either.
            match self.term(index) {
                Ok(term) if index >= request_index => {
                    let bytes = reference.len;
                    let mut snapshot = Snapshot {
                        data: reference.encode().into(),
                        ..Default::default()
                    };
                    let meta = snapshot.mut_metadata();
                    meta.index = index;
                    meta.term = term;
                    meta.set_conf_state(conf_state);
                    tracing::info!(index, term, to = %format!("{to:x}"), bytes, "sending snapshot");
                    builder.handed_out();
                    return Ok(snapshot);
                }
                _ => builder.discard(),
            }
        }
        if !builder.is_building() {
            tracing::info!(to = %format!("{to:x}"), applied = self.applied_index, "building snapshot in the background");
        }
        if let Err(e) = builder.start() {
            tracing::warn!(error = %e, "snapshot build not started");
        }
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;
    use crate::storage::encoding::{index_key, Revision};
    use crate::storage::schema::META_APPLIED_INDEX;
    use crate::storage::CF_KV_INDEX;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("entry {index}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn unavailable(r: raft::Result<Snapshot>) -> bool {
        matches!(r, Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)))
    }

    /// What applying entry `index` leaves on disk: a key of its own and the
    /// applied index, in one write.
    fn apply(engine: &Database, index: u64) {
        let mut b = WriteBatch::default();
        b.put_cf(
            engine.cf(CF_KV_INDEX),
            index_key(format!("k{index:06}").as_bytes(), Revision::new(index as i64, 0)),
            index.to_be_bytes(),
        );
        b.put_cf(engine.cf(CF_META), META_APPLIED_INDEX, index.to_be_bytes());
        engine.write(b, false).unwrap();
    }

    fn store_with_entries(dir: &std::path::Path, last: u64) -> LogStore {
        let engine = Database::open(dir).unwrap();
        let mut store = LogStore::open(engine.clone(), &[1, 2, 3]).unwrap();
        let entries: Vec<Entry> = (BOOTSTRAP_INDEX + 1..=last).map(|i| entry(i, 2)).collect();
        let mut batch = WriteBatch::default();
        store.stage_append(&mut batch, &entries).unwrap();
        engine.write(batch, true).unwrap();
        store.commit_staged();
        store
    }

    #[test]
    fn bootstrap_starts_after_a_compacted_first_entry() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let store = LogStore::open(engine, &[1, 2, 3]).unwrap();
        assert_eq!(store.first_index().unwrap(), BOOTSTRAP_INDEX + 1);
        assert_eq!(store.last_index().unwrap(), BOOTSTRAP_INDEX);
        assert_eq!(store.term(BOOTSTRAP_INDEX).unwrap(), BOOTSTRAP_TERM);
        assert_eq!(store.hard_state().commit, BOOTSTRAP_INDEX);
        assert_eq!(store.conf_state().voters, vec![1, 2, 3]);
        // A member joining an existing cluster starts empty.
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(Database::open(dir.path()).unwrap(), &[]).unwrap();
        assert_eq!(store.first_index().unwrap(), 1);
        assert_eq!(store.last_index().unwrap(), 0);
        assert!(store.conf_state().voters.is_empty());
    }

    #[test]
    fn compaction_survives_reopen_and_reports_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_entries(dir.path(), 50);
        store.set_applied(40);
        store.compact_to(45).unwrap(); // beyond applied: refused
        assert_eq!(store.first_index().unwrap(), BOOTSTRAP_INDEX + 1);
        store.compact_to(30).unwrap();
        assert_eq!(store.first_index().unwrap(), 31);
        assert!(matches!(store.term(29), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(store.term(30).unwrap(), 2);
        assert!(matches!(
            store.entries(30, 40, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(store.entries(31, 51, None, GetEntriesContext::empty(false)).unwrap().len(), 20);
        drop(store);
        let store = LogStore::open(Database::open(dir.path()).unwrap(), &[1, 2, 3]).unwrap();
        assert_eq!(store.first_index().unwrap(), 31);
        assert_eq!(store.last_index().unwrap(), 50);
    }

    #[test]
    fn snapshot_carries_applied_index_and_replaces_the_log_on_install() {
        let src_dir = tempfile::tempdir().unwrap();
        let mut src = store_with_entries(src_dir.path(), 20);
        apply(&src.engine, 15);
        src.set_applied(15);
        assert!(unavailable(src.snapshot(0, 9)));
        src.wait_for_snapshot();
        let snap = src.snapshot(0, 9).unwrap();
        assert_eq!(snap.get_metadata().index, 15);
        assert_eq!(snap.get_metadata().term, 2);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);

        let dst_dir = tempfile::tempdir().unwrap();
        let mut dst = store_with_entries(dst_dir.path(), 5);
        super::super::snapshot::hand_over(&src.engine, &dst.engine, &snap);
        dst.install_snapshot(&snap).unwrap();
        assert_eq!(dst.first_index().unwrap(), 16);
        assert_eq!(dst.last_index().unwrap(), 15);
        assert_eq!(dst.term(15).unwrap(), 2);
        assert!(dst.hard_state().commit >= 15);
        drop(dst);
        let dst = LogStore::open(Database::open(dst_dir.path()).unwrap(), &[]).unwrap();
        assert_eq!(dst.first_index().unwrap(), 16);
        assert_eq!(dst.conf_state().voters, vec![1, 2, 3]);
    }

    #[test]
    fn snapshot_data_index_and_configuration_agree_while_applying_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_entries(dir.path(), 3000);
        let engine = store.engine.clone();
        for i in 2..=2000 {
            apply(&engine, i);
        }
        let mut batch = WriteBatch::default();
        let four = ConfState {
            voters: vec![1, 2, 3, 4],
            ..Default::default()
        };
        store.stage_conf_state(&mut batch, &four).unwrap();
        engine.write(batch, false).unwrap();
        store.set_applied(2000);
        assert!(unavailable(store.snapshot(0, 9)));
        // Applied while the snapshot may still be building.
        for i in 2001..=2500 {
            apply(&engine, i);
        }
        let mut batch = WriteBatch::default();
        let five = ConfState {
            voters: vec![1, 2, 3, 4, 5],
            ..Default::default()
        };
        store.stage_conf_state(&mut batch, &five).unwrap();
        engine.write(batch, false).unwrap();
        store.set_applied(2500);
        // Only one build at a time: asking again while it runs starts none.
        let second = store.snapshot(0, 9);
        store.wait_for_snapshot();
        let snap = match second {
            Ok(snap) => snap,
            Err(e) => {
                assert!(unavailable(Err(e)));
                store.snapshot(0, 9).unwrap()
            }
        };
        let meta = snap.get_metadata();
        assert_eq!(meta.index, 2000);
        assert_eq!(meta.get_conf_state().voters, four.voters);

        let dst_dir = tempfile::tempdir().unwrap();
        let mut dst = LogStore::open(Database::open(dst_dir.path()).unwrap(), &[]).unwrap();
        super::super::snapshot::hand_over(&engine, &dst.engine, &snap);
        dst.install_snapshot(&snap).unwrap();
        let dst = dst.engine.clone();
        assert_eq!(dst.get_meta_u64(META_APPLIED_INDEX).unwrap(), Some(2000));
        let keys: Vec<u64> = dst
            .db()
            .iterator_cf(dst.cf(CF_KV_INDEX), IteratorMode::Start)
            .map(|item| u64::from_be_bytes(item.unwrap().1.as_ref().try_into().unwrap()))
            .collect();
        assert_eq!(keys, (2..=2000).collect::<Vec<_>>());

        // Once the log is compacted past it, the snapshot cannot be sent
        // any more and a new one, of the current state, is built.
        store.compact_to(2400).unwrap();
        assert!(unavailable(store.snapshot(0, 9)));
        store.wait_for_snapshot();
        let snap = store.snapshot(0, 9).unwrap();
        assert_eq!(snap.get_metadata().index, 2500);
        assert_eq!(snap.get_metadata().get_conf_state().voters, five.voters);
    }
}
