//! Consensus: a raft-rs `RawNode` driven by a Ready loop, with its log and
//! hard state in RocksDB. It knows nothing about keys and values: committed
//! entries are handed, in order, to a [`StateMachine`].

#[cfg(test)]
mod cluster_test;
mod log_store;
mod node;
mod read_gate;
pub(crate) mod snapshot;
mod snapshot_builder;

pub use log_store::LogStore;
pub use node::{LogLimits, MessageSink, Node, NodeHandle, RaftStatus, StateMachine, ELECTION_TIMEOUT};
