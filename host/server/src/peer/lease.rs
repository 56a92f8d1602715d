//! The leader's side of lease forwarding: renewals and TTL queries that
//! other members' clients sent them.

use tonic::{Request, Response, Status};

use super::PeerRefusal;
use crate::error::{Error, Result};
use crate::proto::cairnpb::lease_peer_server::LeasePeer;
use crate::proto::cairnpb::{LeaseOutcome, LeaseRenewResult, LeaseTimeToLiveResult};
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};

/// What answers forwarded lease requests: the member's lease clock, which
/// fails with `NotLeader` when it is not the one that counts.
#[tonic::async_trait]
pub trait LeaseAuthority: Send + Sync + 'static {
    /// Renews lease `id`: its TTL, or `LeaseNotFound`.
    async fn renew(&self, id: i64) -> Result<i64>;
    /// Lease `request.id`'s TTLs, or `LeaseNotFound`.
    async fn time_to_live(&self, request: &LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse>;
}

pub struct LeasePeerService<A> {
    authority: A,
}

impl<A: LeaseAuthority> LeasePeerService<A> {
    pub fn new(authority: A) -> Self {
        LeasePeerService { authority }
    }
}

/// How a refusal is told to the forwarding member; other errors are
/// statuses, which it retries like a refusal.
fn refusal(e: Error) -> Result<LeaseOutcome, Status> {
    match e {
        Error::LeaseNotFound => Ok(LeaseOutcome::LeaseNotFound),
        Error::NotLeader => Ok(LeaseOutcome::LeaseNotPrimary),
        other => Err(PeerRefusal::Unavailable(other).into()),
    }
}

#[tonic::async_trait]
impl<A: LeaseAuthority> LeasePeer for LeasePeerService<A> {
    async fn renew(&self, request: Request<LeaseKeepAliveRequest>) -> Result<Response<LeaseRenewResult>, Status> {
        let result = match self.authority.renew(request.into_inner().id).await {
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
        let result = match self.authority.time_to_live(&request.into_inner()).await {
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
