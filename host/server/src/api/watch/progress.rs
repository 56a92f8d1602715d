//! The answer to `WatchRequest{progress_request}`: a response for the whole
//! stream (watch id -1) at a revision R that promises every event of every
//! watch on the stream up to R has been sent before it, and none after.
//! Kubernetes' consistent reads from its watch cache rest on that promise
//! (etcd once broke it: etcd-io/etcd#15220).
//!
//! The watches of a stream deliver from tasks of their own, so the stream
//! gets the promise by a hold: it picks R (the last published revision),
//! and each watch sends what it has through R and then stops short of
//! anything later, saying so. When all have, the stream sends the progress
//! response and lifts the hold. A watch still catching up from history
//! holds the answer until it reaches R, as etcd defers the answer until
//! every watcher is synced. R is read under the same lock a watch checks
//! the hold under, so whatever a watch sent without seeing the hold was
//! published before R was read, and is at or below it.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::watch::WatchHub;

/// One progress request being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hold {
    generation: u64,
    pub revision: i64,
}

struct GateState {
    /// The watches of the stream still running.
    members: HashSet<i64>,
    /// Those yet to reach the hold's revision.
    waiting: HashSet<i64>,
    hold: Option<Hold>,
    generation: u64,
}

pub(super) struct ProgressGate {
    state: Mutex<GateState>,
    /// Wakes watches when a hold starts or ends.
    changes: watch::Sender<u64>,
    /// Wakes the stream when a watch reached the hold or left.
    settled: Notify,
}

impl ProgressGate {
    pub fn new() -> Arc<Self> {
        Arc::new(ProgressGate {
            state: Mutex::new(GateState {
                members: HashSet::new(),
                waiting: HashSet::new(),
                hold: None,
                generation: 0,
            }),
            changes: watch::channel(0).0,
            settled: Notify::new(),
        })
    }

    /// Enrols watch `id`; a hold already on waits for it too.
    pub fn join(self: &Arc<Self>, id: i64) -> GateMember {
        let mut state = self.state.lock();
        state.members.insert(id);
        if state.hold.is_some() {
            state.waiting.insert(id);
        }
        GateMember {
            gate: self.clone(),
            id,
            changes: self.changes.subscribe(),
            done: None,
        }
    }

    /// Starts a hold at the last published revision; false when one is on
    /// already (its answer serves this request too, as in etcd).
    pub fn begin(&self, hub: &WatchHub) -> bool {
        let mut state = self.state.lock();
        if state.hold.is_some() {
            return false;
        }
        state.generation += 1;
        state.hold = Some(Hold {
            generation: state.generation,
            revision: hub.last_published(),
        });
        state.waiting = state.members.clone();
        drop(state);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    pub fn holding(&self) -> bool {
        self.state.lock().hold.is_some()
    }

    /// The hold's revision once every watch has reached it.
    pub fn reached(&self) -> Option<i64> {
        let state = self.state.lock();
        state.hold.filter(|_| state.waiting.is_empty()).map(|h| h.revision)
    }

    /// Ends the hold, after its answer was sent.
    pub fn release(&self) {
        self.state.lock().hold = None;
        self.changes.send_modify(|n| *n += 1);
    }

    /// Resolves after a watch reached the hold or left (perhaps spuriously).
    pub async fn settled(&self) {
        self.settled.notified().await
    }

    fn reach(&self, id: i64, hold: Hold) {
        let mut state = self.state.lock();
        if state.hold == Some(hold) && state.waiting.remove(&id) && state.waiting.is_empty() {
            self.settled.notify_one();
        }
    }
}

/// A watch's side of the gate. Dropping it (the watch ended or was
/// canceled) stops the stream waiting for it.
pub(super) struct GateMember {
    gate: Arc<ProgressGate>,
    id: i64,
    changes: watch::Receiver<u64>,
    /// The last hold this watch reached.
    done: Option<Hold>,
}

impl GateMember {
    /// The hold on now. Marks the gate's changes seen: read this before
    /// deciding to wait in [`GateMember::changed`].
    pub fn hold(&mut self) -> Option<Hold> {
        self.changes.mark_unchanged();
        self.gate.state.lock().hold
    }

    /// Whether this watch said it reached `hold`.
    pub fn has_reached(&self, hold: Hold) -> bool {
        self.done == Some(hold)
    }

    /// Everything of this watch through `hold`'s revision has been sent,
    /// and nothing later will be until it ends.
    pub fn reached(&mut self, hold: Hold) {
        if self.done != Some(hold) {
            self.done = Some(hold);
            self.gate.reach(self.id, hold);
        }
    }

    /// Resolves when a hold starts or ends after the last [`GateMember::hold`].
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for GateMember {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock();
        state.members.remove(&self.id);
        if state.waiting.remove(&self.id) && state.waiting.is_empty() {
            self.gate.settled.notify_one();
        }
    }
}
