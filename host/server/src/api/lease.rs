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

use crate::error::Error;
use crate::member::lease_forward::LeaseRouter;
use crate::member::Member;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub struct LeaseService {
    member: Arc<Member>,
    router: Arc<LeaseRouter>,
}

impl LeaseService {
    pub fn new(member: Arc<Member>) -> Self {
        let router = Arc::new(LeaseRouter::new(member.clone()));
        LeaseService { member, router }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut r = request.into_inner();
        // Like etcd, the proposing member picks the id; only positive ids.
        if r.id == 0 {
            r.id = self.member.next_lease_id();
        }
        let resp: LeaseGrantResponse = self.member.propose(Proposal::LeaseGrant(r)).await?;
        Ok(Response::new(resp))
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let r = request.into_inner();
        let resp: LeaseRevokeResponse = self.member.propose(Proposal::LeaseRevoke(r)).await?;
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (member, router) = (self.member.clone(), self.router.clone());
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                // The header is taken before renewing, as etcd does, so a
                // revoke cannot appear older than a successful renewal.
                let header = Some(member.current_header());
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
        resp.header = Some(self.member.current_header());
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.member.read_barrier(false).await?;
        let leases = self.member.leases().ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.member.current_header()),
            leases,
        }))
    }
}
