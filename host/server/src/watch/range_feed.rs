//! Following a key range from a revision on, for the server's own waits
//! (Lock and Election wait for keys to go away): history first, then the
//! live feed, with the same hand-over rule as client watches.

use std::sync::Arc;

use super::{Subscription, WatchHub};
use crate::error::Result;
use crate::mvcc::{KeyRange, MvccStore};
use crate::proto::mvccpb::Event;

/// How many revisions one history read covers.
const HISTORY_BATCH_REVISIONS: usize = 1000;

pub struct RangeFeed {
    hub: Arc<WatchHub>,
    store: Arc<MvccStore>,
    range: KeyRange,
    next: i64,
    live: Option<Subscription>,
}

impl RangeFeed {
    /// Follows `range` from revision `from` (inclusive).
    pub fn new(hub: Arc<WatchHub>, store: Arc<MvccStore>, range: KeyRange, from: i64) -> Self {
        RangeFeed {
            hub,
            store,
            range,
            next: from,
            live: None,
        }
    }

    /// The next changes to the range, in revision order, with the revision
    /// they were read at. Fails with `Compacted` when history is gone.
    pub async fn next(&mut self) -> Result<(i64, Vec<Event>)> {
        loop {
            if let Some(live) = &mut self.live {
                match live.recv().await {
                    Some(batch) if batch.revision >= self.next => {
                        self.next = batch.revision + 1;
                        let events: Vec<Event> = batch
                            .events
                            .iter()
                            .filter(|e| e.kv.as_ref().is_some_and(|kv| self.range.contains(&kv.key)))
                            .cloned()
                            .collect();
                        if !events.is_empty() {
                            return Ok((batch.revision, events));
                        }
                    }
                    Some(_) => {}
                    // Fell behind: back to history.
                    None => self.live = None,
                }
                continue;
            }
            match self.hub.subscribe(&self.range, self.next) {
                Ok(sub) => self.live = Some(sub),
                Err(upto) => {
                    let changes = self.store.changes(&self.range, self.next, upto, HISTORY_BATCH_REVISIONS, false)?;
                    self.next = changes.through + 1;
                    if !changes.events.is_empty() {
                        return Ok((upto, changes.events));
                    }
                }
            }
        }
    }
}
