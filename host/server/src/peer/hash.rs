//! The answering side of the corruption check: a member's hash of its
//! key-value state at the revision the leader names.

use tonic::{Request, Response, Status};

use super::PeerRefusal;
use crate::error::Result;
use crate::proto::cairnpb::state_peer_server::StatePeer;
use crate::proto::etcdserverpb::{HashKvRequest, HashKvResponse};

/// What hashes the state: the member, which reads off the async workers.
#[tonic::async_trait]
pub trait HashSource: Send + Sync + 'static {
    /// The hash at `revision` (0: the current one), with a header naming
    /// this member and its current revision.
    async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse>;
}

pub struct StatePeerService<S> {
    source: S,
}

impl<S: HashSource> StatePeerService<S> {
    pub fn new(source: S) -> Self {
        StatePeerService { source }
    }
}

#[tonic::async_trait]
impl<S: HashSource> StatePeer for StatePeerService<S> {
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        match self.source.hash_kv(revision).await {
            Ok(resp) => Ok(Response::new(resp)),
            // A compacted or future revision is the usual case of a member
            // behind or ahead; the asking member logs the reason.
            Err(e) => Err(PeerRefusal::Unavailable(e).into()),
        }
    }
}
