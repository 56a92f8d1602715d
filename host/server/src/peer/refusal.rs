//! The single mapping from what a member refuses a peer to the gRPC status
//! the peer sees: the peer edge's counterpart of `api::grpc_error`.

use tonic::Status;

use crate::error::Error;

/// Why a peer's request was not served.
#[derive(Debug)]
pub enum PeerRefusal {
    /// The sender was removed from the cluster; it learns so from the text.
    Removed,
    ClusterMismatch {
        local: u64,
        remote: u64,
    },
    Undecodable(String),
    Stopping,
    /// A snapshot stream that does not hold what its Raft message names.
    BadSnapshot(String),
    /// Writing a received snapshot to the staging file failed here.
    Staging(String),
    /// This member could not answer now; the peer may retry.
    Unavailable(Error),
}

impl From<PeerRefusal> for Status {
    fn from(refusal: PeerRefusal) -> Status {
        match refusal {
            PeerRefusal::Removed => Status::permission_denied(super::REMOVED_MESSAGE),
            PeerRefusal::ClusterMismatch { local, remote } => {
                Status::failed_precondition(format!("cluster ID mismatch: local {local:x}, remote {remote:x}"))
            }
            PeerRefusal::Undecodable(e) => Status::invalid_argument(format!("undecodable raft message: {e}")),
            PeerRefusal::Stopping => Status::unavailable("member is stopping"),
            PeerRefusal::BadSnapshot(why) => Status::invalid_argument(format!("snapshot refused: {why}")),
            PeerRefusal::Staging(e) => Status::internal(format!("staging snapshot: {e}")),
            PeerRefusal::Unavailable(e) => Status::unavailable(e.to_string()),
        }
    }
}
