//! Cairn: an etcd v3 compatible key-value store.
//!
//! The layers, from the wire inwards:
//! - [`api`]: etcd's gRPC services; the only place errors become statuses.
//! - [`member`]: one running member (etcd's `EtcdServer`): proposals, reads,
//!   the lease clock and forwarding, bootstrap and reconfiguration checks.
//! - [`txn`]: etcd's request semantics (ranges, puts, txns) over MVCC, and
//!   the write plan every applied write is decided by.
//! - [`apply`]: the state machine that applies committed requests.
//! - [`alarm`]: the replicated alarms (NOSPACE, CORRUPT) and the quota.
//! - [`raft`]: consensus, the Ready loop and the durable Raft log.
//! - [`mvcc`]: revisions, history and compaction over RocksDB.
//! - [`storage`]: the RocksDB instance they share, the schema of what it
//!   holds, and the dump format snapshots and backups share.

pub mod alarm;
pub mod api;
pub mod apply;
pub mod auth;
pub mod authority_repair;
pub mod backup;
pub mod client_identity;
pub mod config;
pub mod error;
pub mod etcd_format;
pub mod failpoint;
pub mod feature_gates;
pub mod http;
pub mod lease;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod mvcc;
pub mod peer;
pub mod plugin;
pub mod raft;
pub mod sd_notify;
pub mod server;
pub mod storage;
pub mod tls;
pub mod txn;
pub mod watch;

/// The wire types, under the name every module of this crate uses.
pub use cairn_proto as proto;
