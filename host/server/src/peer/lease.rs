//! The leader's side of lease forwarding: renewals and TTL queries that
//! other members' clients sent them.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::Core;
use crate::error::Error;
use crate::lease::forward;
use crate::proto::cairnpb::lease_peer_server::LeasePeer;
use crate::proto::cairnpb::{LeaseOutcome, LeaseRenewResult, LeaseTimeToLiveResult};
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest};

pub struct LeasePeerService {
    core: Arc<Core>,
}

impl LeasePeerService {
    pub fn new(core: Arc<Core>) -> Self {
        LeasePeerService { core }
    }
}

/// How a refusal is told to the forwarding member; other errors are
/// statuses, which it retries like a refusal.
fn refusal(e: Error) -> Result<LeaseOutcome, Status> {
    match e {
        Error::LeaseNotFound => Ok(LeaseOutcome::LeaseNotFound),
        Error::NotLeader => Ok(LeaseOutcome::LeaseNotPrimary),
        other => Err(other.into()),
    }
}

#[tonic::async_trait]
impl LeasePeer for LeasePeerService {
    async fn renew(&self, request: Request<LeaseKeepAliveRequest>) -> Result<Response<LeaseRenewResult>, Status> {
        let result = match forward::renew_here(&self.core, request.into_inner().id).await {
            Ok(ttl) => LeaseRenewResult {
                outcome: LeaseOutcome::LeaseFound as i32,
                ttl,
            },
            Err(e) => LeaseRenewResult {
                outcome: refusal(e)? as i32,
                ttl: 0,
            },
        };
        Ok(Response::new(result))
    }

    async fn time_to_live(&self, request: Request<LeaseTimeToLiveRequest>) -> Result<Response<LeaseTimeToLiveResult>, Status> {
        let result = match forward::time_to_live_here(&self.core, &request.into_inner()).await {
            Ok(response) => LeaseTimeToLiveResult {
                outcome: LeaseOutcome::LeaseFound as i32,
                response: Some(response),
            },
            Err(e) => LeaseTimeToLiveResult {
                outcome: refusal(e)? as i32,
                response: None,
            },
        };
        Ok(Response::new(result))
    }
}
