//! The member's storage: one RocksDB instance ([`Database`]), the schema of
//! what it holds and how each record travels ([`schema`]), the byte layout
//! of the MVCC keys and values ([`encoding`], which the dump checks records
//! against), the one dump format Raft snapshots and backups share
//! ([`dump`]), and how much memory RocksDB is given (`memory`).

mod database;
pub mod dump;
pub mod encoding;
mod memory;
pub mod schema;

pub use database::Database;
pub use schema::{CF_KV_INDEX, CF_KV_REV, CF_META, CF_RAFT_LOG};
