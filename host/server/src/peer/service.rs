//! The receiving side of the peer protocol.

use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{PeerRefusal, MAX_SNAPSHOT_BYTES};
use crate::error::Error;
use crate::membership::Membership;
use crate::proto::cairnpb::learner_ready_response::Verdict;
use crate::proto::cairnpb::peer_server::Peer;
use crate::proto::cairnpb::{
    LearnerReadyRequest, LearnerReadyResponse, MemberSet, MembersRequest, RaftBatch, SnapshotAck, SnapshotChunk, StreamEnd,
};
use crate::raft::NodeHandle;

pub struct PeerService {
    node: NodeHandle,
    membership: Membership,
}

impl PeerService {
    pub fn new(node: NodeHandle, membership: Membership) -> Self {
        PeerService { node, membership }
    }

    fn check_sender(&self, cluster_id: u64, from: u64) -> Result<(), Status> {
        if self.membership.table.is_removed(from) {
            return Err(PeerRefusal::Removed.into());
        }
        if cluster_id != self.membership.cluster_id {
            return Err(PeerRefusal::ClusterMismatch {
                local: self.membership.cluster_id,
                remote: cluster_id,
            }
            .into());
        }
        Ok(())
    }

    fn deliver(&self, raw: &[u8]) -> Result<(), Status> {
        let message = Message::parse_from_bytes(raw).map_err(|e| PeerRefusal::Undecodable(e.to_string()))?;
        self.node.step(message).map_err(|_| PeerRefusal::Stopping.into())
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<StreamEnd>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await? {
            self.check_sender(batch.cluster_id, batch.from)?;
            for raw in &batch.messages {
                self.deliver(raw)?;
            }
        }
        Ok(Response::new(StreamEnd {}))
    }

    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let mut message = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            self.check_sender(chunk.cluster_id, chunk.from)?;
            if message.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(PeerRefusal::SnapshotTooLarge.into());
            }
            message.extend_from_slice(&chunk.data);
        }
        self.deliver(&message)?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MemberSet>, Status> {
        Ok(Response::new(self.membership.table.as_set()))
    }

    async fn learner_ready(&self, request: Request<LearnerReadyRequest>) -> Result<Response<LearnerReadyResponse>, Status> {
        let verdict = match self.node.check_learner_ready(request.into_inner().member_id).await {
            Ok(()) => Verdict::Ready,
            Err(Error::LearnerNotReady) => Verdict::NotReady,
            Err(Error::NotLeader) => Verdict::NotLeader,
            Err(e) => return Err(PeerRefusal::Unavailable(e).into()),
        };
        Ok(Response::new(LearnerReadyResponse { verdict: verdict as i32 }))
    }
}
