//! Builds Raft snapshots on a background thread, so dumping a large state
//! never stalls the Ready loop (and with it heartbeats and proposals).
//!
//! At most one snapshot exists or is being built at a time. A build reads
//! the data, the applied index and the configuration from one RocksDB
//! snapshot, which the builder pins while the Ready loop waits: nothing is
//! applied in between, so the three describe the same point in the log.
//! The dump goes to a file under the data dir (see `snapshot`), which the
//! peer transport streams to the follower; the file goes when its build is
//! dropped.

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::ConfState;

use crate::error::{Error, Result};
use crate::storage::schema::{META_APPLIED_INDEX, META_CONF_STATE};
use crate::storage::{Database, CF_META};

use super::snapshot::DumpRef;

/// How long a finished snapshot is kept after it was built or last handed
/// out: long enough for the other followers that lag behind, or a retried
/// transfer, to reuse it; short enough not to hold its memory for good.
const KEEP: Duration = Duration::from_secs(30);

/// The replicated state as of `index`, dumped to `path`.
pub struct Built {
    pub index: u64,
    pub conf_state: ConfState,
    pub reference: DumpRef,
    path: PathBuf,
}

impl Drop for Built {
    fn drop(&mut self) {
        // A transfer that has opened the file goes on reading it.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(dump = %self.path.display(), error = %e, "snapshot dump not removed");
        }
    }
}

enum Slot {
    Empty,
    /// `index` is the applied index the build pinned.
    Building {
        index: u64,
        done: Receiver<Result<Built>>,
    },
    Ready {
        built: Built,
        handed_out: bool,
        last_used: Instant,
    },
}

pub struct SnapshotBuilder {
    engine: Arc<Database>,
    slot: Slot,
}

impl SnapshotBuilder {
    pub fn new(engine: Arc<Database>) -> Self {
        // Dumps a previous run built are of no use to anyone now.
        if let Ok(entries) = std::fs::read_dir(engine.dump_dir()) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("out-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        SnapshotBuilder { engine, slot: Slot::Empty }
    }

    /// The finished snapshot, if there is one.
    pub fn ready(&mut self) -> Option<&Built> {
        self.collect();
        match &self.slot {
            Slot::Ready { built, .. } => Some(built),
            _ => None,
        }
    }

    pub fn is_building(&mut self) -> bool {
        self.collect();
        matches!(self.slot, Slot::Building { .. })
    }

    /// Records that the finished snapshot went to a follower.
    pub fn handed_out(&mut self) {
        if let Slot::Ready { handed_out, last_used, .. } = &mut self.slot {
            *handed_out = true;
            *last_used = Instant::now();
        }
    }

    /// Drops the finished snapshot (a running build goes on).
    pub fn discard(&mut self) {
        if matches!(self.slot, Slot::Ready { .. }) {
            self.slot = Slot::Empty;
        }
    }

    /// Drops a finished snapshot nobody has asked for within [`KEEP`].
    pub fn expire(&mut self) {
        self.collect();
        if let Slot::Ready { last_used, built, .. } = &self.slot {
            if last_used.elapsed() > KEEP {
                tracing::debug!(index = built.index, "unused snapshot dropped");
                self.slot = Slot::Empty;
            }
        }
    }

    /// The lowest log index a snapshot in the making (or not yet sent)
    /// needs to stay in the log: its term is looked up when it is handed out.
    pub fn needs_log_from(&mut self) -> Option<u64> {
        self.collect();
        match &self.slot {
            Slot::Building { index, .. } => Some(*index),
            Slot::Ready {
                built, handed_out: false, ..
            } => Some(built.index),
            _ => None,
        }
    }

    /// Starts a build unless one is running, replacing a finished snapshot.
    /// Returns once the build has pinned its RocksDB snapshot.
    pub fn start(&mut self) -> Result<()> {
        self.collect();
        if matches!(self.slot, Slot::Building { .. }) {
            return Ok(());
        }
        let (pinned_tx, pinned_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let engine = self.engine.clone();
        std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            let started = Instant::now();
            let result = build(&engine, |index| {
                let _ = pinned_tx.send(index);
            });
            if let Ok(built) = &result {
                tracing::info!(
                    index = built.index,
                    bytes = built.reference.len,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot built"
                );
            }
            let _ = done_tx.send(result);
        })?;
        // The wait covers only pinning, not reading the data. A build that
        // failed before pinning reports its error through `done_rx`.
        let index = pinned_rx.recv().unwrap_or(0);
        self.slot = Slot::Building { index, done: done_rx };
        Ok(())
    }

    /// Takes the result of a build that has finished.
    fn collect(&mut self) {
        let Slot::Building { done, .. } = &self.slot else { return };
        match done.try_recv() {
            Ok(Ok(built)) => {
                self.slot = Slot::Ready {
                    built,
                    handed_out: false,
                    last_used: Instant::now(),
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "snapshot build failed");
                self.slot = Slot::Empty;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                tracing::warn!("snapshot build ended without a result");
                self.slot = Slot::Empty;
            }
        }
    }

    /// Blocks until a running build has finished (tests only).
    #[cfg(test)]
    pub fn wait(&mut self) {
        if let Slot::Building { done, .. } = &self.slot {
            let result = done.recv().unwrap_or_else(|_| Err(Error::Corrupt("snapshot build ended".into())));
            self.slot = match result {
                Ok(built) => Slot::Ready {
                    built,
                    handed_out: false,
                    last_used: Instant::now(),
                },
                Err(_) => Slot::Empty,
            };
        }
    }
}

/// Dumps the state from one RocksDB snapshot; `pinned` is called with its
/// applied index as soon as that snapshot is taken.
fn build(engine: &Database, pinned: impl FnOnce(u64)) -> Result<Built> {
    let snap = engine.db().snapshot();
    let meta = engine.cf(CF_META);
    let index = match snap.get_cf(meta, META_APPLIED_INDEX)? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| Error::Corrupt("applied index record".into()))?),
        None => 0,
    };
    pinned(index);
    if index == 0 {
        return Err(Error::Corrupt("nothing applied yet to snapshot".into()));
    }
    let conf_state = match snap.get_cf(meta, META_CONF_STATE)? {
        Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string()))?,
        None => return Err(Error::Corrupt("raft configuration missing".into())),
    };
    let (reference, path) = super::snapshot::build_to_file(engine, &snap, index)?;
    Ok(Built {
        index,
        conf_state,
        reference,
        path,
    })
}
