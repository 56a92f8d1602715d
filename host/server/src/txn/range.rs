//! Range with etcd's limits, filters and sort options.

use super::header;
use crate::error::Result;
use crate::mvcc::{KeyRange, Reader};
use crate::proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    RangeRequest, RangeResponse, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;

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

/// Keys a range may return before it counts as large. A small read runs
/// inline on the async worker, where handing it to a blocking thread would
/// cost more than the read itself; a large one runs on a blocking thread.
const SMALL_RANGE_KEYS: i64 = 64;

/// Whether `r` may read more than a few keys: a range (not a single key)
/// without a small limit.
pub fn may_read_many(r: &RangeRequest) -> bool {
    !r.range_end.is_empty() && (r.limit <= 0 || r.limit > SMALL_RANGE_KEYS)
}

/// Whether a read-only txn holds, at any depth, a range that may read many
/// keys.
pub fn txn_may_read_many(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match &op.request {
        Some(Request::RequestRange(r)) => may_read_many(r),
        Some(Request::RequestTxn(t)) => txn_may_read_many(t),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::{may_read_many, txn_may_read_many};
    use crate::proto::etcdserverpb::{request_op::Request, RangeRequest, RequestOp, TxnRequest};

    fn range(end: &[u8], limit: i64) -> RangeRequest {
        RangeRequest {
            key: b"a".to_vec(),
            range_end: end.to_vec(),
            limit,
            ..Default::default()
        }
    }

    #[test]
    fn only_unbounded_or_widely_limited_ranges_count_as_large() {
        assert!(!may_read_many(&range(b"", 0)), "a single key");
        assert!(!may_read_many(&range(b"b", 64)), "a small limit");
        assert!(may_read_many(&range(b"b", 0)), "no limit");
        assert!(may_read_many(&range(b"b", 65)));
        assert!(may_read_many(&range(b"\0", 1000)), "to the end of the key space");
    }

    #[test]
    fn a_large_range_in_a_nested_txn_makes_the_txn_large() {
        let op = |r: Request| RequestOp { request: Some(r) };
        let small = TxnRequest {
            success: vec![op(Request::RequestRange(range(b"", 0)))],
            ..Default::default()
        };
        assert!(!txn_may_read_many(&small));
        let nested = TxnRequest {
            failure: vec![op(Request::RequestTxn(TxnRequest {
                success: vec![op(Request::RequestRange(range(b"z", 0)))],
                ..Default::default()
            }))],
            ..small.clone()
        };
        assert!(txn_may_read_many(&nested));
    }
}
