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

use crate::auth::{AuthInfo, Perm};
use crate::client_identity::ClientIdentity;
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

/// etcd 3.6's check of renewals and of listings that reveal keys: the
/// root role may; any other user needs `perm` on every key attached to
/// each of `leases`; nobody at all is refused.
fn check_lease_keys(member: &Member, caller: &AuthInfo, leases: &[i64], perm: Perm) -> Result<(), Error> {
    let auth = member.auth();
    if !auth.is_enabled() {
        return Ok(());
    }
    auth.check_authenticated(caller)?;
    if auth.check_admin(caller).is_ok() {
        return Ok(());
    }
    for id in leases {
        // A lease that is gone has no keys; the request answers for it.
        for key in member.leases().keys_of(*id).unwrap_or_default() {
            auth.check_range(caller, &key, &[], perm)?;
        }
    }
    Ok(())
}

/// The caller of `request`, who must be a user when auth is on (etcd 3.6's
/// `requireAuthInfo`).
fn authenticated<T>(member: &Member, request: &Request<T>) -> Result<AuthInfo, Error> {
    let caller = member.auth().authorize_request(request)?;
    member.auth().check_authenticated(&caller)?;
    Ok(caller)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = authenticated(&self.member, &request)?;
        let mut r = request.into_inner();
        // Like etcd, the proposing member picks the id; only positive ids.
        if r.id == 0 {
            r.id = self.member.next_lease_id();
        }
        let resp: LeaseGrantResponse = self.member.propose_as(&caller, Proposal::LeaseGrant(r)).await?;
        Ok(Response::new(resp))
    }

    /// WRITE on every attached key is checked at apply, where the keys
    /// attached by then are known.
    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = authenticated(&self.member, &request)?;
        let r = request.into_inner();
        let resp: LeaseRevokeResponse = self.member.propose_as(&caller, Proposal::LeaseRevoke(r)).await?;
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let metadata = request.metadata().clone();
        let identity = ClientIdentity::of(&request).cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (member, router) = (self.member.clone(), self.router.clone());
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                // Each renewal is judged as etcd 3.6 judges it: the token
                // may have expired, keys may have been attached since.
                let permitted = member
                    .auth()
                    .authorize_metadata(&metadata, identity.as_ref())
                    .and_then(|caller| check_lease_keys(&member, &caller, &[req.id], Perm::Write));
                if let Err(e) = permitted {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
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
        let caller = authenticated(&self.member, &request)?;
        let r = request.into_inner();
        if r.keys {
            check_lease_keys(&self.member, &caller, &[r.id], Perm::Read)?;
        }
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

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let caller = self.member.auth().authorize_request(&request)?;
        self.member.read_barrier(false).await?;
        let ids = self.member.leases().ids();
        check_lease_keys(&self.member, &caller, &ids, Perm::Read)?;
        let leases = ids.into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.member.current_header()),
            leases,
        }))
    }
}
