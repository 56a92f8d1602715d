//! The watch hub: where the apply loop publishes each committed revision's
//! events, and where watchers that are caught up ("synced", in etcd's terms)
//! receive them live.
//!
//! Publishing never waits for a watcher. Each synced watcher has a bounded
//! buffer; one that is full is dropped from the live feed (its buffer still
//! drains), and its owner catches up from MVCC history before subscribing
//! again. The hub remembers the last revision it published, and a watcher
//! may subscribe only once it has read history through that revision, so
//! between history and the live feed no revision is missed or repeated.

mod range_feed;

pub use range_feed::RangeFeed;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::mvcc::KeyRange;
use crate::proto::mvccpb::Event;

/// How many revisions a synced watcher may have buffered before it is moved
/// off the live feed (etcd's `chanBufLen`).
pub const WATCHER_BUFFER_REVISIONS: usize = 128;

/// All events of one committed revision.
#[derive(Debug)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

struct Synced {
    range: KeyRange,
    tx: mpsc::Sender<Arc<RevisionEvents>>,
}

struct HubState {
    last_published: i64,
    next_id: u64,
    synced: HashMap<u64, Synced>,
}

pub struct WatchHub {
    state: Mutex<HubState>,
}

/// A watcher's place on the live feed. Dropping it leaves the feed.
pub struct Subscription {
    hub: Arc<WatchHub>,
    id: u64,
    rx: mpsc::Receiver<Arc<RevisionEvents>>,
}

impl Subscription {
    /// The next revision with changes in the watcher's range, in order.
    /// `None` means the watcher fell behind and was dropped from the feed
    /// after everything buffered was received: it must catch up from
    /// history, from the revision after the last one it got.
    pub async fn recv(&mut self) -> Option<Arc<RevisionEvents>> {
        self.rx.recv().await
    }

    /// What is buffered already, without waiting: `Empty` means every
    /// revision published so far that touches the range has been received.
    pub fn try_recv(&mut self) -> Result<Arc<RevisionEvents>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.state.lock().synced.remove(&self.id);
    }
}

impl WatchHub {
    /// A hub whose history ends at `current_revision`.
    pub fn new(current_revision: i64) -> Arc<Self> {
        Arc::new(WatchHub {
            state: Mutex::new(HubState {
                last_published: current_revision,
                next_id: 0,
                synced: HashMap::new(),
            }),
        })
    }

    /// The last revision handed to synced watchers; history holds every
    /// revision up to it.
    pub fn last_published(&self) -> i64 {
        self.state.lock().last_published
    }

    /// After a snapshot replaced the state, the live feed jumps to
    /// `revision`: every synced watcher leaves it and catches up from
    /// history (or learns its revisions were compacted away).
    pub fn restored(&self, revision: i64) {
        let mut state = self.state.lock();
        state.last_published = revision;
        state.synced.clear();
    }

    /// Hands a committed revision to the synced watchers whose range it
    /// touches. Called by the apply loop after the revision is durable and
    /// readable, in revision order.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        let batch = Arc::new(RevisionEvents { revision, events });
        let mut state = self.state.lock();
        state.last_published = revision;
        state.synced.retain(|_, w| {
            if !batch
                .events
                .iter()
                .any(|e| e.kv.as_ref().is_some_and(|kv| w.range.contains(&kv.key)))
            {
                return true;
            }
            // A full or abandoned buffer: off the feed, without waiting.
            w.tx.try_send(batch.clone()).is_ok()
        });
    }

    /// Joins the live feed for `range` from revision `next`. Succeeds only
    /// when every revision before `next` has been published (the caller has
    /// read history that far); otherwise returns the last published
    /// revision, through which the caller should read history first.
    pub fn subscribe(self: &Arc<Self>, range: &KeyRange, next: i64) -> Result<Subscription, i64> {
        let mut state = self.state.lock();
        if next <= state.last_published {
            return Err(state.last_published);
        }
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER_REVISIONS);
        let id = state.next_id;
        state.next_id += 1;
        state.synced.insert(id, Synced { range: range.clone(), tx });
        Ok(Subscription { hub: self.clone(), id, rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn subscribing_requires_history_through_the_last_published_revision() {
        let hub = WatchHub::new(5);
        let range = KeyRange::new(b"a", b"");
        assert_eq!(hub.subscribe(&range, 5).err(), Some(5));
        let mut sub = hub.subscribe(&range, 6).map_err(|_| "subscribe").unwrap();
        hub.publish(6, vec![put("b", 6)]);
        hub.publish(7, vec![put("a", 7)]);
        let got = sub.recv().await.unwrap();
        assert_eq!(got.revision, 7);
        assert_eq!(hub.subscribe(&range, 7).err(), Some(7));
    }

    #[tokio::test]
    async fn a_full_buffer_drops_the_watcher_after_what_it_buffered() {
        let hub = WatchHub::new(1);
        let range = KeyRange::new(b"k", b"");
        let mut sub = hub.subscribe(&range, 2).map_err(|_| "subscribe").unwrap();
        let last = 2 + WATCHER_BUFFER_REVISIONS as i64 + 3;
        for rev in 2..=last {
            hub.publish(rev, vec![put("k", rev)]);
        }
        let mut seen = Vec::new();
        while let Some(b) = sub.recv().await {
            seen.push(b.revision);
        }
        let want: Vec<i64> = (2..2 + WATCHER_BUFFER_REVISIONS as i64).collect();
        assert_eq!(seen, want);
        assert!(hub.state.lock().synced.is_empty());
    }
}
