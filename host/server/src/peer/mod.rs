//! Member-to-member communication over the peer URLs: Raft messages in
//! batches on one stream per peer, snapshots (the Raft message, then its
//! dump file in chunks, staged to disk by the receiver), the member list
//! for members joining a running cluster, lease requests forwarded to
//! the leader, and state hashes for the corruption check.

mod activity;
mod hash;
mod lease;
mod refusal;
mod service;
mod transport;

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::proto::cairnpb::learner_ready_response::Verdict;
use crate::proto::cairnpb::{peer_client::PeerClient, LearnerReadyRequest};
use crate::tls::{Dial, PeerDialer};

pub use activity::PeerActivity;
pub use hash::{HashSource, StatePeerService};
pub use lease::{LeaseAuthority, LeasePeerService};
pub use refusal::PeerRefusal;
pub use service::PeerService;
pub use transport::Transport;

/// Largest gRPC message a member accepts from a peer: a batch of Raft
/// messages (entries are capped at 1 MiB per message by Raft) or a snapshot
/// chunk.
pub const MAX_PEER_MESSAGE_BYTES: usize = 16 << 20;
/// What a member answers the traffic of a removed member with.
pub(crate) const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// Why a peer could not be connected to.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A channel to a peer that notices a dead connection within seconds, so
/// a crashed or cut-off member is reconnected to rather than written into a
/// half-open socket forever. `https://` URLs go through TLS.
pub async fn connect(dialer: &PeerDialer, url: &str) -> Result<Channel, ConnectError> {
    let endpoint = |uri: String| {
        Ok::<_, tonic::transport::Error>(
            Endpoint::from_shared(uri)?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true),
        )
    };
    Ok(match dialer.dial(url)? {
        Dial::Plain(uri) => endpoint(uri)?.connect().await?,
        Dial::Tls(uri, connector) => endpoint(uri)?.connect_with_connector(connector).await?,
    })
}

/// Asks the leader, at `leader_url`, whether learner `member_id` may be
/// promoted, as etcd forwards a promotion to its leader.
pub async fn learner_ready_at_leader(dialer: &PeerDialer, leader_url: &str, member_id: u64) -> Result<(), Error> {
    let channel = connect(dialer, leader_url).await.map_err(|_| Error::NoLeader)?;
    let mut client = PeerClient::new(channel);
    let answer = tokio::time::timeout(Duration::from_secs(5), client.learner_ready(LearnerReadyRequest { member_id }))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|_| Error::NoLeader)?
        .into_inner();
    match Verdict::try_from(answer.verdict) {
        Ok(Verdict::Ready) => Ok(()),
        Ok(Verdict::NotReady) => Err(Error::LearnerNotReady),
        // Leadership moved meanwhile; the client may retry.
        _ => Err(Error::NotLeader),
    }
}
