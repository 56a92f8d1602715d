//! The write plan: what one write request will do, decided once against the
//! state before it, so that every later step (plugin checks, execution)
//! reads the same decisions instead of re-deriving them.

use super::compare::{branch, succeeds};
use super::LeaseLookup;
use crate::error::{Error, Result};
use crate::mvcc::{KeyRange, Reader};
use crate::proto::etcdserverpb::{request_op::Request, DeleteRangeRequest, PutRequest, TxnRequest};
use crate::proto::mvccpb::KeyValue;

/// A write request as it arrives in a Raft entry (or, for read-only txns,
/// at the API).
#[derive(Clone, Copy, Debug)]
pub enum Write<'r> {
    Put(&'r PutRequest),
    DeleteRange(&'r DeleteRangeRequest),
    Txn(&'r TxnRequest),
}

/// A put as it will be stored.
#[derive(Debug)]
pub struct PlannedPut<'r> {
    pub request: &'r PutRequest,
    /// The value stored: the previous one under `ignore_value`.
    pub value: Vec<u8>,
    /// The lease attached: the previous one under `ignore_lease`.
    pub lease: i64,
    /// The key-value before the put, when the request needs it.
    pub prev: Option<KeyValue>,
}

/// One change a plan makes, in execution order.
#[derive(Debug)]
pub enum Change<'r> {
    Put(PlannedPut<'r>),
    DeleteRange(&'r DeleteRangeRequest),
}

impl Change<'_> {
    /// The keys the change writes.
    pub fn range(&self) -> KeyRange {
        match self {
            Change::Put(p) => KeyRange::Single(p.request.key.clone()),
            Change::DeleteRange(d) => KeyRange::new(&d.key, &d.range_end),
        }
    }
}

/// What a write will do.
#[derive(Debug)]
pub struct WritePlan<'r> {
    pub request: Write<'r>,
    /// The revision the plan was decided at.
    pub revision: i64,
    /// Depth first, whether each txn on the executed path takes its success
    /// branch (empty for a plain put or delete).
    pub(super) branches: Vec<bool>,
    /// Every change, nested txns flattened in order; ranges are not listed.
    pub changes: Vec<Change<'r>>,
}

impl<'r> WritePlan<'r> {
    /// Decides `request` against `view`, the state before it. `Err` is the
    /// request's refusal (the same on every member) or a failed read.
    pub fn new(view: &dyn Reader, request: Write<'r>, leases: &dyn LeaseLookup) -> Result<Self> {
        let mut plan = WritePlan {
            request,
            revision: view.rev(),
            branches: Vec::new(),
            changes: Vec::new(),
        };
        match request {
            Write::Put(p) => {
                // etcd checks a plain put's lease before its key.
                check_lease(p, leases)?;
                plan.add_put(view, p, leases)?;
            }
            Write::DeleteRange(d) => plan.changes.push(Change::DeleteRange(d)),
            Write::Txn(t) => plan.add_txn(view, t, leases)?,
        }
        Ok(plan)
    }

    /// Whether the top-level txn (if any) takes its success branch.
    pub fn succeeded(&self) -> bool {
        self.branches.first().copied().unwrap_or(true)
    }

    fn add_txn(&mut self, view: &dyn Reader, t: &'r TxnRequest, leases: &dyn LeaseLookup) -> Result<()> {
        // Every compare, nested ones too, judges the state before the txn.
        let succeeded = succeeds(view, t)?;
        self.branches.push(succeeded);
        for op in branch(t, succeeded) {
            match &op.request {
                Some(Request::RequestTxn(nested)) => self.add_txn(view, nested, leases)?,
                Some(Request::RequestPut(p)) => self.add_put(view, p, leases)?,
                Some(Request::RequestDeleteRange(d)) => self.changes.push(Change::DeleteRange(d)),
                Some(Request::RequestRange(q)) => {
                    if q.revision > view.rev() {
                        return Err(Error::FutureRev);
                    }
                    // Let the store apply its own compaction check.
                    if q.revision > 0 {
                        view.range(&KeyRange::Single(q.key.clone()), q.revision, 1, true)?;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    fn add_put(&mut self, view: &dyn Reader, p: &'r PutRequest, leases: &dyn LeaseLookup) -> Result<()> {
        let keeps = p.ignore_value || p.ignore_lease;
        // Validation forbids writing a key twice in one txn, so the state
        // before the txn is also the state right before this put.
        let prev = if keeps || p.prev_kv {
            view.range(&KeyRange::Single(p.key.clone()), 0, 1, false)?.kvs.into_iter().next()
        } else {
            None
        };
        if keeps && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        check_lease(p, leases)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        self.changes.push(Change::Put(PlannedPut {
            request: p,
            value,
            lease,
            prev,
        }));
        Ok(())
    }
}

fn check_lease(p: &PutRequest, leases: &dyn LeaseLookup) -> Result<()> {
    if p.lease != 0 && !leases.lease_exists(p.lease) {
        return Err(Error::LeaseNotFound);
    }
    Ok(())
}
