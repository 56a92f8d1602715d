//! Txn compares and the branch they choose.

use crate::error::Result;
use crate::mvcc::{KeyRange, Reader};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    Compare, RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;

/// Whether every compare of `r` holds on `view`. A failed read is an error,
/// never "false": members must not choose branches from their own disk faults.
pub(super) fn succeeds(view: &dyn Reader, r: &TxnRequest) -> Result<bool> {
    for c in &r.compare {
        if !compare(view, c)? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn branch(r: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &r.success
    } else {
        &r.failure
    }
}

fn compare(view: &dyn Reader, c: &Compare) -> Result<bool> {
    let result = view.range(&KeyRange::new(&c.key, &c.range_end), 0, 0, false)?;
    if result.kvs.is_empty() {
        // A missing key has no value to compare; every other target
        // compares as zero.
        if c.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(result.kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(target) => number_of(kv, target).cmp(&operand(c, target)),
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

fn number_of(kv: &KeyValue, target: CompareTarget) -> i64 {
    match target {
        CompareTarget::Create => kv.create_revision,
        CompareTarget::Mod => kv.mod_revision,
        CompareTarget::Version => kv.version,
        CompareTarget::Lease => kv.lease,
        CompareTarget::Value => 0,
    }
}

/// The number a compare gives for `target`; missing or given for another
/// target, it is zero.
fn operand(c: &Compare, target: CompareTarget) -> i64 {
    match (target, &c.target_union) {
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
        | (CompareTarget::Version, Some(TargetUnion::Version(v)))
        | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    }
}
