//! `raft::Storage` over RocksDB.
//!
//! Writes are staged into a caller's `WriteBatch` so the Ready loop can make
//! a whole Ready durable with one fsync; the in-memory bookkeeping is updated
//! only once that write succeeded (`commit_staged`).

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

use crate::error::{Error, Result};
use crate::storage::{Engine, CF_META, CF_RAFT_LOG};

const META_HARD_STATE: &[u8] = b"raft/hard_state";
const META_CONF_STATE: &[u8] = b"raft/conf_state";
const META_TRUNCATED: &[u8] = b"raft/truncated";

pub struct LogStore {
    engine: Arc<Engine>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first stored one.
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    staged_last_index: Option<u64>,
    staged_hard_state: Option<HardState>,
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Loads the log's bookkeeping. A fresh store is created with `voters` as
    /// its initial configuration.
    pub fn open(engine: Arc<Engine>, voters: &[u64]) -> Result<Self> {
        let hard_state = match engine.get_meta(META_HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string()))?,
            None => HardState::default(),
        };
        let conf_state = match engine.get_meta(META_CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string()))?,
            None => {
                let cs = ConfState {
                    voters: voters.to_vec(),
                    ..Default::default()
                };
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    engine.cf(CF_META),
                    META_CONF_STATE,
                    cs.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))?,
                );
                engine.write(batch, true)?;
                cs
            }
        };
        // Log compaction (with snapshots) records where the log now starts;
        // until then nothing was truncated.
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
            engine,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: last_index.max(truncated_index),
            staged_last_index: None,
            staged_hard_state: None,
        })
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

    pub fn stage_conf_state(&mut self, batch: &mut WriteBatch, cs: &ConfState) -> Result<()> {
        batch.put_cf(
            self.engine.cf(CF_META),
            META_CONF_STATE,
            cs.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))?,
        );
        self.conf_state = cs.clone();
        Ok(())
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

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots are needed only to catch up other members.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}
