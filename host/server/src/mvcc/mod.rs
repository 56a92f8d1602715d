//! Multi-version key-value storage with etcd's revision semantics.
//!
//! Every committed write request gets one main revision; each change inside it
//! gets a sub-revision. Versions of a key are kept until compaction, so reads
//! can be served at any uncompacted revision. Both the key index and the
//! values live in RocksDB (`storage`), so the data set may outgrow memory.

mod compactor;
mod history;
mod read;
mod write;

#[cfg(test)]
mod model_test;

pub use crate::storage::encoding::Revision;
pub use history::Changes;
pub use read::{KeyRange, MvccStore, RangeResult, ReadView, Reader};
pub use write::WriteTxn;
