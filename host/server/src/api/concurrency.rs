//! The recipes behind Lock and Election, as etcd's `clientv3/concurrency`
//! package writes them, run server-side over our own KV, Raft and watch
//! internals: a contender's key is `<prefix><lease in hex>`, ownership goes
//! by creation revision, and a waiter waits for every older key under the
//! prefix to be deleted.
//!
//! Every operation runs as the caller (`AuthInfo`): writes are proposed as
//! theirs and checked at apply, reads and the waits' watches are checked
//! here, so the recipes reach exactly the keys the caller could reach
//! through KV and Watch themselves, as etcd's servers, which run them
//! through a client carrying the caller's token.

use std::sync::Arc;

use crate::auth::{AuthInfo, Perm};
use crate::error::Result;
use crate::member::Member;
use crate::mvcc::KeyRange;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::proto::prefix_end;
use crate::txn;
use crate::watch::RangeFeed;

/// The TTL of the lease etcd's recipes grant when the request names none
/// (`concurrency`'s default session TTL).
const SESSION_TTL: i64 = 60;

/// The lease a recipe's keys are attached to: the request's, or for lease 0
/// a new one of 60 s that nobody keeps alive. etcd's lock and election
/// servers do the same: they open a `concurrency` session, which grants that
/// lease, and orphan it at once.
pub async fn session_lease(member: &Member, caller: &AuthInfo, lease: i64) -> Result<i64> {
    if lease != 0 {
        return Ok(lease);
    }
    // As a LeaseGrant of the caller's: it needs a user.
    member.auth().check_authenticated(caller)?;
    let id = member.next_lease_id();
    let grant: LeaseGrantResponse = member
        .propose_as(caller, Proposal::LeaseGrant(LeaseGrantRequest { ttl: SESSION_TTL, id }))
        .await?;
    Ok(grant.id)
}

/// A contender's key under `prefix`.
pub fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

pub fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub fn get_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The oldest key under `prefix` (etcd's `WithFirstCreate`).
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

pub fn first_created_op(prefix: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(first_created(prefix))),
    }
}

/// Runs a txn through Raft as the caller's.
pub async fn txn(member: &Member, caller: &AuthInfo, request: TxnRequest) -> Result<TxnResponse> {
    txn::validate_txn(&request, member.limits().max_txn_ops)?;
    member.propose_as(caller, Proposal::Txn(request)).await
}

/// A linearizable read, which needs READ on its range.
pub async fn range(member: &Member, caller: &AuthInfo, request: &RangeRequest) -> Result<RangeResponse> {
    member.auth().check_range(caller, &request.key, &request.range_end, Perm::Read)?;
    member.read_barrier(false).await?;
    let mut resp = txn::range(&member.store().read_view(), request)?;
    member.fill(&mut resp.header);
    Ok(resp)
}

pub async fn delete(member: &Member, caller: &AuthInfo, key: &[u8]) -> Result<Option<ResponseHeader>> {
    let request = DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    let resp: DeleteRangeResponse = member.propose_as(caller, Proposal::DeleteRange(request)).await?;
    Ok(resp.header)
}

/// The key-values a txn sub-response read.
pub fn range_kvs(resp: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match resp.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
        _ => Vec::new(),
    }
}

/// Follows the changes of `range` from revision `from`, as a watch of the
/// caller's: it needs READ on the range.
/// The range is given as a request gives it (`range_end` empty: one key).
pub fn follow(member: &Member, caller: &AuthInfo, key: &[u8], range_end: &[u8], from: i64) -> Result<RangeFeed> {
    member.auth().check_range(caller, key, range_end, Perm::Read)?;
    let range = KeyRange::new(key, range_end);
    Ok(RangeFeed::new(member.watch_hub().clone(), member.store().clone(), range, from))
}

/// Waits until `key` is deleted at or after revision `from`.
async fn wait_delete(member: &Member, caller: &AuthInfo, key: &[u8], from: i64) -> Result<()> {
    let mut follower = follow(member, caller, key, &[], from)?;
    loop {
        let (_, events) = follower.next().await?;
        if events.iter().any(|e| e.r#type == EventType::Delete as i32) {
            return Ok(());
        }
    }
}

/// Waits until no key under `prefix` created at or before `max_create_rev`
/// is left; returns the header of the read that found none.
pub async fn wait_deletes(member: &Member, caller: &AuthInfo, prefix: &[u8], max_create_rev: i64) -> Result<Option<ResponseHeader>> {
    loop {
        let last = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: max_create_rev,
            ..Default::default()
        };
        let resp = range(member, caller, &last).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(resp.header);
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(member, caller, &kv.key, rev).await?;
    }
}

/// Deletes a contender's key if the request that created it is abandoned
/// (the client went away while waiting), as etcd's recipes do.
pub struct ReleaseOnDrop {
    member: Option<Arc<Member>>,
    /// Who created the key, and so deletes it.
    caller: AuthInfo,
    key: Vec<u8>,
}

impl ReleaseOnDrop {
    pub fn new(member: Arc<Member>, caller: &AuthInfo, key: Vec<u8>) -> Self {
        ReleaseOnDrop {
            member: Some(member),
            caller: caller.clone(),
            key,
        }
    }

    pub fn disarm(mut self) {
        self.member = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(member) = self.member.take() {
            let key = std::mem::take(&mut self.key);
            let caller = std::mem::take(&mut self.caller);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = delete(&member, &caller, &key).await {
                        tracing::warn!(error = %e, "releasing an abandoned lock or campaign key failed");
                    }
                });
            }
        }
    }
}
