//! `etcdserverpb.Lease`. Grants and revokes go through Raft; renewals and
//! TTL queries are answered from this member's lease clock, which only the
//! leader's counts (forwarding them to the leader arrives with the peer
//! transport).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Core;
use crate::apply::Response as Applied;
use crate::error::Error;
use crate::lease::expiry;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub struct LeaseService {
    core: Arc<Core>,
}

impl LeaseService {
    pub fn new(core: Arc<Core>) -> Self {
        LeaseService { core }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
}

/// Renews a lease for the KeepAlive stream: its TTL, or 0 when it is gone.
async fn renew(core: &Arc<Core>, id: i64) -> Result<i64, Error> {
    let status = core.node.status();
    if status.leader() != status.id {
        return Err(Error::NoLeader);
    }
    match core.leases.renew(id) {
        Ok((ttl, clear_checkpoint)) => {
            if clear_checkpoint {
                // A renewed lease must not restart from its old checkpoint
                // after a failover.
                let core = core.clone();
                tokio::spawn(async move {
                    expiry::checkpoint(&core, vec![LeaseCheckpoint { id, remaining_ttl: 0 }]).await;
                });
            }
            Ok(ttl)
        }
        Err(Error::LeaseNotFound) => Ok(0),
        Err(e) => Err(e),
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut r = request.into_inner();
        // Like etcd, the proposing member picks the id; only positive ids.
        while r.id == 0 {
            r.id = (self.core.ids.next() & ((1 << 63) - 1)) as i64;
        }
        match self.core.propose(Proposal::LeaseGrant(r)).await? {
            Applied::LeaseGrant(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("lease grant")),
        }
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let r = request.into_inner();
        match self.core.propose(Proposal::LeaseRevoke(r)).await? {
            Applied::LeaseRevoke(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("lease revoke")),
        }
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                // The header is taken before renewing, as etcd does, so a
                // revoke cannot appear older than a successful renewal.
                let header = Some(core.header(core.store.current_revision()));
                let reply = match renew(&core, req.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse { header, id: req.id, ttl }),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(&self, request: Request<LeaseTimeToLiveRequest>) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        // Make sure every grant and revoke acknowledged so far is applied.
        self.core.read_barrier(false).await?;
        let header = Some(self.core.header(self.core.store.current_revision()));
        let resp = match self.core.leases.info(r.id) {
            Some(info) => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: info.remaining.as_secs() as i64,
                granted_ttl: info.granted_ttl,
                keys: if r.keys { info.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.core.read_barrier(false).await?;
        let leases = self.core.leases.ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.core.header(self.core.store.current_revision())),
            leases,
        }))
    }
}
