//! `etcdserverpb.Maintenance`: what `etcdctl endpoint status/health/hashkv`,
//! `alarm` and `defrag` need.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::ETCD_API_VERSION;
use crate::auth::AuthInfo;
use crate::error::Error;
use crate::member::{self, Member};
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

pub struct MaintenanceService {
    member: Arc<Member>,
    version: String,
}

impl MaintenanceService {
    pub fn new(member: Arc<Member>) -> Self {
        MaintenanceService {
            member,
            version: ETCD_API_VERSION.to_string(),
        }
    }

    /// Reports `version` as the etcd version (`--emulated-etcd-version`).
    pub fn with_version(mut self, version: String) -> Self {
        self.version = version;
        self
    }

    /// The root role, for the calls etcd 3.4 already reserved to it
    /// (Defragment, Snapshot, Hash, HashKV), refused in etcd's words there:
    /// the auth store's error, unconverted.
    fn require_root_unconverted<T>(&self, request: &Request<T>) -> Result<(), Error> {
        let auth = self.member.auth();
        auth.authorize_request(request)
            .and_then(|caller| auth.check_admin(&caller))
            .map_err(|e| Error::AuthUnconverted(Box::new(e)))
    }

    /// The root role, for the calls etcd 3.6 added to those (MoveLeader,
    /// alarm changes).
    fn require_root<T>(&self, request: &Request<T>) -> Result<(), Error> {
        let auth = self.member.auth();
        auth.check_admin(&auth.authorize_request(request)?)
    }

    /// Any user, for what etcd 3.6 shows only to users (Status, alarms).
    fn require_user<T>(&self, request: &Request<T>) -> Result<AuthInfo, Error> {
        let auth = self.member.auth();
        let caller = auth.authorize_request(request)?;
        auth.check_authenticated(&caller)?;
        Ok(caller)
    }
}

/// `Status.errors` as etcd fills it: no leader, then every raised alarm.
fn status_errors(member: &Member, leader: u64) -> Vec<String> {
    let no_leader = (leader == 0).then(|| format!("etcdserver: {}", Error::NoLeader));
    no_leader.into_iter().chain(member.alarms().status_errors()).collect()
}

/// How long `MoveLeader` waits for the transferee to take over.
const MOVE_LEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        if request.get_ref().action == AlarmAction::Get as i32 {
            self.require_user(&request)?;
        } else {
            self.require_root(&request)?;
        }
        // Every action goes through Raft, a listing too, as etcd's do: the
        // answer reflects every alarm raised before it.
        let resp: AlarmResponse = self.member.propose(Proposal::Alarm(request.into_inner())).await?;
        Ok(Response::new(resp))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.require_user(&request)?;
        let member = &self.member;
        let raft = member.node().status();
        Ok(Response::new(StatusResponse {
            header: Some(member.current_header()),
            version: self.version.clone(),
            db_size: member.database().size_bytes() as i64,
            leader: raft.leader(),
            raft_index: raft.commit_index(),
            raft_term: raft.term(),
            raft_applied_index: raft.applied_index(),
            errors: status_errors(member, raft.leader()),
            db_size_in_use: member.database().size_in_use_bytes() as i64,
            is_learner: member
                .membership()
                .table
                .get(member.membership().local_id)
                .is_some_and(|m| m.is_learner),
        }))
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.require_root_unconverted(&request)?;
        let database = self.member.database().clone();
        member::run_blocking(move || database.compact_all()).await?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.member.current_header()),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.require_root_unconverted(&request)?;
        // Hashing reads the whole store: off the async workers.
        let (hash, _, rev) = self.member.read_blocking(|store| store.hash_kv(0)).await?;
        Ok(Response::new(HashResponse {
            header: Some(self.member.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.require_root_unconverted(&request)?;
        let revision = request.into_inner().revision;
        let (hash, compact_revision, rev) = self.member.read_blocking(move |store| store.hash_kv(revision)).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.member.header(rev)),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a backup read from a database snapshot on a blocking thread,
    /// so neither Raft nor apply waits for it; a slow reader only slows it.
    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.require_root_unconverted(&request)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let engine = self.member.database().clone();
        tokio::task::spawn_blocking(move || {
            let result = crate::backup::write(&engine, |blob, remaining_bytes| {
                let chunk = SnapshotResponse {
                    header: None,
                    remaining_bytes,
                    blob,
                };
                tx.blocking_send(Ok(chunk)).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        self.require_root(&request)?;
        let target = request.into_inner().target_id;
        let member = &self.member;
        let raft = member.node().status();
        if !raft.is_leader() {
            return Err(Error::NotLeader.into());
        }
        match member.membership().table.get(target) {
            Some(m) if !m.is_learner => {}
            _ => return Err(Error::BadLeaderTransferee.into()),
        }
        member.node().transfer_leader(target)?;
        let deadline = tokio::time::Instant::now() + MOVE_LEADER_TIMEOUT;
        while raft.leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::LeaderTransferTimeout.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(member.current_header()),
        }))
    }
}
