//! etcd's KV request semantics over MVCC: request validation, Range with its
//! sorting and filters, Put, DeleteRange and (nested) Txn.
//!
//! The same functions serve reads on any member and writes in the apply
//! loop, so a request means exactly the same thing on both paths.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::mvcc::{KeyRange, Reader, WriteTxn};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

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

// ---- validation done before a request is proposed ----

pub fn validate_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn validate_put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn validate_delete_range(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a txn's size, keys, and that no key is written twice on any path.
pub fn validate_txn(r: &TxnRequest, max_ops: usize) -> Result<()> {
    validate_txn_ops(r, max_ops)?;
    // Checked after the size check so hostile input cannot make it quadratic.
    check_overlaps(&r.success)?;
    check_overlaps(&r.failure)?;
    Ok(())
}

fn validate_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => validate_range(r)?,
            Some(Request::RequestPut(r)) => validate_put(r)?,
            Some(Request::RequestDeleteRange(r)) => validate_delete_range(r)?,
            Some(Request::RequestTxn(t)) => validate_txn_ops(t, max_ops - ops)?,
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// A key interval deleted somewhere in a txn: `[start, end)`, or one key.
struct Deleted {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => self.start == key,
            Some(end) => self.start.as_slice() <= key && key < end.as_slice(),
        }
    }
}

/// Returns the keys put and the intervals deleted by `ops` (recursively),
/// failing when one key could be written twice by one execution.
fn check_overlaps(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>)> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Deleted], k: &[u8]| dels.iter().any(|d| d.covers(k));
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = check_overlaps(&t.success)?;
        let (puts_else, dels_else) = check_overlaps(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            // Then and else never both run, so they may write the same key.
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Whether a txn only reads, on every path; such txns need no Raft entry.
pub fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) => true,
        Some(Request::RequestTxn(t)) => is_read_only(t),
        _ => false,
    })
}

// ---- execution ----

pub fn range(view: &(impl Reader + ?Sized), r: &RangeRequest) -> Result<RangeResponse> {
    let sort_order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let filtered = r.min_mod_revision != 0 || r.max_mod_revision != 0 || r.min_create_revision != 0 || r.max_create_revision != 0;
    // Sorting and filtering need every match; otherwise fetch one more than
    // the limit to learn whether there are more.
    let fetch = if sort_order != SortOrder::None || filtered || r.limit <= 0 {
        0
    } else {
        r.limit as usize + 1
    };
    let result = view.range(&KeyRange::new(&r.key, &r.range_end), r.revision, fetch, r.count_only)?;
    let mut kvs = result.kvs;
    kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    // Results come in ascending key order; any other target implies sorting
    // (ascending unless asked otherwise).
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        let key_of = |a: &KeyValue, b: &KeyValue| match sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        match order {
            SortOrder::Descend => kvs.sort_by(|a, b| key_of(b, a)),
            _ => kvs.sort_by(key_of),
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(result.rev),
        kvs,
        more,
        count: result.count,
    })
}

/// A Put outside a txn: the lease must exist.
pub fn put(txn: &mut WriteTxn<'_>, r: &PutRequest, leases: &dyn LeaseLookup) -> Result<PutResponse> {
    if r.lease != 0 && !leases.lease_exists(r.lease) {
        return Err(Error::LeaseNotFound);
    }
    put_in_txn(txn, r)
}

fn put_in_txn(txn: &mut WriteTxn<'_>, r: &PutRequest) -> Result<PutResponse> {
    let prev = if r.ignore_value || r.ignore_lease || r.prev_kv {
        txn.get(&r.key)?
    } else {
        None
    };
    if (r.ignore_value || r.ignore_lease) && prev.is_none() {
        return Err(Error::KeyNotFound);
    }
    let value = match (&prev, r.ignore_value) {
        (Some(p), true) => p.value.clone(),
        _ => r.value.clone(),
    };
    let lease = match (&prev, r.ignore_lease) {
        (Some(p), true) => p.lease,
        _ => r.lease,
    };
    let rev = txn.put(&r.key, value, lease)?;
    Ok(PutResponse {
        header: header(rev),
        prev_kv: if r.prev_kv { prev } else { None },
    })
}

