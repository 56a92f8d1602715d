//! The backend quota (`--quota-backend-bytes`), as etcd's: what a write is
//! estimated to add, and whether the state has room for it. The size is
//! this member's own, so running out is a local observation; it becomes a
//! cluster-wide refusal only through the NOSPACE alarm, which is replicated.

use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::{request_op, PutRequest, TxnRequest};

/// etcd's quota when none is given.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// The largest quota etcd recommends; larger ones work, with a warning.
pub const MAX_QUOTA_BYTES: u64 = 8 << 30;
/// etcd's estimate of a key's metadata, charged per put.
const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of a lease record.
const LEASE_OVERHEAD: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Bytes the state may reach; `None`: no quota.
    limit: Option<u64>,
    /// What `etcd_server_quota_backend_bytes` reports.
    gauge: i64,
}

impl Quota {
    /// The quota `--quota-backend-bytes` asks for: 0 is etcd's default of
    /// 2 GiB, a negative number turns the quota off.
    pub fn from_flag(bytes: i64) -> Quota {
        match u64::try_from(bytes) {
            Err(_) => {
                tracing::info!(quota_size_bytes = bytes, "disabled backend quota");
                Quota { limit: None, gauge: bytes }
            }
            Ok(0) => Quota::with_limit(DEFAULT_QUOTA_BYTES),
            Ok(limit) => {
                if limit > MAX_QUOTA_BYTES {
                    tracing::warn!(
                        quota_size_bytes = limit,
                        quota_maximum_size_bytes = MAX_QUOTA_BYTES,
                        "quota exceeds the maximum value"
                    );
                }
                Quota::with_limit(limit)
            }
        }
    }

    fn with_limit(limit: u64) -> Quota {
        tracing::info!(quota_size_bytes = limit, "enabled backend quota");
        Quota {
            limit: Some(limit),
            gauge: limit as i64,
        }
    }

    /// What `etcd_server_quota_backend_bytes` reports: the quota in force,
    /// or the flag's negative value when there is none, as etcd does.
    pub fn gauge(&self) -> i64 {
        self.gauge
    }

    /// Whether a state of `size` bytes has room for `cost` more, by etcd's
    /// rule (strictly below the quota).
    pub fn admits(&self, size: u64, cost: u64) -> bool {
        self.limit.is_none_or(|limit| size.saturating_add(cost) < limit)
    }
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            limit: Some(DEFAULT_QUOTA_BYTES),
            gauge: DEFAULT_QUOTA_BYTES as i64,
        }
    }
}

/// A put's charge: its key, value and etcd's per-key overhead.
pub fn put_cost(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

fn ops_cost(ops: &[crate::proto::etcdserverpb::RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(request_op::Request::RequestPut(p)) => put_cost(p),
            // etcd charges the puts of a txn's own branches only.
            _ => 0,
        })
        .sum()
}

/// A txn's charge: the puts of its costlier branch.
pub fn txn_cost(t: &TxnRequest) -> u64 {
    ops_cost(&t.success).max(ops_cost(&t.failure))
}

/// What `request` is charged against the quota, as etcd estimates it: a
/// put its key, value and overhead; a txn its costlier branch's puts; a
/// lease grant a fixed overhead; anything else nothing (deletes,
/// compactions and the rest free space or take none worth counting).
pub fn cost(request: &Request) -> u64 {
    match request {
        Request::Put(p) => put_cost(p),
        Request::Txn(t) => txn_cost(t),
        Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest, RequestOp};

    fn put(key: &str, value_len: usize) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: vec![0; value_len],
            ..Default::default()
        }
    }

    fn op_put(p: PutRequest) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(p)),
        }
    }

    #[test]
    fn flag_values_as_etcd_reads_them() {
        assert_eq!(Quota::from_flag(0), Quota::default());
        assert_eq!(Quota::from_flag(0).gauge(), 2 << 30);
        let off = Quota::from_flag(-1);
        assert!(off.admits(u64::MAX, u64::MAX));
        assert_eq!(off.gauge(), -1);
        let huge = Quota::from_flag(16 << 30);
        assert_eq!(huge.gauge(), 16 << 30);
        let small = Quota::from_flag(1000);
        assert!(small.admits(900, 99));
        assert!(!small.admits(900, 100));
        assert!(!small.admits(1000, 0));
    }

    #[test]
    fn costs_as_etcd_estimates_them() {
        assert_eq!(cost(&Request::Put(put("ab", 10))), 256 + 12);
        assert_eq!(cost(&Request::LeaseGrant(LeaseGrantRequest::default())), 64);
        assert_eq!(cost(&Request::DeleteRange(DeleteRangeRequest::default())), 0);
        let txn = TxnRequest {
            success: vec![op_put(put("a", 1)), op_put(put("b", 1))],
            failure: vec![op_put(put("c", 100))],
            ..Default::default()
        };
        // The costlier branch: two puts beat one larger put.
        assert_eq!(cost(&Request::Txn(txn)), 2 * (256 + 2));
        let read_only = TxnRequest::default();
        assert_eq!(cost(&Request::Txn(read_only)), 0);
    }
}
