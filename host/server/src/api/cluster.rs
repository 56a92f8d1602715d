//! `etcdserverpb.Cluster`: the member list, and membership changes proposed
//! as Raft configuration changes carrying the member's record.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use tonic::{Request, Response, Status};

use super::Core;
use crate::error::{Error, Result};
use crate::membership::{member_id, Member};
use crate::proto::cairnpb::{raft_request::Request as Proposal, MemberChange};
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use crate::reconfig::ReconfigCheck;

/// etcd allows one learner at a time.
const MAX_LEARNERS: usize = 1;

pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    pub fn new(core: Arc<Core>) -> Self {
        ClusterService { core }
    }

    /// etcd's Cluster service leaves the revision out of its headers.
    fn header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        Some(self.core.header(0))
    }

    fn members(&self) -> Vec<PbMember> {
        self.core.membership.table.list().iter().map(Member::to_proto).collect()
    }

    /// Proposes a configuration change and waits until this member applied it.
    async fn configure(&self, change: ConfChangeType, member: PbMember) -> Result<()> {
        let request_id = self.core.ids.next();
        let context = MemberChange {
            member: Some(member.clone()),
            request_id,
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = member.id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.context = context.into();
        let applied = self.core.waiters.register(request_id);
        if let Err(e) = self.core.node.propose_conf_change(cc).await {
            self.core.waiters.cancel(request_id);
            return Err(e);
        }
        match tokio::time::timeout(super::REQUEST_TIMEOUT, applied).await {
            Ok(Ok(result)) => result.map(|_| ()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => {
                // Raft turns a change proposed while another is pending
                // into a no-op, which nobody answers: it ends here.
                self.core.waiters.cancel(request_id);
                Err(Error::Timeout)
            }
        }
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
        ReconfigCheck::new(&self.core.membership).may_add(r.is_learner)?;
        let table = &self.core.membership.table;
        if table.find_by_peer_urls(&r.peer_ur_ls).is_some()
            || table.list().iter().any(|m| m.peer_urls.iter().any(|u| r.peer_ur_ls.contains(u)))
        {
            return Err(Error::PeerUrlExist.into());
        }
        if r.is_learner && table.list().iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(Error::TooManyLearners.into());
        }
        let member = PbMember {
            id: new_member_id(&r.peer_ur_ls, self.core.membership.cluster_id),
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
        self.configure(change, member.clone()).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.members(),
        }))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        ReconfigCheck::new(&self.core.membership).may_remove(id)?;
        let member = self.core.membership.table.get(id).ok_or(Error::MemberNotFound)?;
        self.configure(ConfChangeType::RemoveNode, member.to_proto()).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        validate_urls(&r.peer_ur_ls)?;
        let mut member = self.core.membership.table.get(r.id).ok_or(Error::MemberNotFound)?.to_proto();
        member.peer_ur_ls = r.peer_ur_ls;
        self.core
            .propose(Proposal::MemberUpdate(MemberChange {
                member: Some(member),
                request_id: 0,
            }))
            .await?;
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
        let member = self.core.membership.table.get(id).ok_or(Error::MemberNotFound)?;
        if !member.is_learner {
            return Err(Error::MemberNotLearner.into());
        }
        match self.core.node.check_learner_ready(id).await {
            Err(Error::NotLeader) => {
                let leader = self.core.node.status().leader();
                let url = self.core.membership.table.peer_url(leader).ok_or(Error::NoLeader)?;
                crate::peer::learner_ready_at_leader(&url, id).await?;
            }
            other => other?,
        }
        ReconfigCheck::new(&self.core.membership).may_promote()?;
        self.configure(ConfChangeType::AddNode, member.to_proto()).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}
