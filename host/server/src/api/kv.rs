//! `etcdserverpb.KV`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{AuthInfo, AuthStore, Perm};
use crate::error::Error;
use crate::member::Member;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use crate::txn::{self, TxnTarget};

pub struct KvService {
    member: Arc<Member>,
}

impl KvService {
    pub fn new(member: Arc<Member>) -> Self {
        KvService { member }
    }
}

/// A read checked against the auth state must not answer if that state
/// changed while it ran (etcd's `doSerialize`): the client authenticates
/// again and retries.
fn unchanged_since(auth: &AuthStore, caller: &AuthInfo) -> Result<(), Error> {
    if caller.revision != 0 && caller.revision != auth.revision() {
        return Err(Error::AuthOldRevision);
    }
    Ok(())
}

/// A txn is served without Raft only when it cannot write, and locally only
/// when every range in it asks for serializable reads.
fn is_serializable(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Op::RequestRange(r)) => r.serializable,
        Some(Op::RequestTxn(t)) => is_serializable(t),
        _ => false,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        let r = request.into_inner();
        crate::metrics::metrics().range_total.inc();
        if !r.serializable && self.member.membership().is_local_learner() {
            return Err(Error::NotSupportedForLearner.into());
        }
        txn::validate_range(&r)?;
        self.member.read_barrier(r.serializable).await?;
        let auth = self.member.auth();
        auth.check_range(&caller, &r.key, &r.range_end, Perm::Read)?;
        // A range that may return many keys is read off the async workers.
        let large = txn::may_read_many(&r);
        let mut resp = self.member.read(large, move |store| txn::range(&store.read_view(), &r)).await?;
        unchanged_since(auth, &caller)?;
        self.member.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        let r = request.into_inner();
        txn::validate_put(&r)?;
        let resp: PutResponse = self.member.propose_as(&caller, Proposal::Put(r)).await?;
        Ok(Response::new(resp))
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        let r = request.into_inner();
        txn::validate_delete_range(&r)?;
        let resp: DeleteRangeResponse = self.member.propose_as(&caller, Proposal::DeleteRange(r)).await?;
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        let r = request.into_inner();
        crate::metrics::metrics().txn_total.inc();
        txn::validate_txn(&r, self.member.limits().max_txn_ops)?;
        if txn::is_read_only(&r) {
            self.member.read_barrier(is_serializable(&r)).await?;
            let auth = self.member.auth();
            let leases = self.member.leases().clone();
            auth.check_txn(&caller, &r, &leases)?;
            let large = txn::txn_may_read_many(&r);
            let mut resp = self
                .member
                .read(large, move |store| txn::txn(TxnTarget::Read(&store.read_view()), &r, &*leases))
                .await?;
            unchanged_since(auth, &caller)?;
            self.member.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let resp: TxnResponse = self.member.propose_as(&caller, Proposal::Txn(r)).await?;
        Ok(Response::new(resp))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        let r = request.into_inner();
        // Compaction finishes during apply, so `physical` needs no extra wait.
        let resp: CompactionResponse = self.member.propose_as(&caller, Proposal::Compaction(r)).await?;
        Ok(Response::new(resp))
    }
}
