//! `v3lockpb.Lock`: etcd's distributed mutex recipe, served by the server.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::concurrency::{self as recipe, ReleaseOnDrop};
use super::grpc_error::via_client;
use crate::error::Result;
use crate::member::Member;
use crate::proto::etcdserverpb::TxnRequest;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

pub struct LockService {
    member: Arc<Member>,
}

impl LockService {
    pub fn new(member: Arc<Member>) -> Self {
        LockService { member }
    }

    async fn lock_as_caller(&self, request: Request<LockRequest>) -> Result<LockResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        let lease = recipe::session_lease(&self.member, &caller, r.lease).await?;
        let mut prefix = r.name.clone();
        prefix.push(b'/');
        let key = recipe::contender_key(&prefix, lease);
        // Create our key unless the lease already holds one; either way
        // learn its creation revision and the current owner's.
        let txn = TxnRequest {
            compare: vec![recipe::create_revision_is(&key, 0)],
            success: vec![recipe::put_op(&key, b"", lease), recipe::first_created_op(&prefix)],
            failure: vec![recipe::get_op(&key), recipe::first_created_op(&prefix)],
        };
        let resp = recipe::txn(&self.member, &caller, txn).await?;
        let mut my_rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if !resp.succeeded {
            my_rev = recipe::range_kvs(&resp, 0).first().map_or(my_rev, |kv| kv.create_revision);
        }
        let owner = recipe::range_kvs(&resp, 1);
        if owner.first().is_none_or(|kv| kv.create_revision == my_rev) {
            return Ok(LockResponse { header: resp.header, key });
        }
        // Our key goes away if the client gives up while waiting.
        let release = ReleaseOnDrop::new(self.member.clone(), &caller, key.clone());
        let header = recipe::wait_deletes(&self.member, &caller, &prefix, my_rev - 1).await?;
        release.disarm();
        Ok(LockResponse { header, key })
    }

    async fn unlock_as_caller(&self, request: Request<UnlockRequest>) -> Result<UnlockResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        let header = recipe::delete(&self.member, &caller, &r.key).await?;
        Ok(UnlockResponse { header })
    }
}

/// The recipes' errors reach the client as etcd's in-process client hands
/// them to its lock server: gRPC Unknown, the message kept.
#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.lock_as_caller(request).await.map(Response::new).map_err(via_client)
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        self.unlock_as_caller(request).await.map(Response::new).map_err(via_client)
    }
}
