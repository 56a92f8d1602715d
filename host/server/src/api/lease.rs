//! `etcdserverpb.Lease`. Grants and revokes go through Raft; renewals and
//! TTL queries are answered by the leader's lease clock, the only one that
//! counts, through [`LeaseRouter`]; the list of leases is read locally, as
//! etcd reads it.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Core;
use crate::apply::Applied;
use crate::error::Error;
use crate::lease::forward::LeaseRouter;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub struct LeaseService {
    core: Arc<Core>,
    router: Arc<LeaseRouter>,
}

impl LeaseService {
    pub fn new(core: Arc<Core>) -> Self {
        let router = Arc::new(LeaseRouter::new(core.clone()));
        LeaseService { core, router }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
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
        let (core, router) = (self.core.clone(), self.router.clone());
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                // The header is taken before renewing, as etcd does, so a
                // revoke cannot appear older than a successful renewal.
                let header = Some(core.header(core.store.current_revision()));
                let reply = match router.renew(req.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse { header, id: req.id, ttl }),
                    // etcd answers a lease that is gone with a TTL of 0.
                    Err(Error::LeaseNotFound) => Ok(LeaseKeepAliveResponse {
                        header,
                        id: req.id,
                        ttl: 0,
                    }),
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
        let id = r.id;
        let mut resp = match self.router.time_to_live(r).await {
            Ok(resp) => resp,
            Err(Error::LeaseNotFound) => LeaseTimeToLiveResponse {
                id,
                ttl: -1,
                ..Default::default()
            },
            Err(e) => return Err(e.into()),
        };
        resp.header = Some(self.core.header(self.core.store.current_revision()));
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
