//! `v3electionpb.Election`: etcd's leader election recipe, served by the
//! server. The leader is the contender whose key under `<name>/` was
//! created first.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::concurrency::{self as recipe, ReleaseOnDrop};
use super::grpc_error::via_client;
use crate::auth::AuthInfo;
use crate::error::{Error, Result};
use crate::member::Member;
use crate::proto::etcdserverpb::{ResponseHeader, TxnRequest};
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};

pub struct ElectionService {
    member: Arc<Member>,
}

impl ElectionService {
    pub fn new(member: Arc<Member>) -> Self {
        ElectionService { member }
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Replaces the leader's value, if `leader` still is the leader key.
async fn proclaim(member: &Member, caller: &AuthInfo, leader: &LeaderKey, value: &[u8]) -> Result<Option<ResponseHeader>> {
    let txn = TxnRequest {
        compare: vec![recipe::create_revision_is(&leader.key, leader.rev)],
        success: vec![recipe::put_op(&leader.key, value, leader.lease)],
        failure: Vec::new(),
    };
    let resp = recipe::txn(member, caller, txn).await?;
    if !resp.succeeded {
        return Err(Error::ElectionNotLeader);
    }
    Ok(resp.header)
}

async fn resign(member: &Member, caller: &AuthInfo, leader: &LeaderKey) -> Result<Option<ResponseHeader>> {
    let txn = TxnRequest {
        compare: vec![recipe::create_revision_is(&leader.key, leader.rev)],
        success: vec![recipe::delete_op(&leader.key)],
        failure: Vec::new(),
    };
    Ok(recipe::txn(member, caller, txn).await?.header)
}

/// The current leader's key-value and the header of the read.
async fn leader(member: &Member, caller: &AuthInfo, name: &[u8]) -> Result<(Option<ResponseHeader>, Option<KeyValue>)> {
    let resp = recipe::range(member, caller, &recipe::first_created(&prefix_of(name))).await?;
    Ok((resp.header, resp.kvs.into_iter().next()))
}

/// Streams the leader of `name` as it changes, as etcd's `Observe` does:
/// the leader, each new value it proclaims, then after its key is deleted
/// the next leader.
async fn observe(member: Arc<Member>, caller: AuthInfo, name: Vec<u8>, out: mpsc::Sender<Result<LeaderResponse, Status>>) -> Result<()> {
    let prefix = prefix_of(&name);
    loop {
        let (header, current) = leader(&member, &caller, &name).await?;
        let (mut header, kv) = match current {
            Some(kv) => (header, kv),
            None => {
                // Nobody leads: wait for the first contender.
                let from = header.as_ref().map_or(0, |h| h.revision);
                let mut follower = recipe::follow(&member, &caller, &prefix, &crate::proto::prefix_end(&prefix), from)?;
                loop {
                    let (_, events) = follower.next().await?;
                    if let Some(kv) = events.into_iter().find(|e| e.r#type == EventType::Put as i32).and_then(|e| e.kv) {
                        let mut h = header.unwrap_or_default();
                        h.revision = kv.mod_revision;
                        break (Some(h), kv);
                    }
                }
            }
        };
        let from = header.as_ref().map_or(0, |h| h.revision) + 1;
        if out
            .send(Ok(LeaderResponse {
                header,
                kv: Some(kv.clone()),
            }))
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut follower = recipe::follow(&member, &caller, &kv.key, &[], from)?;
        'leader: loop {
            let (rev, events) = follower.next().await?;
            for e in events {
                if e.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                header = Some(member.header(rev));
                if out.send(Ok(LeaderResponse { header, kv: e.kv })).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

impl ElectionService {
    async fn campaign_as_caller(&self, request: Request<CampaignRequest>) -> Result<CampaignResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        let lease = recipe::session_lease(&self.member, &caller, r.lease).await?;
        let prefix = prefix_of(&r.name);
        let key = recipe::contender_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![recipe::create_revision_is(&key, 0)],
            success: vec![recipe::put_op(&key, &r.value, lease)],
            failure: vec![recipe::get_op(&key)],
        };
        let resp = recipe::txn(&self.member, &caller, txn).await?;
        let mut leader = LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev: resp.header.as_ref().map_or(0, |h| h.revision),
            lease,
        };
        if !resp.succeeded {
            if let Some(kv) = recipe::range_kvs(&resp, 0).first() {
                leader.rev = kv.create_revision;
                if kv.value != r.value {
                    if let Err(e) = proclaim(&self.member, &caller, &leader, &r.value).await {
                        let _ = resign(&self.member, &caller, &leader).await;
                        return Err(e);
                    }
                }
            }
        }
        // Our key goes away if the client gives up while waiting.
        let release = ReleaseOnDrop::new(self.member.clone(), &caller, key);
        recipe::wait_deletes(&self.member, &caller, &prefix, leader.rev - 1).await?;
        release.disarm();
        Ok(CampaignResponse {
            header: resp.header,
            leader: Some(leader),
        })
    }

    async fn proclaim_as_caller(&self, request: Request<ProclaimRequest>) -> Result<ProclaimResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        let mut leader = r.leader.ok_or(Error::MissingLeaderKey)?;
        // Like etcd's, a leader key without a lease gets a session lease of
        // its own, which the proclaimed value is attached to.
        leader.lease = recipe::session_lease(&self.member, &caller, leader.lease).await?;
        let header = proclaim(&self.member, &caller, &leader, &r.value).await?;
        Ok(ProclaimResponse { header })
    }

    async fn leader_as_caller(&self, request: Request<LeaderRequest>) -> Result<LeaderResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        match leader(&self.member, &caller, &r.name).await? {
            (header, Some(kv)) => Ok(LeaderResponse { header, kv: Some(kv) }),
            (_, None) => Err(Error::ElectionNoLeader),
        }
    }

    async fn resign_as_caller(&self, request: Request<ResignRequest>) -> Result<ResignResponse> {
        let caller = self.member.auth().authorize_request(&request)?;
        let r = request.into_inner();
        let leader = r.leader.ok_or(Error::MissingLeaderKey)?;
        // etcd opens a session here too, granting a lease that is never used.
        recipe::session_lease(&self.member, &caller, leader.lease).await?;
        let header = resign(&self.member, &caller, &leader).await?;
        Ok(ResignResponse { header })
    }
}

/// The recipes' errors reach the client as etcd's in-process client hands
/// them to its election server: gRPC Unknown, the message kept.
#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        self.campaign_as_caller(request).await.map(Response::new).map_err(via_client)
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        self.proclaim_as_caller(request).await.map(Response::new).map_err(via_client)
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        self.leader_as_caller(request).await.map(Response::new).map_err(via_client)
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let caller = self.member.auth().authorize_request(&request).map_err(via_client)?;
        let r = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let member = self.member.clone();
        tokio::spawn(async move {
            let out = tx.clone();
            tokio::select! {
                result = observe(member, caller, r.name, tx) => {
                    if let Err(e) = result {
                        let _ = out.send(Err(via_client(e))).await;
                    }
                }
                _ = out.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        self.resign_as_caller(request).await.map(Response::new).map_err(via_client)
    }
}