pub fn delete_range(txn: &mut WriteTxn<'_>, r: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
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

/// Runs a txn: evaluates every guard on the state before the txn, checks
/// the chosen operations, then executes them.
pub fn txn(mut target: TxnTarget<'_, '_>, r: &TxnRequest, leases: &dyn LeaseLookup) -> Result<TxnResponse> {
    let mut path = Vec::new();
    choose_path(target.reader(), r, &mut path);
    let mut cursor = 0;
    check_ops(target.reader(), r, &path, &mut cursor, leases)?;
    let mut cursor = 0;
    let mut resp = execute(&mut target, r, &path, &mut cursor)?;
    resp.header = header(target.reader().rev());
    Ok(resp)
}

/// Records, depth first, which branch each (nested) txn takes.
fn choose_path(view: &dyn Reader, r: &TxnRequest, path: &mut Vec<bool>) {
    let succeeded = r.compare.iter().all(|c| compare(view, c));
    path.push(succeeded);
    for op in branch(r, succeeded) {
        if let Some(Request::RequestTxn(t)) = &op.request {
            choose_path(view, t, path);
        }
    }
}

/// The operations a txn runs on `view`: its success or failure branch, as
/// its compares select (nested txns are not resolved).
pub fn chosen_branch<'r>(view: &dyn Reader, r: &'r TxnRequest) -> &'r [RequestOp] {
    branch(r, r.compare.iter().all(|c| compare(view, c)))
}

fn branch(r: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &r.success
    } else {
        &r.failure
    }
}

fn compare(view: &dyn Reader, c: &Compare) -> bool {
    let Ok(result) = view.range(&KeyRange::new(&c.key, &c.range_end), 0, 0, false) else {
        return false;
    };
    if result.kvs.is_empty() {
        // A missing key has no value to compare; every other target
        // compares as zero.
        if c.target == CompareTarget::Value as i32 {
            return false;
        }
        return compare_kv(c, &KeyValue::default());
    }
    result.kvs.iter().all(|kv| compare_kv(c, kv))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int = |v: Option<i64>| v.unwrap_or(0);
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::CreateRevision(v)) => Some(v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::ModRevision(v)) => Some(v),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int(match c.target_union {
            Some(TargetUnion::Version(v)) => Some(v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(match c.target_union {
            Some(TargetUnion::Lease(v)) => Some(v),
            _ => None,
        })),
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

/// Checks the operations on the chosen path before anything is written, so
/// a failing txn changes nothing.
fn check_ops(view: &dyn Reader, r: &TxnRequest, path: &[bool], cursor: &mut usize, leases: &dyn LeaseLookup) -> Result<()> {
    let succeeded = path[*cursor];
    *cursor += 1;
    for op in branch(r, succeeded) {
        match &op.request {
            Some(Request::RequestTxn(t)) => check_ops(view, t, path, cursor, leases)?,
            Some(Request::RequestPut(p)) => {
                if (p.ignore_value || p.ignore_lease) && view.range(&KeyRange::Single(p.key.clone()), 0, 1, true)?.count == 0 {
                    return Err(Error::KeyNotFound);
                }
                if p.lease != 0 && !leases.lease_exists(p.lease) {
                    return Err(Error::LeaseNotFound);
                }
            }
            Some(Request::RequestRange(q)) => {
                if q.revision > view.rev() {
                    return Err(Error::FutureRev);
                }
                // Let the store apply its own compaction check.
                if q.revision > 0 {
                    view.range(&KeyRange::Single(q.key.clone()), q.revision, 1, true)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn execute(target: &mut TxnTarget<'_, '_>, r: &TxnRequest, path: &[bool], cursor: &mut usize) -> Result<TxnResponse> {
    let succeeded = path[*cursor];
    *cursor += 1;
    let mut responses = Vec::new();
    for op in branch(r, succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(q)) => Response::ResponseRange(range(target.reader(), q)?),
            Some(Request::RequestPut(p)) => Response::ResponsePut(put_in_txn(target.writer()?, p)?),
            Some(Request::RequestDeleteRange(d)) => Response::ResponseDeleteRange(delete_range(target.writer()?, d)?),
            Some(Request::RequestTxn(t)) => {
                // etcd leaves a nested txn's header empty.
                let mut nested = execute(target, t, path, cursor)?;
                nested.header = Some(ResponseHeader::default());
                Response::ResponseTxn(nested)
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}
