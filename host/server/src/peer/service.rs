//! The receiving side of the peer protocol.

use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::PeerRefusal;
use crate::error::Error;
use crate::membership::Membership;
use crate::proto::cairnpb::learner_ready_response::Verdict;
use crate::proto::cairnpb::peer_server::Peer;
use crate::proto::cairnpb::{
    LearnerReadyRequest, LearnerReadyResponse, MemberSet, MembersRequest, RaftBatch, SnapshotAck, SnapshotChunk, StreamEnd,
};
use crate::raft::snapshot::{self, DumpRef};
use crate::raft::NodeHandle;

pub struct PeerService {
    node: NodeHandle,
    membership: Membership,
    /// Where received snapshot dumps are staged.
    dumps: PathBuf,
}

impl PeerService {
    pub fn new(node: NodeHandle, membership: Membership, dumps: PathBuf) -> Self {
        PeerService { node, membership, dumps }
    }

    /// Writes the dump that follows a snapshot message to the staging file,
    /// refusing more bytes than the message names.
    async fn stage_dump(&self, reference: &DumpRef, chunks: &mut Streaming<SnapshotChunk>) -> Result<(), Status> {
        let io = |e: std::io::Error| Status::from(PeerRefusal::Staging(e.to_string()));
        tokio::fs::create_dir_all(&self.dumps).await.map_err(io)?;
        snapshot::remove_stale_received(&self.dumps, reference.index);
        let mut file = tokio::fs::File::create(snapshot::partial_path(&self.dumps, reference.index))
            .await
            .map_err(io)?;
        let mut received = 0u64;
        while let Some(chunk) = chunks.message().await? {
            self.check_sender(chunk.cluster_id, chunk.from)?;
            received += chunk.data.len() as u64;
            if received > reference.len {
                return Err(PeerRefusal::BadSnapshot("dump longer than its message names".into()).into());
            }
            file.write_all(&chunk.data).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let (dumps, reference) = (self.dumps.clone(), *reference);
        tokio::task::spawn_blocking(move || snapshot::accept_received(&dumps, &reference))
            .await
            .map_err(|e| PeerRefusal::Staging(e.to_string()))?
            .map_err(|e| PeerRefusal::BadSnapshot(format!("dump refused: {e}")).into())
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

    /// The first chunk is the Raft message, naming the dump; the dump
    /// follows. Raft sees the message only once the dump is staged and
    /// checked.
    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| PeerRefusal::BadSnapshot("empty stream".into()))?;
        self.check_sender(first.cluster_id, first.from)?;
        let message = Message::parse_from_bytes(&first.data).map_err(|e| PeerRefusal::Undecodable(e.to_string()))?;
        if message.get_msg_type() != MessageType::MsgSnapshot {
            return Err(PeerRefusal::BadSnapshot("not a snapshot message".into()).into());
        }
        let reference = DumpRef::decode(&message.get_snapshot().data).map_err(|e| PeerRefusal::BadSnapshot(e.to_string()))?;
        if reference.index != message.get_snapshot().get_metadata().index {
            return Err(PeerRefusal::BadSnapshot("it names the dump of another index".into()).into());
        }
        self.stage_dump(&reference, &mut chunks).await?;
        self.deliver(&first.data)?;
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
