//! Since when this member has had a working connection to each peer, as
//! etcd's transport tracks it: the strict reconfiguration checks refuse a
//! membership change that the members this one can actually reach could not
//! carry.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Default)]
pub struct PeerActivity {
    since: Mutex<HashMap<u64, Instant>>,
}

impl PeerActivity {
    /// A connection to `id` is up; keeps the earlier time if it already was.
    pub fn activate(&self, id: u64) {
        self.since.lock().entry(id).or_insert_with(Instant::now);
    }

    /// The connection to `id` broke: a later one starts a new period.
    pub fn deactivate(&self, id: u64) {
        self.since.lock().remove(&id);
    }

    /// When the current connection to `id` came up, if there is one.
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.since.lock().get(&id).copied()
    }
}
