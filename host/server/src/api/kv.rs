//! `etcdserverpb.KV`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Core;
use crate::apply::Applied;
use crate::error::Error;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use crate::txn::{self, TxnTarget};

pub struct KvService {
    core: Arc<Core>,
}

impl KvService {
    pub fn new(core: Arc<Core>) -> Self {
        KvService { core }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
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
        let r = request.into_inner();
        if !r.serializable && self.core.membership.is_local_learner() {
            return Err(Error::NotSupportedForLearner.into());
        }
        txn::validate_range(&r)?;
        self.core.read_barrier(r.serializable).await?;
        let mut resp = txn::range(&self.core.store.read_view(), &r)?;
        self.core.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = request.into_inner();
        txn::validate_put(&r)?;
        match self.core.propose(Proposal::Put(r)).await? {
            Applied::Put(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = request.into_inner();
        txn::validate_delete_range(&r)?;
        match self.core.propose(Proposal::DeleteRange(r)).await? {
            Applied::DeleteRange(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("delete range")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = request.into_inner();
        txn::validate_txn(&r, self.core.limits.max_txn_ops)?;
        if txn::is_read_only(&r) {
            self.core.read_barrier(is_serializable(&r)).await?;
            let view = self.core.store.read_view();
            let mut resp = txn::txn(TxnTarget::Read(&view), &r, &*self.core.leases)?;
            self.core.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        match self.core.propose(Proposal::Txn(r)).await? {
            Applied::Txn(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let r = request.into_inner();
        // Compaction finishes during apply, so `physical` needs no extra wait.
        match self.core.propose(Proposal::Compaction(r)).await? {
            Applied::Compaction(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(Status::from(Error::InvalidRequest("unexpected apply result for compaction".into()))),
        }
    }
}
