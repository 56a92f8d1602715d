//! bbolt database files, the format of etcd's backend and of the snapshots
//! `etcdctl snapshot save` writes, read and written without holding a
//! database in memory.
//!
//! A file is a sequence of pages of one size. Pages 0 and 1 are meta pages
//! (the valid one with the higher transaction id is current); the current
//! meta names the root bucket's page and the freelist page. A bucket is a
//! B+tree of branch and leaf pages; a small bucket may be stored inline, as
//! a page inside its parent's leaf value. Everything is little-endian.
//!
//! [`Db`] reads pages one at a time with positioned reads, so a cursor
//! holds one page per tree level. [`Writer`] takes each bucket's keys in
//! order, writes each leaf page as it fills and builds the branch levels
//! from the (first key, page) list of the level below, so it holds one
//! page and those lists, never the tree.
//!
//! Why not the `bbolt-rs` crate (a port of bbolt 1.3.10): it depends on
//! derive-macro crates (bytemuck's derive, getset, fake, clap's derive)
//! and more than twenty others, and its writer is bbolt's own, a
//! transaction that keeps every page it touches in memory until commit,
//! where a snapshot export wants one pass with bounded memory. Reading
//! needs only the page layout, which has not changed since bbolt 1.3
//! (version 2; etcd 3.6's bbolt 1.4 writes the same pages).

mod layout;
mod read;
mod write;

pub use layout::{fnv64a, DEFAULT_PAGE_SIZE, MAGIC, VERSION};
pub use read::{Bucket, Cursor, Db, Entry};
pub use write::{BucketWriter, Writer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a bbolt database at all (no valid meta page).
    #[error("not a bbolt database: {0}")]
    NotBolt(String),
    /// A bbolt database whose pages contradict each other.
    #[error("corrupt bbolt database: {0}")]
    Corrupt(String),
    /// What the caller asked the writer for breaks bbolt's rules.
    #[error("bbolt writer: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
