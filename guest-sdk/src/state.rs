//! Read-only access to the store at the revision being applied (the
//! `state` import of the admission and validate worlds).
//!
//! Every member answers these calls from the same committed state, so they
//! are as deterministic as the plugin's arguments. A watch plugin has no
//! state import: calling these from one makes componentizing it fail.
//! Outside Wasm these functions panic: test plugin logic natively by passing
//! the reads in as closures (see the `quota` plugin).

use crate::bindings::admission::cairn::plugin::state as raw;
use crate::KeyValue;

/// The current version of `key`, if it exists.
pub fn get(key: &[u8]) -> Option<KeyValue> {
    raw::get(key)
}

/// Whether `key` exists.
pub fn exists(key: &[u8]) -> bool {
    raw::get(key).is_some()
}

/// How many keys exist in `[key, range_end)`, by etcd's range conventions
/// (an empty `range_end` means just `key`; `"\0"` means every key from `key`).
pub fn range_count(key: &[u8], range_end: &[u8]) -> u64 {
    raw::range_count(key, range_end)
}

/// How many keys start with `prefix`.
pub fn prefix_count(prefix: &[u8]) -> u64 {
    raw::range_count(prefix, &crate::prefix_end(prefix))
}
