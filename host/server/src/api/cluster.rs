//! `etcdserverpb.Cluster`: the member list, and membership changes proposed
//! as Raft configuration changes carrying the member's record.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::member::reconfig::ReconfigCheck;
use crate::member::{Member, MembersApplied};
use crate::membership::{self, member_id};
use crate::proto::cairnpb::{raft_request::Request as Proposal, MemberChange};
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

/// etcd allows one learner at a time.
const MAX_LEARNERS: usize = 1;

pub struct ClusterService {
    member: Arc<Member>,
}

impl ClusterService {
    pub fn new(member: Arc<Member>) -> Self {
        ClusterService { member }
    }

    /// etcd's Cluster service leaves the revision out of its headers.
    fn header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        Some(self.member.header(0))
    }

    fn members(&self) -> Vec<PbMember> {
        self.member
            .membership()
            .table
            .list()
            .iter()
            .map(membership::Member::to_proto)
            .collect()
    }
}

fn validate_urls(urls: &[String]) -> Result<()> {
    if urls.is_empty() {
        return Err(Error::MemberBadUrls);
    }
    for raw in urls {
        let url = url::Url::parse(raw).map_err(|_| Error::MemberBadUrls)?;
        let scheme_ok = matches!(url.scheme(), "http" | "https" | "unix" | "unixs");
        if !scheme_ok || url.host_str().is_none() || url.port().is_none() || !matches!(url.path(), "" | "/") {
            return Err(Error::MemberBadUrls);
        }
    }
    Ok(())
}

/// A fresh member id: like etcd, from the peer URLs and the time of the
/// request, so re-adding the same URLs later gives a new id.
fn new_member_id(peer_urls: &[String], cluster_id: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    member_id(peer_urls, &format!("{cluster_id:x}/{nanos}"))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let r = request.into_inner();
        validate_urls(&r.peer_ur_ls)?;
        ReconfigCheck::new(&self.member).may_add(r.is_learner)?;
        let table = &self.member.membership().table;
        if table.find_by_peer_urls(&r.peer_ur_ls).is_some()
            || table.list().iter().any(|m| m.peer_urls.iter().any(|u| r.peer_ur_ls.contains(u)))
        {
            return Err(Error::PeerUrlExist.into());
        }
        if r.is_learner && table.list().iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(Error::TooManyLearners.into());
        }
        let member = PbMember {
            id: new_member_id(&r.peer_ur_ls, self.member.membership().cluster_id),
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        let change = if r.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.member.propose_conf_change(change, member.clone()).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.members(),
        }))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        ReconfigCheck::new(&self.member).may_remove(id)?;
        let member = self.member.membership().table.get(id).ok_or(Error::MemberNotFound)?;
        self.member
            .propose_conf_change(ConfChangeType::RemoveNode, member.to_proto())
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        validate_urls(&r.peer_ur_ls)?;
        let mut member = self.member.membership().table.get(r.id).ok_or(Error::MemberNotFound)?.to_proto();
        member.peer_ur_ls = r.peer_ur_ls;
        let update = Proposal::MemberUpdate(MemberChange {
            member: Some(member),
            request_id: 0,
        });
        let MembersApplied = self.member.propose(update).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_list(&self, _: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let member = self.member.membership().table.get(id).ok_or(Error::MemberNotFound)?;
        if !member.is_learner {
            return Err(Error::MemberNotLearner.into());
        }
        match self.member.node().check_learner_ready(id).await {
            Err(Error::NotLeader) => {
                let leader = self.member.node().status().leader();
                let url = self.member.membership().table.peer_url(leader).ok_or(Error::NoLeader)?;
                crate::peer::learner_ready_at_leader(self.member.peer_dialer(), &url, id).await?;
            }
            other => other?,
        }
        ReconfigCheck::new(&self.member).may_promote()?;
        self.member.propose_conf_change(ConfChangeType::AddNode, member.to_proto()).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}
