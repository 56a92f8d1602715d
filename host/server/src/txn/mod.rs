//! etcd's KV request semantics over MVCC (etcd keeps them in `txn.go`):
//! request validation, Range with its sorting and filters, and the writes
//! (Put, DeleteRange, nested Txn).
//!
//! A write is first turned into a [`WritePlan`] against the state before it:
//! the branch each (nested) txn takes, each put's final value and lease, and
//! every check that can refuse it. Plugin hooks judge that plan and apply
//! executes it, so the compares and `ignore_value` lookups run once.
//!
//! The same functions serve reads on any member and writes in the apply
//! loop, so a request means exactly the same thing on both paths.

mod compare;
mod execute;
mod plan;
mod range;
mod validate;

#[cfg(test)]
mod tests;

pub use execute::{execute, txn, TxnTarget, WriteResponse};
pub use plan::{Change, PlannedPut, Write, WritePlan};
pub use range::{may_read_many, range, txn_may_read_many};
pub use validate::{is_read_only, validate_delete_range, validate_put, validate_range, validate_txn};

use crate::proto::etcdserverpb::ResponseHeader;

/// Answers whether a lease exists; puts may only attach existing leases.
pub trait LeaseLookup {
    fn lease_exists(&self, id: i64) -> bool;
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}
