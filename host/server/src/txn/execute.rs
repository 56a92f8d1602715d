//! Carrying out a [`WritePlan`]: the only code that turns requests into
//! MVCC writes, and the read-only txns served without Raft.

use super::compare::branch;
use super::plan::{Change, PlannedPut, Write, WritePlan};
use super::range::range;
use super::{header, LeaseLookup};
use crate::error::{Error, Result};
use crate::mvcc::{KeyRange, Reader, WriteTxn};
use crate::proto::etcdserverpb::{
    request_op::Request, response_op::Response, DeleteRangeRequest, DeleteRangeResponse, PutResponse, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};

/// The response to an executed write.
#[derive(Debug)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// Where a txn runs: a read-only view, or a write transaction.
pub enum TxnTarget<'t, 'a> {
    Read(&'t dyn Reader),
    Write(&'t mut WriteTxn<'a>),
}

impl<'a> TxnTarget<'_, 'a> {
    fn reader(&self) -> &dyn Reader {
        match self {
            TxnTarget::Read(r) => *r,
            TxnTarget::Write(w) => &**w,
        }
    }

    fn writer(&mut self) -> Result<&mut WriteTxn<'a>> {
        match self {
            TxnTarget::Write(w) => Ok(&mut **w),
            TxnTarget::Read(_) => Err(Error::InvalidRequest("write in a read-only txn".into())),
        }
    }
}

/// Runs a txn outside apply (read-only txns): plans it, then executes it.
pub fn txn(mut target: TxnTarget<'_, '_>, r: &TxnRequest, leases: &dyn LeaseLookup) -> Result<TxnResponse> {
    let plan = WritePlan::new(target.reader(), Write::Txn(r), leases)?;
    let mut cursor = Cursor::default();
    execute_txn(&mut target, r, &plan, &mut cursor)
}

/// Executes `plan` in `txn`, which must still be at the plan's revision.
pub fn execute(txn: &mut WriteTxn<'_>, plan: &WritePlan<'_>) -> Result<WriteResponse> {
    let mut cursor = Cursor::default();
    Ok(match plan.request {
        Write::Put(_) => WriteResponse::Put(put(txn, next_put(plan, &mut cursor)?)?),
        Write::DeleteRange(d) => WriteResponse::DeleteRange(delete_range(txn, d)?),
        Write::Txn(t) => WriteResponse::Txn(execute_txn(&mut TxnTarget::Write(txn), t, plan, &mut cursor)?),
    })
}

/// How far execution has walked the plan.
#[derive(Default)]
struct Cursor {
    branch: usize,
    change: usize,
}

/// The plan and the request are walked in the same order; a mismatch means
/// a plan was paired with another request, a bug rather than bad input.
fn mismatch() -> Error {
    Error::InvalidRequest("write plan does not match its request".into())
}

fn next_put<'p>(plan: &'p WritePlan<'_>, cursor: &mut Cursor) -> Result<&'p PlannedPut<'p>> {
    let change = plan.changes.get(cursor.change).ok_or_else(mismatch)?;
    cursor.change += 1;
    match change {
        Change::Put(p) => Ok(p),
        Change::DeleteRange(_) => Err(mismatch()),
    }
}

fn put(txn: &mut WriteTxn<'_>, p: &PlannedPut<'_>) -> Result<PutResponse> {
    let rev = txn.put(&p.request.key, p.value.clone(), p.lease)?;
    Ok(PutResponse {
        header: header(rev),
        prev_kv: if p.request.prev_kv { p.prev.clone() } else { None },
    })
}

fn delete_range(txn: &mut WriteTxn<'_>, r: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    let range = KeyRange::new(&r.key, &r.range_end);
    let prev_kvs = if r.prev_kv {
        txn.range(&range, 0, 0, false)?.kvs
    } else {
        Vec::new()
    };
    let (deleted, rev) = txn.delete_range(&range)?;
    Ok(DeleteRangeResponse {
        header: header(rev),
        deleted,
        prev_kvs,
    })
}

fn execute_txn(target: &mut TxnTarget<'_, '_>, r: &TxnRequest, plan: &WritePlan<'_>, cursor: &mut Cursor) -> Result<TxnResponse> {
    let top = cursor.branch == 0;
    let succeeded = *plan.branches.get(cursor.branch).ok_or_else(mismatch)?;
    cursor.branch += 1;
    let mut responses = Vec::new();
    for op in branch(r, succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(q)) => Response::ResponseRange(range(target.reader(), q)?),
            Some(Request::RequestPut(_)) => {
                let planned = next_put(plan, cursor)?;
                Response::ResponsePut(put(target.writer()?, planned)?)
            }
            Some(Request::RequestDeleteRange(d)) => {
                cursor.change += 1;
                Response::ResponseDeleteRange(delete_range(target.writer()?, d)?)
            }
            Some(Request::RequestTxn(t)) => {
                let mut nested = execute_txn(target, t, plan, cursor)?;
                // etcd leaves a nested txn's header empty.
                nested.header = Some(ResponseHeader::default());
                Response::ResponseTxn(nested)
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    Ok(TxnResponse {
        header: if top { header(target.reader().rev()) } else { None },
        succeeded,
        responses,
    })
}
